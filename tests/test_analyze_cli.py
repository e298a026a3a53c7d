"""`market-agent analyze`: inputs, outputs, exit codes, as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from market_agent.errors import ExitCode
from tests.cli_helpers import run_cli
from tests.conftest import EXAMPLES, ROOT

REQUIRED_FIELDS = {
    "id", "created_at", "source", "group_key", "status", "alerts", "issue_detected",
    "severity", "issue_type", "description", "recommended_actions", "proposed_action",
    "confidence", "requires_immediate_action", "analyzer", "model", "fallback_reason",
    "usage", "context",
}  # fmt: skip
ALERT_FIELDS = {"alertname", "status", "severity", "fingerprint", "starts_at", "summary"}
EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.json"))


def notification_text(name: str = "predictor-down.json") -> str:
    return (EXAMPLES / name).read_text()


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_every_example_analyses_cleanly_with_the_documented_schema(name: str) -> None:
    result = run_cli("--no-audit", "analyze", "--json", str(EXAMPLES / name))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    (row,) = result.json_lines()
    assert row.keys() >= REQUIRED_FIELDS
    assert row["alerts"] and row["alerts"][0].keys() >= ALERT_FIELDS
    assert row["created_at"].endswith("Z") or row["created_at"].endswith("+00:00")
    assert row["source"] == str(EXAMPLES / name)
    assert 0 <= row["confidence"] <= 1
    assert row["analyzer"] == "rules"


@pytest.mark.parametrize(
    ("name", "severity", "issue_type", "action"),
    [
        ("predictor-down.json", "critical", "availability", "restart"),
        ("high-latency.json", None, "performance", "none"),
        ("high-error-rate.json", None, "errors", None),
        ("stale-market-data.json", None, "data", "none"),
        ("accuracy-drop.json", None, "data", "none"),
        ("memory-pressure.json", None, "resource", "none"),
        ("resolved.json", "info", None, "none"),
        ("other-service.json", None, None, None),
    ],
)
def test_examples_are_analysed_sensibly(name, severity, issue_type, action) -> None:
    (row,) = run_cli("--no-audit", "analyze", "--json", str(EXAMPLES / name)).json_lines()
    for field, expected in (("severity", severity), ("issue_type", issue_type)):
        if expected is not None:
            assert row[field] == expected
    if action is not None:
        assert row["proposed_action"] == action
    if name == "other-service.json":
        assert row["proposed_action"] != "restart"
    if name == "resolved.json":
        assert row["issue_detected"] is False


def test_json_lines_file_gives_one_analysis_per_line() -> None:
    result = run_cli("--no-audit", "analyze", "--json", str(EXAMPLES / "stream.jsonl"))
    assert result.exit_code == 0
    lines = (EXAMPLES / "stream.jsonl").read_text().strip().splitlines()
    assert len(result.json_lines()) == len(lines)


def test_api_v2_alert_list_is_one_group() -> None:
    result = run_cli("--no-audit", "analyze", "--json", str(EXAMPLES / "api-v2-alerts.json"))
    (row,) = result.json_lines()
    assert len(row["alerts"]) == len(json.loads(notification_text("api-v2-alerts.json")))


def test_stdin_with_dash_and_implicit() -> None:
    body = notification_text().encode()
    for args in (("analyze", "--json", "-"), ("analyze", "--json")):
        result = run_cli("--no-audit", *args, stdin=body)
        assert result.exit_code == 0, result.stderr
        assert result.json_lines()[0]["source"] == "-"


def test_human_output_is_a_panel() -> None:
    result = run_cli("--no-audit", "analyze", str(EXAMPLES / "predictor-down.json"))
    assert result.exit_code == 0
    assert "CRITICAL" in result.stdout and "PredictorDown" in result.stdout
    assert "Proposed action: restart" in result.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty input"),
        (b"{not json", "not valid JSON"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8", "not UTF-8"),
        (b'{"status": "firing"}', "expected an Alertmanager webhook notification"),
        (b'{"status": "firing", "alerts": []}', "alerts must not be empty"),
        (b'{"status": "firing", "alerts": [{"labels": {"a": 1}}]}', "alerts[0].labels.a"),
        (b'{"status": "maybe", "alerts": [{"labels": {}}]}', "status must be one of: firing"),
        (b"[]", "empty alert list"),
        (b'"just a string"', "got a string"),
        (b"[1, 2]", "[0]: expected an object, got a number"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
    ids=[
        "empty", "not-json", "binary", "no-alerts", "empty-alerts", "label-type",
        "bad-status", "empty-list", "string", "list-of-numbers", "deep-nesting",
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, content: bytes, expected: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    result = run_cli("--no-audit", "analyze", "--json", str(bad))
    assert result.exit_code == ExitCode.USAGE
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {bad}")
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_and_directory(tmp_path: Path) -> None:
    result = run_cli("--no-audit", "analyze", str(tmp_path / "nope.json"), str(tmp_path))
    assert result.exit_code == ExitCode.USAGE
    assert "nope.json: no such file" in result.stderr
    assert "is a directory" in result.stderr


def test_huge_single_document_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    huge = tmp_path / "huge.json"
    with huge.open("wb") as handle:  # 200 MB, sparse: cheap to create
        handle.write(b'{"alerts": [\n')
        handle.truncate(200 * 1024 * 1024)
    result = run_cli("--no-audit", "analyze", str(huge))
    assert result.exit_code == ExitCode.USAGE
    assert "larger than the 32 MiB limit" in result.stderr


def test_valid_inputs_are_still_analysed_beside_bad_ones(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.jsonl"
    good = json.dumps(json.loads(notification_text()))
    mixed.write_text(f'{good}\nnot json\n{{"alerts": 3}}\n{good}\n')
    result = run_cli(
        "--no-audit", "analyze", "--json", str(mixed), str(tmp_path / "missing.json"),
        str(EXAMPLES / "high-latency.json"),
    )  # fmt: skip
    assert result.exit_code == ExitCode.USAGE
    assert len(result.json_lines()) == 3
    errors = result.stderr.splitlines()
    assert len(errors) == 3
    assert f"{mixed}: line 2: not valid JSON" in errors[0]
    assert f"{mixed}: line 3: status is required" in errors[1]


@pytest.mark.parametrize(
    ("threshold", "code"), [("critical", 1), ("high", 1), ("CRITICAL", 1), ("info", 1)]
)
def test_fail_on_threshold_met_exits_1(threshold: str, code: int) -> None:
    result = run_cli(
        "--no-audit", "analyze", "--json", "--fail-on", threshold,
        str(EXAMPLES / "predictor-down.json"),
    )  # fmt: skip
    assert result.exit_code == code
    assert len(result.json_lines()) == 1  # output is still printed


def test_fail_on_not_met_exits_0_and_input_error_wins() -> None:
    resolved = str(EXAMPLES / "resolved.json")
    assert run_cli("--no-audit", "analyze", "--fail-on", "low", resolved).exit_code == 0
    both = run_cli(
        "--no-audit", "analyze", "--fail-on", "info", str(EXAMPLES / "predictor-down.json"),
        "/nonexistent.json",
    )  # fmt: skip
    assert both.exit_code == ExitCode.USAGE


def test_bad_fail_on_value_is_a_usage_error() -> None:
    result = run_cli("analyze", "--fail-on", "catastrophic", str(EXAMPLES / "resolved.json"))
    assert result.exit_code == ExitCode.USAGE
    assert "catastrophic" in result.stderr


def test_unknown_command_and_option_are_usage_errors() -> None:
    assert run_cli("frobnicate").exit_code == ExitCode.USAGE
    assert run_cli("analyze", "--frob").exit_code == ExitCode.USAGE


def test_audit_log_records_notification_and_analysis(audit_path: Path) -> None:
    result = run_cli("analyze", "--json", str(EXAMPLES / "predictor-down.json"))
    assert result.exit_code == 0
    records = [json.loads(line) for line in audit_path.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["notification", "analysis"]
    assert records[1]["notification_id"] == records[0]["id"]
    assert records[1]["id"] == result.json_lines()[0]["id"]
    assert oct(audit_path.stat().st_mode & 0o777) == "0o600"


def test_audit_log_flag_and_no_audit(tmp_path: Path, audit_path: Path) -> None:
    custom = tmp_path / "custom" / "log.jsonl"
    run_cli("--audit-log", str(custom), "analyze", str(EXAMPLES / "resolved.json"))
    assert custom.exists() and not audit_path.exists()
    run_cli("--no-audit", "analyze", str(EXAMPLES / "resolved.json"))
    assert not audit_path.exists()


def test_unwritable_audit_log_exits_3_before_analysing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli(
        "--audit-log", str(blocker / "audit.jsonl"), "analyze", "--json",
        str(EXAMPLES / "predictor-down.json"),
    )  # fmt: skip
    assert result.exit_code == ExitCode.AUDIT
    assert result.stdout == ""
    assert "audit log" in result.stderr and "--no-audit" in result.stderr
    assert result.stderr.count("\n") == 1


def test_debug_shows_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ("--audit-log", str(blocker / "a.jsonl"), "analyze", str(EXAMPLES / "resolved.json"))
    assert "Traceback" in run_cli("--debug", *args).stderr
    assert "Traceback" not in run_cli(*args).stderr


def test_internal_errors_exit_70_without_traceback(monkeypatch) -> None:
    import market_agent.analysis.analyzer as analyzer

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(analyzer.AnalysisService, "analyze", boom)
    result = run_cli("--no-audit", "analyze", str(EXAMPLES / "resolved.json"))
    assert result.exit_code == ExitCode.INTERNAL
    assert "internal error: RuntimeError: kaboom" in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = run_cli("--version")
    assert result.exit_code == 0 and result.stdout.startswith("market-agent ")


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}


def test_help_and_no_llm_do_not_import_langchain(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from market_agent.cli import run\n"
        "code = run(sys.argv[1:])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'langchain_core', 'langchain_openai', 'openai', 'uvicorn'})\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**subprocess_env(tmp_path), "OPENAI_API_KEY": "sk-x"}
    for args in (["--help"], ["analyze", "--help"], ["--no-audit", "analyze", "--no-llm",
                 str(EXAMPLES / "predictor-down.json")]):  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env,
            cwd=ROOT, check=False,
        )  # fmt: skip
        assert "HEAVY []" in out.stdout, (args, out.stdout[-500:], out.stderr[-500:])


def test_no_audit_analyze_neither_imports_the_audit_log_nor_parses_rules_twice(
    tmp_path: Path,
) -> None:
    """Start-up is a promise (README, Performance): --no-audit pays nothing for the audit
    package, and rules.toml is parsed once for the rule table and the severity map."""
    probe = (
        "import sys, tomllib\n"
        "parses = []\n"
        "loads = tomllib.loads\n"
        "tomllib.loads = lambda text, **kw: parses.append(len(text)) or loads(text, **kw)\n"
        "from market_agent.cli import run\n"
        "code = run(sys.argv[1:])\n"
        "audit = sorted(m for m in sys.modules if m.startswith('market_agent.audit'))\n"
        "print('AUDIT', audit, 'RULES_PARSES', sum(n > 10000 for n in parses))\n"
    )
    args = ["--no-audit", "analyze", "--no-llm", "--json", str(EXAMPLES / "predictor-down.json")]
    out = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True,
        env=subprocess_env(tmp_path), cwd=ROOT, check=False,
    )  # fmt: skip
    assert "AUDIT [] RULES_PARSES 1" in out.stdout, (out.stdout[-500:], out.stderr[-500:])


def test_python_dash_m_and_console_script(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "market_agent", "--no-audit", "analyze", "--json",
         str(EXAMPLES / "predictor-down.json")],
        capture_output=True, text=True, env=subprocess_env(tmp_path), check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["proposed_action"] == "restart"
    bad = subprocess.run(
        [sys.executable, "-m", "market_agent", "--no-audit", "analyze", "/nonexistent"],
        capture_output=True, text=True, env=subprocess_env(tmp_path), check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip() == "error: /nonexistent: no such file"


def test_ctrl_c_exits_130(monkeypatch) -> None:
    import market_agent.analysis.analyzer as analyzer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(analyzer.AnalysisService, "analyze", interrupted)
    result = run_cli("--no-audit", "analyze", str(EXAMPLES / "resolved.json"))
    assert result.exit_code == ExitCode.INTERRUPTED
    assert result.stderr == "error: interrupted\n"


def test_console_entry_skips_optional_imports_but_httpx_works(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from market_agent import cli\n"
        "cli._skip_unused_optional_imports()\n"
        "import httpx\n"
        "assert httpx.Client(timeout=1).timeout.read == 1\n"
        "print('trio' in sys.modules and sys.modules['trio'] is not None)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False,
        env=subprocess_env(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("preset", "expected"), [(None, "__all__"), ("", "")])
def test_console_entry_turns_pydantic_plugins_off_unless_told_otherwise(
    tmp_path: Path, preset: str | None, expected: str
) -> None:
    probe = (
        "import os\n"
        "from market_agent import cli\n"
        "cli._skip_unused_optional_imports()\n"
        "from pydantic.plugin._loader import get_plugins\n"
        "print(repr(os.environ['PYDANTIC_DISABLE_PLUGINS']), len(list(get_plugins())))\n"
    )
    env = subprocess_env(tmp_path)
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    if preset is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = preset
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == repr(expected)
