"""`history`: newest first, filters, raw --json lines, rotation, show, stats, verify."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from market_agent.audit import GENESIS_HASH, AuditLog
from market_agent.audit.format import check_line, raw_ts
from market_agent.audit.query import (
    Query,
    action_chain,
    log_files,
    parse_time,
    reverse_lines,
    select,
)
from tests.cli_helpers import run_cli


def seed(path: Path, count: int = 30) -> AuditLog:
    """notification, analysis, action steps and an escalation, for alternating alerts."""
    log = AuditLog(path, fsync=False)
    for i in range(count):
        name = "PredictorDown" if i % 2 == 0 else "PredictorHighLatency"
        nid, aid, xid = f"n{i:04d}", f"a{i:04d}", f"action{i:04d}"
        base = {"action": "restart", "action_id": xid, "analysis_id": aid, "notification_id": nid}
        log.append_many(
            [
                ("notification", {"id": nid, "status": "firing", "alertnames": [name]}),
                ("analysis", {"id": aid, "notification_id": nid, "alerts": [{"alertname": name}]}),
                ("action", {**base, "alertnames": [name], "step": "execute", "outcome": "started"}),
                ("action", {**base, "alertnames": [name], "step": "result", "outcome": "verified"}),
                ("escalation", {"action_id": xid, "alertnames": [name], "reason": "x"}),
            ]
        )
    return log


def all_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


@pytest.mark.parametrize("block", [7, 64, 1000, 1 << 20])
def test_reverse_reading_is_exact_across_block_boundaries(tmp_path: Path, block: int) -> None:
    path = tmp_path / "audit.jsonl"
    seed(path, 10)
    assert list(reverse_lines([path], block)) == list(reversed(all_lines(path)))


def test_rotated_files_are_read_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    seed(path, 4)
    path.rename(tmp_path / "audit.jsonl.2")
    seed(path, 4)
    path.rename(tmp_path / "audit.jsonl.1")
    seed(path, 4)
    files = log_files(path)
    assert files == [path, tmp_path / "audit.jsonl.1", tmp_path / "audit.jsonl.2"]
    expected = [line for f in files for line in reversed(all_lines(f))]
    assert list(reverse_lines(files)) == expected


def test_filters_by_kind_and_alert(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    seed(path, 10)
    found = [r for _, r in select([path], Query(frozenset({"action"}), alert="PredictorDown"))]
    assert len(found) == 10
    assert all(r["kind"] == "action" and r["alertnames"] == ["PredictorDown"] for r in found)
    seqs = [r["seq"] for r in found]
    assert seqs == sorted(seqs, reverse=True)
    analyses = list(select([path], Query(frozenset({"analysis"}), alert="PredictorHighLatency")))
    assert len(analyses) == 5  # matched through alerts[].alertname


def test_alert_filter_is_exact_not_substring(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync=False)
    log.append("notification", {"alertnames": ["PredictorDownstream"], "note": "PredictorDown"})
    assert list(select([path], Query(alert="PredictorDown"))) == []


def test_since_until_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    seed(path, 10)
    lines = all_lines(path)
    middle = raw_ts(lines[20])
    newer = [r["seq"] for _, r in select([path], Query(since=middle))]
    assert newer == list(range(50, 20, -1))
    older = [r["seq"] for _, r in select([path], Query(until=middle, limit=3))]
    assert older == [21, 20, 19]


def test_parse_time_forms() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_time("2h", now=now) == "2026-11-25T10:00:00.000000Z"
    assert parse_time("2026-11-20", now=now) == "2026-11-20T00:00:00.000000Z"
    assert parse_time("2026-11-20T01:02:03Z") == "2026-11-20T01:02:03.000000Z"
    assert parse_time("7d", now=now) == (now - timedelta(days=7)).strftime(
        "%Y-%m-%dT%H:%M:%S.000000Z"
    )


def test_cli_json_prints_the_stored_lines(tmp_path: Path, audit_path: Path) -> None:
    seed(audit_path, 6)
    result = run_cli("history", "--kind", "escalation", "--alert", "PredictorDown", "--json")
    assert result.exit_code == 0, result.stderr
    stored = [line for line in all_lines(audit_path) if b'"kind":"escalation"' in line]
    wanted = [line.decode() for line in stored if b"PredictorDown" in line]
    assert result.stdout.splitlines() == list(reversed(wanted))


def test_cli_table_and_bad_time(audit_path: Path) -> None:
    seed(audit_path, 3)
    result = run_cli("history", "--limit", "4")
    assert result.exit_code == 0
    assert "escalation" in result.stdout
    bad = run_cli("history", "--since", "yesterday-ish")
    assert bad.exit_code == 2
    assert "yesterday-ish" in bad.stderr


def test_cli_on_a_missing_log_prints_nothing(audit_path: Path) -> None:
    result = run_cli("history", "--json")
    assert (result.exit_code, result.stdout) == (0, "")


def test_show_gives_the_whole_chain(tmp_path: Path, audit_path: Path) -> None:
    seed(audit_path, 5)
    chain = action_chain(log_files(audit_path), "action0002")
    kinds = [r["kind"] for _, r in chain.records]
    assert kinds == ["notification", "analysis", "action", "action", "escalation"]
    assert chain.records[0][1]["id"] == "n0002"
    result = run_cli("history", "show", "action0002", "--json")
    assert result.exit_code == 0
    assert [json.loads(line)["kind"] for line in result.stdout.splitlines()] == kinds
    table = run_cli("history", "show", "action0002")
    assert "n0002" in table.stdout or "notification" in table.stdout


def test_show_unknown_or_ambiguous_id(audit_path: Path) -> None:
    seed(audit_path, 12)
    assert run_cli("history", "show", "nothing-here").exit_code == 2
    ambiguous = run_cli("history", "show", "action001")
    assert ambiguous.exit_code == 2
    assert "ambiguous" in ambiguous.stderr


def test_stats_cli(audit_path: Path) -> None:
    seed(audit_path, 4)
    result = run_cli("history", "stats", "--json")
    assert result.exit_code == 0
    rows = result.json_lines()
    assert [(r["alertname"], r["attempts"], r["successes"]) for r in rows] == [
        ("PredictorDown", 2, 2),
        ("PredictorHighLatency", 2, 2),
    ]
    assert run_cli("history", "stats").exit_code == 0


def test_verify_ok(audit_path: Path) -> None:
    seed(audit_path, 3)
    result = run_cli("history", "verify", "--json")
    assert result.exit_code == 0
    report = result.json_lines()[0]
    assert {k: report[k] for k in ("ok", "records", "files", "keyed")} == {
        "ok": True,
        "records": 15,
        "files": 1,
        "keyed": 0,
    }


def tamper(path: Path, how: str) -> int:
    """Damage the log; returns the 1-based line `verify` must name."""
    lines = path.read_bytes().splitlines(keepends=True)
    if how == "edited":
        lines[6] = lines[6].replace(b'"seq":7,', b'"seq":70,')
        bad = 7
    elif how == "deleted":
        del lines[6]
        bad = 7
    elif how == "inserted":
        lines.insert(6, lines[3])
        bad = 7
    elif how == "reordered":
        lines[5], lines[6] = lines[6], lines[5]
        bad = 6
    elif how == "truncated":
        lines[-1] = lines[-1][:40]
        bad = len(lines)
    else:  # the first record removed
        del lines[0]
        bad = 1
    path.write_bytes(b"".join(lines))
    return bad


@pytest.mark.parametrize("how", ["edited", "deleted", "inserted", "reordered", "truncated", "head"])
def test_verify_names_the_first_bad_line(audit_path: Path, how: str) -> None:
    seed(audit_path, 3)
    line = tamper(audit_path, how)
    result = run_cli("history", "verify")
    assert result.exit_code == 8
    assert f"line {line}:" in result.stderr
    as_json = run_cli("history", "verify", "--json")
    assert as_json.exit_code == 8
    report: dict[str, Any] = as_json.json_lines()[0]
    assert (report["ok"], report["line"]) == (False, line)


def test_verify_checks_rotated_files(audit_path: Path) -> None:
    seed(audit_path, 2)
    audit_path.rename(audit_path.with_name("audit.jsonl.1"))
    seed(audit_path, 2)
    assert run_cli("history", "verify").exit_code == 0
    tamper(audit_path.with_name("audit.jsonl.1"), "edited")
    result = run_cli("history", "verify")
    assert result.exit_code == 8
    assert "audit.jsonl.1: line 7" in result.stderr


def line_by_line(path: Path) -> tuple[bool, int | None, str | None, int]:
    """The reference: `check_line` on each line in turn (ok, bad line, problem, records)."""
    prev, records = GENESIS_HASH, 0
    for number, raw in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
        problem, digest, _ = check_line(raw, prev, start=number == 1, oldest=number == 1)
        if problem is not None:
            return False, number, problem, records
        prev, records = digest, records + 1
    return True, None, None, records


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("how", ["edited", "deleted", "inserted", "truncated"])
def test_fast_verify_agrees_with_a_line_by_line_check_at_every_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel: bool, how: str
) -> None:
    import market_agent.audit.query as history

    monkeypatch.setattr(history, "PARALLEL_MIN_BYTES", 1 if parallel else 1 << 40)
    monkeypatch.setattr(history, "_cores", lambda: 3)
    path = tmp_path / "audit.jsonl"
    seed(path, 2)
    original = path.read_bytes().splitlines(keepends=True)
    for index in range(len(original)):
        lines = list(original)
        if how == "edited":
            lines[index] = lines[index].replace(b'"seq":', b'"seq": ')
        elif how == "deleted":
            del lines[index]
        elif how == "inserted":
            lines.insert(index, original[(index + 3) % len(original)])
        else:
            lines[index] = lines[index][: len(lines[index]) // 2]
        path.write_bytes(b"".join(lines))
        expected = line_by_line(path)
        got = history.verify_file(path)
        assert (got.ok, got.line, got.problem, got.records) == expected
    path.write_bytes(b"".join(original))
    assert history.verify_file(path).records == len(original)
