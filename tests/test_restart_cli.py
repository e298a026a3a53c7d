"""`market-agent restart`: approval, dry run, JSON and each documented exit code."""

from __future__ import annotations

import io
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from tests.cli_helpers import Result, run_cli

TOUCH = "import sys; open(sys.argv[1], 'a').write('x')"
PREDICTOR = "http://127.0.0.1:18999"


def config(tmp_path: Path, action: str, extra: str = "") -> str:
    path = tmp_path / "market-agent.toml"
    path.write_text(
        f'[predictor]\nurl = "{PREDICTOR}"\ntimeout = 0.5\n'
        f'[actions]\npause_file = "{tmp_path / "paused"}"\n{extra}\n'
        f"[actions.restart]\n{action}\n"
    )
    return str(path)


def touch(marker: Path, *, verify: bool = False) -> str:
    argv = json.dumps([sys.executable, "-c", TOUCH, str(marker)])
    return f"argv = {argv}\nverify_health = {'true' if verify else 'false'}\nverify_timeout = 1"


def audit_records(audit_path: Path) -> list[dict[str, Any]]:
    if not audit_path.exists():
        return []
    return [json.loads(line) for line in audit_path.read_text().splitlines()]


def test_unconfigured_action_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("restart", "--yes")
    assert result.exit_code == 2
    assert "[actions.restart]" in result.stderr


