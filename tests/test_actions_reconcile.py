"""Start-up reconciliation: a run left without a result is closed as `interrupted`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from market_agent.actions.notifiers import Escalator
from market_agent.actions.reconcile import reconcile_interrupted, unfinished_runs
from market_agent.actions.runner import ActionRequest, action_lock
from market_agent.audit import AuditLog
from tests.test_actions_guards import (
    RecordingNotifier,
    blocked_by,
    make_runner,
    records,
    touch_action,
)

STARTED = {
    "action_id": "run-1",
    "action": "restart",
    "trigger": "auto",
    "analysis_id": "an-1",
    "notification_id": "n-1",
    "alertnames": ["PredictorDown"],
    "step": "execute",
    "outcome": "started",
}


def write_run(audit: AuditLog, *steps: tuple[str, str], **fields: Any) -> None:
    base = {**STARTED, **fields}
    for step, outcome in steps:
        audit.append("action", {**base, "step": step, "outcome": outcome})


def reconcile(tmp_path: Path, notifier: RecordingNotifier | None = None) -> list[dict[str, Any]]:
    audit = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    escalator = Escalator([notifier] if notifier else [], audit)
    return reconcile_interrupted(audit, escalator, tmp_path / "locks")


def test_a_started_run_without_result_is_interrupted_and_escalated(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    write_run(audit, ("execute", "started"), ("execute", "succeeded"))
    notifier = RecordingNotifier()
    (result,) = reconcile(tmp_path, notifier)
    assert result["step"] == "result"
    assert result["outcome"] == "interrupted"
    assert "execute succeeded" in result["detail"]
    for key in ("action_id", "action", "trigger", "analysis_id", "notification_id"):
        assert result[key] == STARTED[key]
    (event,) = notifier.events
    assert event["reason"] == "action_interrupted"
    assert event["action_id"] == "run-1"
    assert event["alertnames"] == ["PredictorDown"]
    (escalation,) = records(tmp_path, "escalation")
    assert escalation["reason"] == "action_interrupted"
    assert escalation["outcome"] == "sent"
    assert result["escalation_id"] == escalation["escalation_id"]


def test_reconciling_twice_records_and_escalates_once(tmp_path: Path) -> None:
    write_run(AuditLog(tmp_path / "audit.jsonl", fsync=False), ("execute", "started"))
    notifier = RecordingNotifier()
    assert len(reconcile(tmp_path, notifier)) == 1
    assert reconcile(tmp_path, notifier) == []
    assert len(notifier.events) == 1


def test_finished_and_blocked_runs_are_left_alone(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    write_run(audit, ("execute", "started"), ("result", "verified"))
    write_run(audit, ("guard", "blocked"), ("result", "blocked"), action_id="run-2")
    before = records(tmp_path)
    assert reconcile(tmp_path, RecordingNotifier()) == []
    assert records(tmp_path) == before


def test_only_the_unfinished_run_among_others_is_interrupted(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    write_run(audit, ("execute", "started"), ("result", "failed"), action_id="old")
    write_run(audit, ("execute", "started"), ("rollback", "started"), action_id="cut")
    write_run(audit, ("execute", "started"), ("result", "verified"), action_id="new")
    (result,) = reconcile(tmp_path)
    assert result["action_id"] == "cut"
    assert "rollback started" in result["detail"]
    assert [run.action_id for run in unfinished_runs(audit.path)] == []


def test_a_run_in_progress_elsewhere_is_not_interrupted(tmp_path: Path) -> None:
    write_run(AuditLog(tmp_path / "audit.jsonl", fsync=False), ("execute", "started"))
    with action_lock(tmp_path / "locks", "restart") as acquired:
        assert acquired  # another process running `restart` holds this lock
        assert reconcile(tmp_path) == []
    assert len(reconcile(tmp_path)) == 1


def test_no_audit_log_nothing_to_do(tmp_path: Path) -> None:
    assert reconcile(tmp_path) == []
    assert not (tmp_path / "audit.jsonl").exists()


def test_an_interrupted_run_counts_toward_the_circuit_breaker(tmp_path: Path) -> None:
    actions = {"max_executions": 1, "restart": touch_action(tmp_path / "ran")}
    write_run(AuditLog(tmp_path / "audit.jsonl", fsync=False), ("execute", "started"))
    reconcile(tmp_path)
    assert make_runner(tmp_path, actions).run(ActionRequest("restart")).outcome == "blocked"
    assert blocked_by(tmp_path) == ["circuit_breaker"]
