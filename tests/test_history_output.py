"""`history` output contracts: what `show` says about an action, manual actions in
`stats`, a missing or empty log, the short-id message, and untrusted record text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from market_agent.audit import AuditLog
from market_agent.commands.history_view import Column, aligned, clean, clip
from tests.cli_helpers import run_cli
from tests.conftest import ROOT
from tests.terminal import run_in_terminal

SCREENS_LOG = ROOT / "tests" / "screens" / "history-audit.jsonl"
VERIFIED = "5d1e2f"


def test_show_gives_reason_trigger_and_command(audit_path: Path) -> None:
    result = run_cli("--audit-log", str(SCREENS_LOG), "history", "show", VERIFIED)
    assert result.exit_code == 0, result.stderr
    facts = dict(line.split("\t", 1) for line in result.stdout.split("\n\n")[0].splitlines())
    assert facts["id"] == VERIFIED + "7a90b4c3d2e1f0a9b8c7d6e5f4"
    assert (facts["trigger"], facts["reason"], facts["outcome"]) == (
        "manual",
        "second try",
        "verified",
    )
    assert (facts["backend"], facts["command"], facts["ran"]) == ("command", "true", "true: exit 0")
    steps = [line.split("\t") for line in result.stdout.split("\n\n")[1].splitlines()]
    assert [(s[1], s[2], s[3]) for s in steps] == [  # what it showed before stays
        ("action", "execute", "started"),
        ("action", "execute", "succeeded"),
        ("action", "verify", "passed"),
        ("action", "result", "verified"),
    ]


def test_show_on_a_terminal_keeps_the_chain_table() -> None:
    shown = run_in_terminal(
        ["--audit-log", str(SCREENS_LOG), "history", "show", "9b07c4"],
        columns=80,
        env={"TZ": "UTC"},
    )
    text = shown.text
    assert shown.exit_status == 0
    for expected in ("trigger  manual", "reason   stuck after the 09:00 deploy", "command  false"):
        assert expected in text
    assert "ran      false: exit 1" in text
    assert "escalation" in text and "action_failed" in text  # the chain's escalation


def test_stats_counts_manual_actions() -> None:
    result = run_cli("--audit-log", str(SCREENS_LOG), "history", "stats", "--json")
    assert result.exit_code == 0
    [row] = result.json_lines()
    assert (row["alertname"], row["action"], row["attempts"], row["successes"]) == (
        None,
        "restart",
        2,
        1,
    )
    assert row["recent"] == [False, True]
    table = run_cli("--audit-log", str(SCREENS_LOG), "history", "stats")
    assert table.stdout.startswith("(manual)\trestart\t2\t1\t50%")


def test_stats_on_an_empty_log_says_so(audit_path: Path) -> None:
    AuditLog(audit_path, fsync=False).append("notification", {"alertnames": ["X"]})
    result = run_cli("history", "stats")
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == "note: no actions recorded yet\n"


@pytest.mark.parametrize("args", [["history"], ["history", "stats"], ["history", "--json"]])
def test_a_missing_log_is_a_one_line_note(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "typo" / "audit.jsonl"
    result = run_cli("--audit-log", str(missing), *args)
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == f"note: no audit log at {missing} yet\n"


def test_verify_on_a_missing_log_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "typo.jsonl"
    result = run_cli("--audit-log", str(missing), "history", "verify")
    assert result.exit_code == 3
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert str(missing) in line and line.startswith("error: ")


def test_too_short_an_id_says_the_minimum_and_gives_an_example(audit_path: Path) -> None:
    AuditLog(audit_path, fsync=False).append("action", {"action_id": "3f2a9c0d", "step": "x"})
    result = run_cli("history", "show", "3f2a")
    assert result.exit_code == 2
    assert "at least 6 characters" in result.stderr
    assert "history show 3f2a9c" in result.stderr
    assert run_cli("history", "show", "3f2a9c").exit_code == 0


def test_readme_history_show_example_is_long_enough() -> None:
    readme = (ROOT / "README.md").read_text()
    shows = [line.split("history show ")[1].split()[0] for line in readme.splitlines()
             if "market-agent history show " in line]  # fmt: skip
    assert shows and all(len(ident) >= 6 for ident in shows)


def test_untrusted_text_cannot_break_the_line_or_the_terminal(audit_path: Path) -> None:
    name = "Evil\x1b[2J\nName\u2028\tX"
    AuditLog(audit_path, fsync=False).append(
        "notification", {"alertnames": [name], "status": "firing", "source": "s"}
    )
    result = run_cli("history")
    [line] = result.stdout.splitlines()
    assert "\x1b" not in line and line.count("\t") == 5
    assert clean(name) == "Evil [2J Name  X"


def test_clip_and_columns() -> None:
    assert clip("restart verify passed: nothing to verify", 24) == "restart verify passed…"
    assert clip("firing from predictor-down.json", 24) == "firing from predictor-d…"
    assert clip("critical errors -> escalate (rules)", 24) == "critical errors ->…"
    assert clip("PredictorHighLatency", 12) == "PredictorHi…"
    assert clip("short", 12) == "short"
    columns = [Column("a"), Column("b", 4, 10), Column("summary", 10, rest=True)]
    lines = aligned(columns, [["x", "bbbbbbbbbbbb", "s" * 40]], 30)
    assert all(len(line) <= 30 for line in lines)
    assert lines[1] == "x  bbbbbbbbb…  " + "s" * 14 + "…"
    narrow = aligned(columns, [["x" * 30, "b", "words and more words"]], 20)
    assert all(len(line) <= 20 for line in narrow)


def test_json_rows_are_unchanged_by_the_view(audit_path: Path) -> None:
    result = run_cli("--audit-log", str(SCREENS_LOG), "history", "--json", "--limit", "1")
    assert json.loads(result.stdout)["seq"] == SCREENS_LOG.read_text().count("\n")


def test_show_of_an_automatic_action_names_the_analysis_behind_it(audit_path: Path) -> None:
    log = AuditLog(audit_path, fsync=False)
    log.append("notification", {"id": "n1", "status": "firing", "alertnames": ["PredictorDown"]})
    log.append(
        "analysis",
        {
            "id": "a1b2c3d4e5",
            "notification_id": "n1",
            "severity": "critical",
            "issue_type": "availability",
            "proposed_action": "restart",
            "analyzer": "rules",
            "confidence": 0.946,
            "description": "PredictorDown is firing on 127.0.0.1:8000.",
        },
    )
    base = {"action_id": "auto0001", "action": "restart", "trigger": "auto"}
    links = {"analysis_id": "a1b2c3d4e5", "notification_id": "n1", "alertnames": ["PredictorDown"]}
    log.append("action", {**base, **links, "step": "execute", "outcome": "started"})
    result = run_cli("history", "show", "auto0001")
    facts = dict(line.split("\t", 1) for line in result.stdout.split("\n\n")[0].splitlines())
    assert facts["trigger"] == (
        "auto, analysis a1b2c3d4: critical availability -> restart (rules, confidence 0.95)"
    )
    assert facts["reason"] == "PredictorDown is firing on 127.0.0.1:8000."
    assert (facts["alerts"], facts["outcome"]) == ("PredictorDown", "no result recorded")


def test_show_an_analysis_that_led_to_no_action() -> None:
    """`history` lists analysis ids; `history show` of one used to fail with exit 2."""
    run_cli("analyze", "--no-llm", str(ROOT / "examples" / "alerts" / "high-latency.json"))
    (analysis,) = run_cli("history", "--kind", "analysis", "--json").json_lines()
    short = analysis["id"][:8]
    shown = run_cli("history", "show", short)
    assert shown.exit_code == 0, shown.stderr
    assert f"analysis {analysis['id']}" in shown.stdout
    assert "PredictorHighLatency" in shown.stdout and "performance" in shown.stdout
    raw = run_cli("history", "show", short, "--json").json_lines()
    assert [record["id"] for record in raw] == [analysis["id"]]
    notification = run_cli("history", "show", analysis["notification_id"][:8])
    assert notification.exit_code == 0 and "notification" in notification.stdout
    assert run_cli("history", "show", "ffffffff").exit_code == 2


@pytest.mark.parametrize("args", [["history"], ["history", "stats"], ["history", "--json"]])
def test_a_file_that_is_not_an_audit_log_is_refused(tmp_path: Path, args: list[str]) -> None:
    """A mistyped --audit-log (README.md) used to read as an empty, healthy log (exit 0)."""
    readme = tmp_path / "README.md"
    readme.write_text("# not an audit log\n\nsome text\n")
    result = run_cli("--audit-log", str(readme), *args)
    assert result.exit_code == 3
    assert "is not an audit log" in result.stderr and str(readme) in result.stderr
    assert readme.read_text() == "# not an audit log\n\nsome text\n"