def test_dry_run_shows_the_exact_command_and_runs_nothing(tmp_path: Path, audit_path: Path) -> None:
    marker = tmp_path / "ran"
    cfg = config(tmp_path, touch(marker))
    result = run_cli("--config", cfg, "restart", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["outcome"] == "dry_run"
    assert data["plan"]["steps"][0]["argv"] == [sys.executable, "-c", TOUCH, str(marker)]
    assert data["verification"] == {"health": False, "query": None, "timeout_s": 1.0}
    assert all(g["passed"] for g in data["guards"])
    assert not marker.exists()
    assert audit_records(audit_path) == []
    human = run_cli("--config", cfg, "restart", "--dry-run")
    assert human.exit_code == 0
    assert str(marker) in human.stdout and "circuit_breaker" in human.stdout


def long_marker(tmp_path: Path) -> Path:
    """A path wider than a terminal, as pytest-xdist's temporary directories can be."""
    return tmp_path / ("a-long-directory-name-" * 5) / "ran"


def test_the_dry_run_shows_a_long_command_whole(tmp_path: Path) -> None:
    marker = long_marker(tmp_path)
    argv = [sys.executable, "-c", TOUCH, str(marker)]
    result = run_cli("--config", config(tmp_path, touch(marker)), "restart", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert f"  $ {shlex.join(argv)}\n" in result.stdout  # one line, nothing cut
    assert all(line == line.rstrip() for line in result.stdout.splitlines())
    assert not marker.exists()


def test_dry_run_that_would_be_blocked_exits_5(tmp_path: Path) -> None:
    cfg = config(tmp_path, touch(tmp_path / "ran"), "enabled = false")
    result = run_cli("--config", cfg, "restart", "--dry-run", "--json")
    assert result.exit_code == 5
    blocked = [g["name"] for g in json.loads(result.stdout)["guards"] if not g["passed"]]
    assert blocked == ["kill_switch"]


def test_without_a_terminal_and_without_yes_it_refuses(tmp_path: Path, audit_path: Path) -> None:
    marker = tmp_path / "ran"
    result = run_cli("--config", config(tmp_path, touch(marker)), "restart", "--json")
    assert result.exit_code == 5
    assert json.loads(result.stdout)["outcome"] == "blocked"
    assert not marker.exists()
    guards = [r.get("guard") for r in audit_records(audit_path) if r["step"] == "guard"]
    assert guards == ["approval"]


def test_yes_runs_and_verifies(tmp_path: Path, audit_path: Path) -> None:
    marker = tmp_path / "ran"
    cfg = config(tmp_path, touch(marker))
    result = run_cli("--config", cfg, "restart", "--yes", "--reason", "stuck", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["outcome"] == "verified" and data["exit_code"] == 0
    assert marker.exists()
    assert [r["step"] for r in audit_records(audit_path)] == [
        "execute",
        "execute",
        "verify",
        "result",
    ]
    human = run_cli("--config", cfg, "restart", "--yes")
    assert human.exit_code == 0
    assert "restart: verified" in human.stdout


def health_callback(marker: Path) -> Any:
    """/health is unhealthy until `marker` exists (the rollback creates it)."""

    def answer(request: httpx.Request) -> httpx.Response:
        if marker.exists():
            return httpx.Response(200, json={"status": "healthy"})
        return httpx.Response(503, json={"status": "unhealthy", "reasons": ["model down"]})

    return answer


def test_failed_verification_rolled_back_exits_6(tmp_path: Path, httpx_mock: HTTPXMock) -> None:
    restored = tmp_path / "restored"
    httpx_mock.add_callback(health_callback(restored), url=f"{PREDICTOR}/health", is_reusable=True)
    rollback = json.dumps([sys.executable, "-c", TOUCH, str(restored)])
    action = (
        touch(tmp_path / "ran", verify=True) + f"\n[actions.restart.rollback]\nargv = {rollback}"
    )
    result = run_cli("--config", config(tmp_path, action), "restart", "--yes", "--json")
    assert result.exit_code == 6, result.stderr
    data = json.loads(result.stdout)
    assert data["outcome"] == "rolled_back"
    assert [e["reason"] for e in data["escalations"]] == ["rolled_back"]
    failed = next(s for s in data["steps"] if s["step"] == "verify")
    assert "model down" in failed["detail"]


def test_failed_without_recovery_exits_7(tmp_path: Path, httpx_mock: HTTPXMock) -> None:
    never = tmp_path / "never"
    httpx_mock.add_callback(health_callback(never), url=f"{PREDICTOR}/health", is_reusable=True)
    result = run_cli(
        "--config", config(tmp_path, touch(tmp_path / "ran", verify=True)), "restart", "--yes"
    )
    assert result.exit_code == 7
    assert "restart: failed" in result.stdout


def test_circuit_breaker_then_force(tmp_path: Path, audit_path: Path) -> None:
    cfg = config(tmp_path, touch(tmp_path / "ran"), "max_executions = 1")
    assert run_cli("--config", cfg, "restart", "--yes").exit_code == 0
    blocked = run_cli("--config", cfg, "restart", "--yes", "--json")
    assert blocked.exit_code == 5
    assert "circuit breaker" in blocked.stdout or "circuit_breaker" in blocked.stdout
    forced = run_cli("--config", cfg, "restart", "--yes", "--force", "--json")
    assert forced.exit_code == 0
    assert json.loads(forced.stdout)["forced"] is True
    overridden = [r for r in audit_records(audit_path) if r["outcome"] == "overridden"]
    assert [r["guard"] for r in overridden] == ["circuit_breaker"]


def test_restart_needs_the_audit_log(tmp_path: Path) -> None:
    cfg = config(tmp_path, touch(tmp_path / "ran"))
    result = run_cli("--config", cfg, "--no-audit", "restart", "--yes")
    assert result.exit_code == 3
    assert not (tmp_path / "ran").exists()


class _Terminal(io.TextIOWrapper):
    def isatty(self) -> bool:
        return True


def run_on_terminal(answer: str, *args: str) -> Result:
    from market_agent.cli import run

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = _Terminal(io.BytesIO(answer.encode())), out, err
    try:
        code = run(list(args))
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return Result(code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize(("answer", "code"), [("n\n", 5), ("y\n", 0)])
def test_terminal_confirmation(tmp_path: Path, answer: str, code: int) -> None:
    marker = long_marker(tmp_path)
    marker.parent.mkdir()
    argv = [sys.executable, "-c", TOUCH, str(marker)]
    result = run_on_terminal(answer, "--config", config(tmp_path, touch(marker)), "restart")
    assert result.exit_code == code, result.stderr
    shown, asked = result.stderr.index(shlex.join(argv)), result.stderr.index("Run it?")
    assert shown < asked  # the exact command, whole, before asking
    assert marker.exists() == (code == 0)


def test_restart_first_closes_a_run_a_killed_process_left_open(
    tmp_path: Path, audit_path: Path
) -> None:
    from market_agent.audit import AuditLog

    started = {"action_id": "cut", "action": "restart", "step": "execute", "outcome": "started"}
    AuditLog(audit_path, fsync=False).append("action", {**started, "trigger": "manual"})
    cfg = config(tmp_path, touch(tmp_path / "ran"), "max_executions = 1")
    result = run_cli("--config", cfg, "restart", "--yes", "--json")
    assert result.exit_code == 5, result.stderr  # the interrupted run counts: breaker
    results = [r for r in audit_records(audit_path) if r.get("step") == "result"]
    assert [(r["action_id"], r["outcome"]) for r in results] == [
        ("cut", "interrupted"),
        (json.loads(result.stdout)["action_id"], "blocked"),
    ]
    assert [r["reason"] for r in audit_records(audit_path) if r["kind"] == "escalation"] == [
        "action_interrupted"
    ]
    assert json.loads(result.stdout)["outcome"] == "blocked"


def test_a_failed_command_says_why_in_restart_and_in_history_show(tmp_path: Path) -> None:
    """The command's own last words (`curl: (7) ...`) were only in `--json`."""
    said = "curl: (7) Failed to connect to 127.0.0.1 port 18100"
    script = (
        f"import sys; print('trying', flush=True); print({said!r}, file=sys.stderr); sys.exit(7)"
    )
    action = f"argv = {json.dumps([sys.executable, '-c', script])}\nverify_health = false"
    result = run_cli("--config", config(tmp_path, action), "restart", "--yes")
    assert result.exit_code == 7
    assert f"exit 7: {said}" in result.stdout
    (record,) = run_cli("history", "--kind", "action", "--limit", "1", "--json").json_lines()
    shown = run_cli("history", "show", record["action_id"])
    assert f"exit 7: {said}" in shown.stdout
