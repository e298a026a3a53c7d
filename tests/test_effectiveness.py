"""Effectiveness learning: per (alertname, action) figures from the audit log, fed to
the analyzers; three failed restarts of the last five make the rules escalate."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market_agent.analysis.factory import WithEffectiveness, build_analysis_service
from market_agent.audit import AuditLog, prepare
from market_agent.audit.effectiveness import (
    Accumulator,
    EffectivenessTracker,
    compute,
    events_in,
    extract,
)
from market_agent.inputs import read_source
from market_agent.settings import load_settings
from tests.cli_helpers import run_cli
from tests.conftest import EXAMPLES


def result(
    log: AuditLog, outcome: str, name: str = "PredictorDown", **extra: Any
) -> dict[str, Any]:
    fields = {
        "action": "restart",
        "action_id": f"x{time.monotonic_ns()}",
        "alertnames": [name],
        "step": "result",
        "outcome": outcome,
        "elapsed_s": extra.pop("elapsed_s", 5.0),
        **extra,
    }
    return log.append("action", fields)


def test_attempts_successes_rate_and_median(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    result(log, "verified", recover_s=10.0)
    result(log, "verified", recover_s=30.0)
    result(log, "failed")
    result(log, "rolled_back")
    result(log, "blocked")  # not an attempt
    result(log, "verified", "PredictorHighLatency", recover_s=4.0)
    rows = {(r.alertname, r.action): r for r in compute([log.path])}
    down = rows["PredictorDown", "restart"]
    assert (down.attempts, down.successes, down.success_rate) == (4, 2, 0.5)
    assert down.median_recover_s == 20.0
    assert list(down.recent) == [True, True, False, False]
    assert rows["PredictorHighLatency", "restart"].attempts == 1


@pytest.mark.parametrize("key", [None, b"k" * 32], ids=["plain", "keyed"])
def test_time_to_recover_counts_the_resolved_notification(
    tmp_path: Path, key: bytes | None
) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False, key=key)
    failed = result(log, "failed", elapsed_s=1.0)
    time.sleep(0.05)
    log.append("notification", {"id": "n", "status": "resolved", "alertnames": ["PredictorDown"]})
    (row,) = compute([log.path])
    assert row.successes == 0
    assert row.median_recover_s is not None
    assert 1.0 < row.median_recover_s < 5.0
    assert failed["outcome"] == "failed"


def test_since_excludes_older_results(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    result(log, "failed")
    cut = result(log, "verified", recover_s=1.0)["ts"]
    assert [r.attempts for r in compute([log.path], since=cut)] == [1]


def test_recent_keeps_the_last_five(tmp_path: Path) -> None:
    acc = Accumulator()
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    for outcome in ["failed"] * 3 + ["verified"] * 4:
        result(log, outcome, recover_s=1.0)
    acc.feed_all(log.path.read_bytes().splitlines(keepends=True))
    (row,) = acc.rows()
    assert list(row.recent) == [False, True, True, True, True]
    assert row.attempts == 7


def test_tracker_reads_the_log_at_most_once_per_interval(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    tracker = EffectivenessTracker(log.path)
    tracker.REFRESH_INTERVAL = 3600
    result(log, "failed")
    assert tracker.figures(["PredictorDown"])["PredictorDown"]["restart"]["attempts"] == 1
    result(log, "failed")  # not read yet: a busy listener doesn't re-read per analysis
    assert tracker.figures(["PredictorDown"])["PredictorDown"]["restart"]["attempts"] == 1
    tracker._refreshed_at -= 3600
    assert tracker.figures(["PredictorDown"])["PredictorDown"]["restart"]["attempts"] == 2


def test_tracker_reads_only_what_was_appended(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    tracker = EffectivenessTracker(log.path)
    tracker.REFRESH_INTERVAL = 0  # read on every call (see the test below)
    assert tracker.figures(["PredictorDown"]) == {}
    result(log, "failed")
    assert tracker.figures(["PredictorDown"])["PredictorDown"]["restart"]["recent"] == [False]
    offset = tracker._offset
    result(log, "verified", recover_s=2.0)
    figures = tracker.figures(["PredictorDown", "Other"])
    assert tracker._offset > offset
    assert figures == {
        "PredictorDown": {
            "restart": {
                "recent": [False, True],
                "attempts": 2,
                "successes": 1,
                "success_rate": 0.5,
                "median_time_to_recover_s": 2.0,
            }
        }
    }
    # Rotation: the file is replaced; figures include the rotated file too.
    log.path.rename(tmp_path / "audit.jsonl.1")
    result(log, "verified", recover_s=2.0)
    assert tracker.figures(["PredictorDown"])["PredictorDown"]["restart"]["attempts"] == 3


class _Spy:
    name = "rules"

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def judge(self, notification: Any, context: Any) -> str:
        self.contexts.append(dict(context))
        return "judged"


def test_analyzers_get_the_figures_for_their_alerts(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    result(log, "failed")
    spy = _Spy()
    wrapped = WithEffectiveness(spy, EffectivenessTracker(log.path))
    (parsed,) = read_source(str(EXAMPLES / "predictor-down.json"))
    assert wrapped.judge(parsed.notification, {"predictor": {"reachable": False}}) == "judged"
    assert spy.contexts[0]["effectiveness"]["PredictorDown"]["restart"]["recent"] == [False]
    assert spy.contexts[0]["predictor"] == {"reachable": False}
    (other,) = read_source(str(EXAMPLES / "high-latency.json"))
    wrapped.judge(other.notification, {})
    assert "effectiveness" not in spy.contexts[1]


def analyze_down(audit: Path) -> dict[str, Any]:
    settings = load_settings(None, {"audit.path": str(audit)})
    service = build_analysis_service(settings, use_llm=False)
    (parsed,) = read_source(str(EXAMPLES / "predictor-down.json"))
    return service.analyze(parsed.notification, source="test").to_json_dict()


def test_rules_escalate_after_three_failed_restarts_of_five(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    for outcome in ["verified", "verified", "failed", "verified", "failed"]:
        result(log, outcome, recover_s=1.0)
    assert analyze_down(log.path)["proposed_action"] == "restart"  # 2 of 5 failed
    result(log, "rolled_back")  # now 3 of the last 5
    analysis = analyze_down(log.path)
    assert analysis["proposed_action"] == "escalate"
    assert "failed in 3 of the last 5" in analysis["description"]


def test_history_stats_table(audit_path: Path) -> None:
    log = AuditLog(audit_path, fsync=False)
    result(log, "verified", recover_s=3.0)
    result(log, "failed")
    out = run_cli("history", "stats")
    assert out.exit_code == 0
    assert "PredictorDown" in out.stdout and "50%" in out.stdout
    rows = run_cli("history", "stats", "--json").json_lines()
    assert rows[0]["median_time_to_recover_s"] == 3.0
    assert json.dumps(rows[0])  # plain JSON types only


def test_unreadable_history_never_stops_an_analysis(tmp_path: Path) -> None:
    unreadable = tmp_path / "audit.jsonl"
    unreadable.mkdir()
    spy = _Spy()
    wrapped = WithEffectiveness(spy, EffectivenessTracker(unreadable))
    (parsed,) = read_source(str(EXAMPLES / "predictor-down.json"))
    assert wrapped.judge(parsed.notification, {}) == "judged"
    assert "effectiveness" not in spy.contexts[0]


def test_llm_prompt_carries_the_figures_inside_the_fence() -> None:
    from market_agent.analysis.llm import EFFECTIVENESS_NOTE, build_user_prompt

    (parsed,) = read_source(str(EXAMPLES / "predictor-down.json"))
    figures = {"PredictorDown": {"restart": {"recent": [False, False, True], "attempts": 3}}}
    prompt = build_user_prompt(parsed.notification, {"effectiveness": figures})
    fenced = prompt.split("<context_data>")[1].split("</context_data>")[0]
    assert '"recent"' in fenced
    assert '"attempts": 3' in fenced
    assert EFFECTIVENESS_NOTE in prompt
    assert EFFECTIVENESS_NOTE not in build_user_prompt(parsed.notification, {})


def test_parallel_parts_merge_to_the_sequential_answer(tmp_path: Path, monkeypatch: Any) -> None:
    import random

    import market_agent.audit.query as history

    rng = random.Random(7)
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    for _ in range(120):
        name = rng.choice(["PredictorDown", "PredictorHighLatency", "NodeDown"])
        roll = rng.random()
        if roll < 0.4:
            result(log, rng.choice(["verified", "failed", "rolled_back"]), name, recover_s=2.0)
        elif roll < 0.7:
            log.append("notification", {"id": "n", "status": "resolved", "alertnames": [name]})
        else:
            log.append(
                "analysis", {"id": "a", "status": "resolved", "alerts": [{"alertname": name}]}
            )

    def rows() -> list[dict[str, Any]]:
        return [row.to_json() for row in compute([log.path])]

    sequential = rows()
    assert sum(r["attempts"] for r in sequential) > 30
    monkeypatch.setattr(history, "PARALLEL_MIN_BYTES", 1)
    for cores in (2, 3, 4):
        monkeypatch.setattr(history, "_cores", lambda cores=cores: cores)
        assert rows() == sequential
    tracked = EffectivenessTracker(log.path)._acc.feed_all(
        log.path.read_bytes().splitlines(keepends=True)
    )
    assert [row.to_json() for row in tracked.rows()] == sequential


_NAME = st.sampled_from(["PredictorDown", "A]B", 'Quote"d', "Back\\slash", "caf\u00e9"])
_STATUS = st.sampled_from(["firing", "resolved"])
_RECORDS = st.one_of(
    st.builds(
        lambda names, status, nested: (
            "notification",
            {
                "id": "n",
                "alertnames": names,
                "status": status,
                "payload": {"alerts": [{"status": nested}], "status": status},
            },
        ),
        st.lists(_NAME, max_size=3),
        _STATUS,
        _STATUS,
    ),
    st.builds(
        lambda status, names: ("analysis", {"status": status, "alerts": names}),
        _STATUS,
        st.lists(_NAME, max_size=2),
    ),
    st.builds(
        lambda outcome, names, note: (
            "action",
            {
                "action": "restart",
                "step": "result",
                "outcome": outcome,
                "alertnames": names,
                "elapsed_s": 3.0,
                "note": note,
            },
        ),
        st.sampled_from(["verified", "failed", "rolled_back", "blocked"]),
        st.lists(_NAME, max_size=2),
        st.sampled_from(["", '"status":"resolved","ts":"', '"step":"result"']),
    ),
)


@settings(max_examples=200, deadline=None)
@given(records=st.lists(_RECORDS, max_size=12), torn=st.booleans(), junk=st.booleans())
def test_events_read_in_place_equal_those_of_each_line(records, torn, junk) -> None:
    lines = []
    for seq, (kind, fields) in enumerate(records, start=1):
        entry = prepare(kind, fields)
        head, middle, tail = entry.parts
        body = f'{head}{seq}{middle}"2026-11-{10 + seq % 19:02d}T10:00:00Z"{tail}'
        lines.append(f'{{"hash":"{"a" * 64}","prev_hash":"{"b" * 64}",{body[1:]}'.encode())
    if junk:
        lines.insert(len(lines) // 2, b'{"step":"result" not json')
    chunk = b"\n".join(lines) + (b"" if torn else b"\n")
    expected = [event for line in chunk.split(b"\n") if (event := extract(line))]
    assert events_in(chunk) == expected


# Time to recover from the alert's startsAt, and interrupted runs ---------------------------


def _ago(seconds: float) -> str:
    from datetime import UTC, datetime, timedelta

    moment = datetime.now(UTC) - timedelta(seconds=seconds)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_time_to_recover_is_told_from_the_alert_start_and_from_the_action_start(
    tmp_path: Path,
) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    # The alert started 4 s before the run's end; the run itself took 1.5 s.
    result(log, "verified", recover_s=1.5, elapsed_s=1.5, alert_started_at=_ago(4.0))
    result(log, "verified", recover_s=2.0, elapsed_s=2.0)  # an older record: no start
    (row,) = compute([log.path])
    assert row.median_recover_s == 1.75
    assert row.recover_from_alert == [pytest.approx(4.0, abs=0.5)]
    json_row = row.to_json()
    assert json_row["median_time_to_recover_s"] == 1.75
    assert json_row["median_time_to_recover_from_alert_s"] == pytest.approx(4.0, abs=0.5)


def test_an_unverified_run_recovers_from_the_alert_start_at_the_resolution(
    tmp_path: Path,
) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    result(log, "failed", elapsed_s=1.0, alert_started_at=_ago(10.0))
    log.append("notification", {"id": "n", "status": "resolved", "alertnames": ["PredictorDown"]})
    (row,) = compute([log.path])
    assert row.median_recover_s == pytest.approx(1.0, abs=0.5)
    assert row.median_recover_from_alert_s == pytest.approx(10.0, abs=0.5)


def test_an_interrupted_run_is_an_attempt_that_did_not_succeed(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    result(log, "verified", recover_s=1.0)
    log.append(  # as reconcile writes it: no elapsed_s, no recovery
        "action",
        {"action": "restart", "action_id": "i", "alertnames": ["PredictorDown"],
         "step": "result", "outcome": "interrupted"},
    )  # fmt: skip
    (row,) = compute([log.path])
    assert (row.attempts, row.successes, list(row.recent)) == (2, 1, [True, False])
    assert row.recover_times == [1.0]


def test_the_runner_records_the_alert_start_and_history_shows_both_times(
    tmp_path: Path, audit_path: Path
) -> None:
    from market_agent.audit.effectiveness import recovery_times

    log = AuditLog(audit_path, fsync=False)
    record = result(
        log, "verified", recover_s=1.25, elapsed_s=1.25, alert_started_at=_ago(3.0),
        action_id="abc123",
    )  # fmt: skip
    times = recovery_times(record)
    assert times["from_action_s"] == 1.25
    assert times["from_alert_s"] == pytest.approx(3.0, abs=0.5)
    out = run_cli("history", "show", "abc123")
    assert out.exit_code == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "from the alert's start" in text and "1.2 s from the action's start" in text
    (stats,) = [
        json.loads(line) for line in run_cli("history", "stats", "--json").stdout.splitlines()
    ]
    assert stats["median_time_to_recover_s"] == 1.25
    assert stats["median_time_to_recover_from_alert_s"] == pytest.approx(3.0, abs=0.5)


def test_a_verified_run_records_when_its_alert_started(tmp_path: Path) -> None:
    from tests.test_actions_guards import ON, auto, make_runner, records, touch_action

    runner = make_runner(tmp_path, {**ON, "restart": touch_action(tmp_path / "ran")})
    request = auto()
    assert runner.run(request).outcome == "verified"
    (result_record,) = [r for r in records(tmp_path, "action") if r["step"] == "result"]
    starts = [alert.starts_at for alert in request.notification.firing]
    expected = min(starts).isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert result_record["alert_started_at"] == expected
