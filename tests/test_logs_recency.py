"""Log evidence counts for an alert only when it is current: a fault that ended (or
was recovered from) before the alert started must not turn a restart into escalate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from market_agent.analysis.analyzer import AnalysisService
from market_agent.analysis.rules import RuleAnalyzer
from market_agent.logs.base import LogLine
from market_agent.logs.summary import summarize
from market_agent.models import Notification
from tests.test_context import MANAGED
from tests.test_logs_analysis import RestartingLLM

# The user trial of issue 14: out_of_memory from 15:11:37, recovered at 15:12:53,
# kill -9 at 15:14:53, PredictorDown firing from 15:15:14.
DAY = datetime(2026, 12, 3, tzinfo=UTC)
OOM_START = DAY.replace(hour=15, minute=11, second=37)
RECOVERED = DAY.replace(hour=15, minute=12, second=53)
ALERT_START = DAY.replace(hour=15, minute=15, second=14)
GATHERED = ALERT_START + timedelta(seconds=40)
DOWN = {"reachable": False, "error": "connection refused", "error_kind": "connect"}
OOM_LINE = "prediction failed: MemoryError: unable to allocate 2.3 GiB for 'AAPL'"
BANNER = "predictor: starting market predictor 1.4.2 on 127.0.0.1:8000"


def down_alert(starts_at: datetime | None = ALERT_START) -> Notification:
    alert: dict[str, Any] = {
        "labels": {"alertname": "PredictorDown", "job": "market-predictor", "severity": "critical"},
        "annotations": {"summary": "the predictor is down"},
    }
    if starts_at is not None:
        alert["startsAt"] = starts_at.isoformat()
    return Notification.model_validate({"status": "firing", "groupKey": "g", "alerts": [alert]})


def oom_lines(start: datetime, end: datetime, count: int) -> list[LogLine]:
    step = (end - start) / (count - 1)
    times = [start + step * i for i in range(count - 1)] + [end]
    return [LogLine(moment, "error", OOM_LINE) for moment in times]


def context(lines: list[LogLine], gathered: datetime = GATHERED) -> dict[str, Any]:
    logs = summarize(
        lines, source="file", start=OOM_START - timedelta(minutes=5), end=gathered, limit=5000
    )
    return {"gathered_at": gathered.isoformat(), "predictor": DOWN, "logs": logs}


def recovered_then_killed() -> dict[str, Any]:
    recovery = LogLine(RECOVERED, "warning", "recovered; cleared faults: out_of_memory")
    return context([*oom_lines(OOM_START, RECOVERED, 1478), recovery])


def judge(notification: Notification, facts: dict[str, Any]) -> Any:
    return RuleAnalyzer().judge(notification, facts)


def test_an_out_of_memory_spell_that_ended_before_the_alert_does_not_veto_a_restart() -> None:
    judged = judge(down_alert(), recovered_then_killed())
    verdict = judged.verdict
    assert (verdict.issue_type, verdict.proposed_action) == ("availability", "restart")
    assert judged.evidence == ()
    assert judged.vetoed_actions == frozenset()
    assert "earlier: out of memory until 15:12:53 UTC" in verdict.description
    assert "the logs show" not in verdict.description


def test_an_ended_spell_is_stale_even_without_a_recovery_line() -> None:
    ended = context(oom_lines(OOM_START, ALERT_START - timedelta(minutes=2), 300))
    verdict = judge(down_alert(), ended).verdict
    assert (verdict.issue_type, verdict.proposed_action) == ("availability", "restart")


def test_out_of_memory_up_to_the_alert_start_is_current() -> None:
    for last in (ALERT_START + timedelta(seconds=5), ALERT_START - timedelta(seconds=30)):
        judged = judge(down_alert(), context(oom_lines(OOM_START, last, 200)))
        verdict = judged.verdict
        assert (verdict.issue_type, verdict.proposed_action) == ("resource", "escalate")
        assert "the logs show out of memory (200 lines" in verdict.description
        assert judged.evidence[0].last_seen == last
        assert judged.vetoed_actions == {"restart"}


def test_a_later_recovery_line_supersedes_a_signature() -> None:
    oom = oom_lines(OOM_START, ALERT_START + timedelta(seconds=5), 50)
    recovery = LogLine(ALERT_START + timedelta(seconds=10), "warning", "recovered; cleared faults")
    assert judge(down_alert(), context([*oom, recovery])).verdict.proposed_action == "restart"


def test_without_alert_start_the_gathering_time_decides() -> None:
    ended = context(oom_lines(OOM_START, RECOVERED, 100))
    assert judge(down_alert(None), ended).verdict.proposed_action == "restart"
    current = context(oom_lines(OOM_START, GATHERED - timedelta(seconds=1), 100))
    assert judge(down_alert(None), current).verdict.proposed_action == "escalate"


def test_a_crash_loop_is_still_detected() -> None:
    starts = [ALERT_START - timedelta(seconds=s) for s in (90, 60, 30, 0)]
    loop = [LogLine(moment, "info", BANNER) for moment in starts]
    judged = judge(down_alert(), context(loop))
    assert (judged.verdict.issue_type, judged.verdict.proposed_action) == (
        "availability",
        "escalate",
    )
    assert "crash loop" in judged.verdict.description


def test_a_crash_loop_out_of_memory_is_not_superseded_by_its_own_restarts() -> None:
    lines = []
    for seconds in (90, 60, 30, 0):
        moment = ALERT_START - timedelta(seconds=seconds)
        lines += [
            LogLine(moment, "info", BANNER),
            *oom_lines(moment, moment + timedelta(seconds=1), 5),
        ]
    verdict = judge(down_alert(), context(sorted(lines, key=lambda x: x.timestamp))).verdict
    assert (verdict.issue_type, verdict.proposed_action) == ("resource", "escalate")


def test_the_llm_restart_stands_when_the_log_evidence_is_stale() -> None:
    service = AnalysisService(RuleAnalyzer(), RestartingLLM(), managed_service=MANAGED)
    analysis = service.analyze(down_alert(), source="test", context=recovered_then_killed())
    assert analysis.proposed_action == "restart"
    assert not any(o.field == "proposed_action" for o in analysis.policy_overrides)
    current = context(oom_lines(OOM_START, ALERT_START, 100))
    analysis = service.analyze(down_alert(), source="test", context=current)
    assert analysis.proposed_action == "escalate"
