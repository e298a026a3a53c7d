"""Backends: argv only, no shell, placeholders from a fixed set with checked values."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from pytest_httpx import HTTPXMock

from market_agent.actions.backends import (
    CommandStep,
    UnsafeParameter,
    build_plan,
    run_command,
    run_plan,
    substitute,
)
from market_agent.settings import BackendSpec

INJECTIONS = [
    "; rm -rf /",
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "a\ntouch /tmp/pwned",
    "a && b",
    "x|y",
    "a'b",
    '"quoted"',
    "-rf",
    "--output=/etc/passwd",
    "",
    "é",
    "a" * 300,
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_unsafe_values_are_refused(value: str) -> None:
    with pytest.raises(UnsafeParameter, match="instance"):
        substitute("--target={instance}", {"instance": value})


@pytest.mark.parametrize("value", ["127.0.0.1:8000", "market-predictor", "ns/pod-1", "a@b_c.d"])
def test_safe_values_are_substituted(value: str) -> None:
    assert substitute("--target={instance}", {"instance": value}) == f"--target={value}"


def test_missing_placeholder_value_is_refused() -> None:
    with pytest.raises(UnsafeParameter, match=r"no value for \{service\}"):
        substitute("{service}", {})


def spec(**fields: object) -> BackendSpec:
    return BackendSpec.model_validate(fields)


def test_backend_plans_are_exact_argv() -> None:
    params = {"service": "market-predictor", "namespace": "prod"}
    systemd = build_plan(spec(backend="systemd", unit="{service}.service", user=True), params)
    assert systemd.describe() == ["systemctl --user restart -- market-predictor.service"]
    docker = build_plan(spec(backend="docker", container="{service}"), params)
    assert docker.describe() == ["docker restart -- market-predictor"]
    kube = build_plan(
        spec(backend="kubernetes", deployment="{service}", namespace="{namespace}", timeout=90),
        params,
    )
    assert [s.argv for s in kube.steps] == [  # type: ignore[union-attr]
        ("kubectl", "rollout", "restart", "deployment/market-predictor", "-n", "prod"),
        (
            "kubectl",
            "rollout",
            "status",
            "deployment/market-predictor",
            "-n",
            "prod",
            "--timeout=90s",
        ),
    ]
    command = build_plan(spec(argv=["/bin/restart", "--unit={service}", "literal"]), params)
    assert command.describe() == ["/bin/restart --unit=market-predictor literal"]


def test_arguments_are_never_interpreted_by_a_shell(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    seen = tmp_path / "argv.json"
    literal = [f"$(touch {pwned})", f"`touch {pwned}`", f"; touch {pwned}", "a\nb"]
    argv = (
        sys.executable,
        "-c",
        "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))",
        str(seen),
        *literal,
    )
    result = run_command(CommandStep(argv), timeout=10)
    assert result.ok, result
    assert json.loads(seen.read_text()) == literal
    assert not pwned.exists()


def test_commands_get_a_minimal_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    out = tmp_path / "env.json"
    code = "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"
    step = CommandStep((sys.executable, "-c", code, str(out)), env={"EXTRA": "1"})
    assert run_command(step, timeout=10).ok
    env = json.loads(out.read_text())
    assert "OPENAI_API_KEY" not in env
    assert env["EXTRA"] == "1"
    assert env["PATH"] == os.environ["PATH"]


def test_failure_exit_code_and_output_tail_are_reported() -> None:
    code = "import sys; print('token=abcdef123456 broke'); sys.exit(4)"
    result = run_command(CommandStep((sys.executable, "-c", code)), timeout=10)
    assert not result.ok
    assert result.returncode == 4
    assert result.detail == "exit 4"
    assert "broke" in result.output
    assert "abcdef123456" not in result.output  # redacted


def test_missing_program_is_a_failure_not_a_crash() -> None:
    result = run_command(CommandStep(("/nonexistent/restart-it",)), timeout=5)
    assert not result.ok
    assert "cannot run" in result.detail


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    # The command starts a grandchild that would outlive a plain kill of the child.
    code = (
        "import subprocess, sys, time;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"open({str(child_pid)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    started = time.monotonic()
    result = run_command(CommandStep((sys.executable, "-c", code)), timeout=1.0)
    assert not result.ok
    assert "timed out" in result.detail
    assert time.monotonic() - started < 30
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_plan_timeout_covers_all_steps() -> None:
    sleep = (sys.executable, "-c", "import time; time.sleep(0.4)")
    plan = build_plan(spec(argv=list(sleep), timeout=0.6), {})
    plan = type(plan)(plan.backend, (CommandStep(sleep), CommandStep(sleep)), plan.timeout)
    result = run_plan(plan)
    assert not result.ok
    assert "timed out" in result.detail


def test_http_backend_posts_json(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url="https://ops.example/restart", method="POST", status_code=202)
    plan = build_plan(
        spec(backend="http", url="https://ops.example/restart", bearer_token="s3cret-token"),
        {"service": "market-predictor"},
    )
    assert plan.describe() == ["POST https://ops.example/restart"]
    result = run_plan(plan, extra_body={"action": "restart", "action_id": "abc"})
    assert result.ok
    request = httpx_mock.get_request()
    assert request is not None
    assert request.headers["Authorization"] == "Bearer s3cret-token"
    assert json.loads(request.content) == {
        "action": "restart",
        "action_id": "abc",
        "params": {"service": "market-predictor"},
    }


def test_http_backend_failure(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url="https://ops.example/restart", status_code=500, text="boom")
    result = run_plan(build_plan(spec(backend="http", url="https://ops.example/restart"), {}))
    assert not result.ok
    assert result.detail == "HTTP 500"


def test_http_backend_refuses_unsafe_params() -> None:
    with pytest.raises(UnsafeParameter):
        build_plan(spec(backend="http", url="https://ops.example/r"), {"instance": "$(id)"})
