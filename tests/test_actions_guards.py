"""Each guard blocks on its own, is recorded, and escalates only when it should."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from market_agent.actions.guards import (
    DEDUP_HORIZON,
    ActionHistory,
    Execution,
    GuardInput,
    GuardResult,
    _span,
    allowlist,
    confidence,
    history_guards,
    kill_switch,
    resolved,
    safety_mode,
)
from market_agent.actions.notifiers import Delivery, Escalator
from market_agent.actions.probes import AlertCheckUnavailable, Verifier
from market_agent.actions.runner import ActionRequest, ActionRunner
from market_agent.audit import AuditLog
from market_agent.audit.query import format_ts
from market_agent.models import AlertSummary, Analysis, Notification
from market_agent.settings import ActionsSettings

STARTS = "2026-11-25T10:00:00Z"


class FakeHealth:
    """Answers from a script of booleans; the last answer repeats."""

    def __init__(self, answers: Sequence[bool] = (True,)) -> None:
        self.answers = list(answers)
        self.calls = 0

    def check(self, timeout: float) -> tuple[bool, str]:
        self.calls += 1
        ok = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return ok, "healthy" if ok else "unhealthy (test)"


class FakeAlerts:
    def __init__(self, state: str = "firing", error: str | None = None) -> None:
        self.result = state
        self.error = error
        self.calls = 0

    def state(self, alerts: Any, timeout: float) -> tuple[str, str]:
        self.calls += 1
        if self.error:
            raise AlertCheckUnavailable(self.error)
        return self.result, f"alert is {self.result}"


class RecordingNotifier:
    name = "recorder"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send(self, event: Any) -> Delivery:
        self.events.append(dict(event))
        return Delivery(self.name, True, 1, 200)


def make_runner(
    tmp_path: Path,
    actions: dict[str, Any],
    *,
    health: Sequence[bool] = (True,),
    alerts: FakeAlerts | None = None,
    notifier: RecordingNotifier | None = None,
) -> ActionRunner:
    settings = ActionsSettings.model_validate({"pause_file": str(tmp_path / "paused"), **actions})
    audit = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    return ActionRunner(
        settings,
        audit=audit,
        verifier=Verifier(FakeHealth(health), None, interval=0.001),
        escalator=Escalator([notifier] if notifier else [], audit),
        alerts=alerts if alerts is not None else FakeAlerts(),
        lock_dir=tmp_path / "locks",
    )


def touch_action(marker: Path, **extra: Any) -> dict[str, Any]:
    """An action whose only effect is creating `marker`."""
    return {
        "argv": [
            sys.executable,
            "-c",
            "import sys; open(sys.argv[1], 'a').write('x')",
            str(marker),
        ],
        "alerts": ["PredictorDown"],
        "verify_timeout": 0.5,
        **extra,
    }


def notification(
    status: str = "firing",
    alertname: str = "PredictorDown",
    fingerprint: str = "67c2635bf40631ca",
    **labels: str,
) -> Notification:
    alert_labels = {
        "alertname": alertname,
        "job": "market-predictor",
        "instance": "127.0.0.1:8000",
        **labels,
    }
    return Notification.model_validate(
        {
            "status": status,
            "groupKey": "{}:" + alertname,
            "alerts": [
                {
                    "status": status,
                    "labels": alert_labels,
                    "startsAt": STARTS,
                    "fingerprint": fingerprint,
                }
            ],
        }
    )


def analysis_of(
    note: Notification,
    *,
    action: str = "restart",
    confidence: float = 0.9,
    immediate: bool = True,
) -> Analysis:
    return Analysis(
        issue_detected=True,
        severity="critical",
        issue_type="availability",
        description="PredictorDown is firing.",
        proposed_action=action,
        confidence=confidence,
        requires_immediate_action=immediate,
        source="test",
        group_key=note.group_key,
        status=note.status,
        alerts=[AlertSummary.of(alert) for alert in note.alerts],
        analyzer="rules",
        notification_id="n-1",
    )


def auto(note: Notification | None = None, **kwargs: Any) -> ActionRequest:
    note = note or notification()
    return ActionRequest("restart", "auto", analysis_of(note, **kwargs), note)


def records(tmp_path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in found if kind is None or r["kind"] == kind]


def blocked_by(tmp_path: Path) -> list[str]:
    return [
        r["guard"]
        for r in records(tmp_path, "action")
        if r["step"] == "guard" and r["outcome"] == "blocked"
    ]


def executions(tmp_path: Path) -> int:
    return sum(
        1
        for r in records(tmp_path, "action")
        if r["step"] == "execute" and r["outcome"] == "started"
    )


ON = {"auto_remediate": True, "cooldown": 0}


def test_all_guards_pass_and_the_action_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    runner = make_runner(tmp_path, {**ON, "restart": touch_action(marker)})
    result = runner.run(auto())
    assert result.outcome == "verified"
    assert marker.exists()
    assert blocked_by(tmp_path) == []


@pytest.mark.parametrize(
    ("settings", "guard"),
    [
        ({"enabled": False}, "kill_switch"),
        ({"auto_remediate": False}, "safety_mode"),
        ({"min_confidence": 0.95}, "confidence"),
    ],
)
def test_settings_guards_block_and_are_recorded(
    tmp_path: Path, settings: dict[str, Any], guard: str
) -> None:
    marker = tmp_path / "ran"
    runner = make_runner(tmp_path, {**ON, **settings, "restart": touch_action(marker)})
    result = runner.run(auto())
    assert result.outcome == "blocked"
    assert blocked_by(tmp_path) == [guard]
    assert not marker.exists()
    assert executions(tmp_path) == 0


def test_safety_mode_is_on_by_default(tmp_path: Path) -> None:
    assert ActionsSettings().auto_remediate is False
    marker = tmp_path / "ran"
    runner = make_runner(tmp_path, {"restart": touch_action(marker)})
    assert runner.run(auto()).outcome == "blocked"
    assert blocked_by(tmp_path) == ["safety_mode"]


def test_pause_file_is_a_kill_switch(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "paused").touch()
    runner = make_runner(tmp_path, {**ON, "restart": touch_action(marker)})
    runner.run(auto())
    assert blocked_by(tmp_path) == ["kill_switch"]
    assert not marker.exists()


def test_kill_switch_blocks_manual_runs_too(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    runner = make_runner(tmp_path, {"enabled": False, "restart": touch_action(marker)})
    assert runner.run(ActionRequest("restart")).outcome == "blocked"
    assert not marker.exists()


@pytest.mark.parametrize(
    "allow",
    [
        {"alerts": ["PredictorHighLatency"]},
        {"alerts": []},
        {"alerts": [], "matchers": [{"job": "x"}]},
    ],
)
def test_allowlist_blocks_other_alerts(tmp_path: Path, allow: dict[str, Any]) -> None:
    marker = tmp_path / "ran"
    runner = make_runner(tmp_path, {**ON, "restart": {**touch_action(marker), **allow}})
    runner.run(auto())
    assert blocked_by(tmp_path) == ["allowlist"]
    assert not marker.exists()


def test_allowlist_by_matcher(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    action = {**touch_action(marker), "alerts": [], "matchers": [{"job": "market-predictor"}]}
    runner = make_runner(tmp_path, {**ON, "restart": action})
    assert runner.run(auto()).outcome == "verified"


def test_never_on_a_resolved_notification(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    runner = make_runner(tmp_path, {**ON, "restart": touch_action(marker)})
    runner.run(auto(notification(status="resolved")))
    assert "resolved" in blocked_by(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("state", ["not_firing", "silenced"])
def test_recheck_blocks_when_the_alert_is_gone_or_silenced(tmp_path: Path, state: str) -> None:
    marker = tmp_path / "ran"
    notifier = RecordingNotifier()
    alerts = FakeAlerts(state)
    runner = make_runner(
        tmp_path, {**ON, "restart": touch_action(marker)}, alerts=alerts, notifier=notifier
    )
    runner.run(auto())
    assert alerts.calls == 1
    assert blocked_by(tmp_path) == ["alert_state"]
    assert not marker.exists()
    assert notifier.events == []  # someone silenced it, or it cleared: no page


def test_alertmanager_unreachable_blocks_and_escalates(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    notifier = RecordingNotifier()
    alerts = FakeAlerts(error="alertmanager at http://127.0.0.1:9: connection refused")
    runner = make_runner(
        tmp_path, {**ON, "restart": touch_action(marker)}, alerts=alerts, notifier=notifier
    )
    result = runner.run(auto())
    assert result.outcome == "blocked"
    assert not marker.exists()
    assert [e["reason"] for e in notifier.events] == ["alertmanager_unreachable"]
    escalation = records(tmp_path, "escalation")[0]
    assert escalation["action_id"] == result.action_id
    assert escalation["notification_id"] == "n-1"


def test_circuit_breaker_counts_the_audit_log(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    runner = make_runner(tmp_path, {"max_executions": 2, "restart": touch_action(marker)})
    assert runner.run(ActionRequest("restart")).outcome == "verified"
    assert runner.run(ActionRequest("restart")).outcome == "verified"
    # A new runner (as a new process would build) reads the same log.
    fresh = make_runner(tmp_path, {"max_executions": 2, "restart": touch_action(marker)})
    result = fresh.run(ActionRequest("restart"))
    assert result.outcome == "blocked"
    assert blocked_by(tmp_path) == ["circuit_breaker"]
    assert executions(tmp_path) == 2


def test_force_overrides_only_the_breaker_and_is_recorded(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    runner = make_runner(tmp_path, {"max_executions": 1, "restart": touch_action(marker)})
    runner.run(ActionRequest("restart"))
    result = runner.run(ActionRequest("restart", force=True))
    assert result.outcome == "verified"
    overridden = [r for r in records(tmp_path, "action") if r["outcome"] == "overridden"]
    assert [r["guard"] for r in overridden] == ["circuit_breaker"]
    started = [r for r in records(tmp_path, "action") if r["outcome"] == "started"]
    assert started[-1]["forced"] is True
    # --force does not lift the kill switch.
    (tmp_path / "paused").touch()
    assert runner.run(ActionRequest("restart", force=True)).outcome == "blocked"


def test_cooldown_blocks_a_second_automatic_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    runner = make_runner(
        tmp_path, {"auto_remediate": True, "cooldown": "10m", "restart": touch_action(marker)}
    )
    assert runner.run(auto(notification(fingerprint="a1"))).outcome == "verified"
    assert runner.run(auto(notification(fingerprint="b2"))).outcome == "blocked"
    assert blocked_by(tmp_path) == ["cooldown"]


def test_never_twice_on_one_alert(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    runner = make_runner(tmp_path, {**ON, "restart": touch_action(marker)})
    assert runner.run(auto()).outcome == "verified"
    assert runner.run(auto()).outcome == "blocked"  # Alertmanager re-sent the same alert
    assert blocked_by(tmp_path) == ["already_handled"]
    assert executions(tmp_path) == 1


def test_single_flight_lock(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    runner = make_runner(tmp_path, {**ON, "restart": touch_action(marker)})
    with runner._lock("restart") as acquired:
        assert acquired
        result = runner.run(auto())
    assert result.outcome == "blocked"
    assert blocked_by(tmp_path) == ["single_flight"]
    assert not marker.exists()


@pytest.mark.parametrize(
    "value",
    [
        "; rm -rf /",
        "$(touch /tmp/pwned)",
        "`touch /tmp/pwned`",
        "host\ntouch /tmp/pwned",
        "--help",
        "a b",
        "x|y",
        "",
    ],
)
def test_unsafe_label_values_block_the_action(tmp_path: Path, value: str) -> None:
    marker = tmp_path / "ran"
    action = touch_action(marker)
    action["argv"] = [*action["argv"], "{instance}"]
    runner = make_runner(tmp_path, {**ON, "restart": action})
    result = runner.run(auto(notification(instance=value)))
    assert result.outcome == "blocked"
    assert blocked_by(tmp_path) == ["parameters"]
    assert not marker.exists()


def test_blocked_immediate_action_escalates(tmp_path: Path) -> None:
    notifier = RecordingNotifier()
    runner = make_runner(tmp_path, {"restart": touch_action(tmp_path / "ran")}, notifier=notifier)
    runner.run(auto(immediate=True))  # safety mode blocks it
    assert [e["reason"] for e in notifier.events] == ["guard_blocked"]
    assert "safety mode" in notifier.events[0]["message"]


def test_blocked_non_immediate_action_does_not_escalate(tmp_path: Path) -> None:
    notifier = RecordingNotifier()
    runner = make_runner(tmp_path, {"restart": touch_action(tmp_path / "ran")}, notifier=notifier)
    runner.run(auto(immediate=False))
    assert notifier.events == []
    assert records(tmp_path, "escalation") == []


def test_dry_run_lists_every_guard_and_records_nothing(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, {"max_executions": 1, "restart": touch_action(tmp_path / "r")})
    runner.run(ActionRequest("restart"))
    before = records(tmp_path)
    result = runner.dry_run(ActionRequest("restart"))
    names = [g.name for g in result.preview.guards]
    assert {"kill_switch", "circuit_breaker", "single_flight"} <= set(names)
    assert [g.name for g in result.preview.blocking] == ["circuit_breaker"]
    assert result.exit_code == 5
    assert records(tmp_path) == before


def test_a_resent_alert_inside_the_cooldown_is_not_escalated(tmp_path: Path) -> None:
    notifier = RecordingNotifier()
    actions = {"auto_remediate": True, "cooldown": "10m", "restart": touch_action(tmp_path / "r")}
    runner = make_runner(tmp_path, actions, notifier=notifier)
    assert runner.run(auto()).outcome == "verified"
    assert runner.run(auto()).outcome == "blocked"  # Alertmanager re-sent it
    assert sorted(blocked_by(tmp_path)) == ["already_handled", "cooldown"]
    assert notifier.events == []
    assert runner.run(auto(notification(fingerprint="new"))).outcome == "blocked"
    assert [e["reason"] for e in notifier.events] == ["guard_blocked"]  # a new incident
    assert "cooldown" in notifier.events[0]["message"]


# Per-alert idempotency ------------------------------------------------------------------


def group(*alerts: str, group_key: str = "{}:{alertname=PredictorDown}") -> Notification:
    """A firing group of alerts named `alertname:fingerprint` (default name PredictorDown)."""
    items = []
    for alert in alerts:
        name, _, fingerprint = alert.rpartition(":")
        labels = {"alertname": name or "PredictorDown", "instance": "127.0.0.1:8000"}
        labels["shard"] = fingerprint
        items.append(
            {"labels": labels, "startsAt": STARTS, "fingerprint": fingerprint, "status": "firing"}
        )
    return Notification.model_validate({"status": "firing", "groupKey": group_key, "alerts": items})


def test_a_growing_then_shrinking_group_acts_once_per_alert(tmp_path: Path) -> None:
    actions = {**ON, "max_executions": 10, "restart": touch_action(tmp_path / "ran")}
    runner = make_runner(tmp_path, actions)
    sequence = ["a", "ab", "abc", "bc", "ab", "b", "cba"]
    outcomes = [runner.run(auto(group(*alerts))).outcome for alerts in sequence]
    assert outcomes == ["verified"] * 3 + ["blocked"] * 4
    assert blocked_by(tmp_path) == ["already_handled"] * 4
    started = [r for r in records(tmp_path, "action") if r["outcome"] == "started"]
    assert [len(r["alert_keys"]) for r in started] == [1, 2, 3]
    assert started[0]["alert_keys"] == ["a|2026-11-25T10:00:00+00:00"]


def test_an_alert_already_acted_on_is_handled_in_any_group(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, {**ON, "restart": touch_action(tmp_path / "ran")})
    assert runner.run(auto(group("a", "b"))).outcome == "verified"
    assert runner.run(auto(group("b", group_key="{}:other"))).outcome == "blocked"
    assert blocked_by(tmp_path) == ["already_handled"]


def test_a_new_alert_in_a_handled_group_still_meets_the_cooldown(tmp_path: Path) -> None:
    actions = {"auto_remediate": True, "cooldown": "10m", "restart": touch_action(tmp_path / "r")}
    runner = make_runner(tmp_path, actions)
    assert runner.run(auto(group("a"))).outcome == "verified"
    result = runner.run(auto(group("a", "b")))
    assert result.outcome == "blocked"
    assert blocked_by(tmp_path) == ["cooldown"]  # b is new: not already handled
    handled = next(g for g in result.preview.guards if g.name == "already_handled")
    assert handled.passed
    assert handled.detail == "1 of 2 alerts not acted on yet"


def test_a_new_alert_in_a_handled_group_still_meets_the_breaker(tmp_path: Path) -> None:
    runner = make_runner(
        tmp_path, {**ON, "max_executions": 1, "restart": touch_action(tmp_path / "r")}
    )
    assert runner.run(auto(group("a"))).outcome == "verified"
    assert runner.run(auto(group("a", "b"))).outcome == "blocked"
    assert blocked_by(tmp_path) == ["circuit_breaker"]


def test_a_new_alert_the_action_does_not_allow_does_not_make_it_run_again(
    tmp_path: Path,
) -> None:
    runner = make_runner(tmp_path, {**ON, "restart": touch_action(tmp_path / "r")})
    assert runner.run(auto(group("a"))).outcome == "verified"
    assert runner.run(auto(group("a", "DiskFull:x"))).outcome == "blocked"
    assert blocked_by(tmp_path) == ["already_handled"]


def test_an_alert_without_fingerprint_is_known_by_its_labels(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, {**ON, "restart": touch_action(tmp_path / "r")})
    assert runner.run(auto(notification(fingerprint=""))).outcome == "verified"
    assert runner.run(auto(notification(fingerprint=""))).outcome == "blocked"
    assert runner.run(auto(notification(fingerprint="", shard="2"))).outcome == "verified"
    assert blocked_by(tmp_path) == ["already_handled"]


# What mutation testing showed missing (bench/mutate.py) -------------------------------

NOW = 1_800_000_000.0


def guard_input(trigger: str = "auto", **settings: Any) -> GuardInput:
    actions = ActionsSettings.model_validate({"restart": touch_action(Path("m")), **settings})
    return GuardInput("restart", actions.definitions["restart"], actions, trigger)


def by_name(results: Sequence[GuardResult]) -> dict[str, GuardResult]:
    return {result.name: result for result in results}


def write_raw(path: Path, *records: dict[str, Any]) -> None:
    """Action records with chosen times (the history guards read, they don't verify)."""
    with path.open("a") as out:
        for record in records:
            ts = format_ts(datetime.fromtimestamp(record.pop("at"), UTC))
            line = {"kind": "action", "ts": ts, **record}
            out.write(json.dumps(line, separators=(",", ":")) + "\n")


def test_history_reads_only_this_actions_runs_and_their_finish_times(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    run = {"action": "restart", "step": "execute", "outcome": "started"}
    write_raw(
        path,
        {**run, "at": NOW - 900, "action_id": "r1", "alert_keys": ["a|t"]},
        {**run, "at": NOW - 800, "action_id": "c1", "action": "cleanup"},
        {"action": "restart", "step": "result", "outcome": "verified", "action_id": "r1",
         "at": NOW - 100},
        {**run, "at": NOW - 40, "action_id": "r2"},
        # Only an executed run's result ends it (a blocked one never follows a start).
        {"action": "restart", "step": "result", "outcome": "blocked", "action_id": "r2",
         "at": NOW - 30},
    )  # fmt: skip
    runs = ActionHistory(path, clock=lambda: NOW).executions("restart", 3600)
    assert runs == [
        Execution(NOW - 40, frozenset(), None),
        Execution(NOW - 900, frozenset({"a|t"}), NOW - 100),
    ]
    assert ActionHistory(path, clock=lambda: NOW).executions("restart", 60) == runs[:1]


def test_no_audit_log_means_no_history() -> None:
    assert ActionHistory(None).executions("restart", DEDUP_HORIZON) == []


def test_another_actions_runs_count_against_none_of_this_ones_guards(tmp_path: Path) -> None:
    actions = {
        **ON,
        "cooldown": "10m",
        "max_executions": 1,
        "restart": touch_action(tmp_path / "r"),
        "cleanup": touch_action(tmp_path / "c"),
    }
    runner = make_runner(tmp_path, actions)
    note = notification()
    cleanup = ActionRequest("cleanup", "auto", analysis_of(note, action="cleanup"), note)
    assert runner.run(cleanup).outcome == "verified"
    assert runner.run(auto(note)).outcome == "verified"  # breaker, cooldown, alert: its own
    assert runner.run(cleanup).outcome == "blocked"
    assert sorted(blocked_by(tmp_path)) == ["already_handled", "circuit_breaker", "cooldown"]


def test_cooldown_runs_from_the_newest_finish(tmp_path: Path) -> None:
    g = guard_input(cooldown=600)
    runs = [
        Execution(NOW - 5000, finished=NOW - 4000),
        Execution(NOW - 1000, finished=NOW - 10),  # a long run that ended a moment ago
    ]
    cooldown = by_name(history_guards(g, runs, NOW, []))["cooldown"]
    assert not cooldown.passed
    assert cooldown.detail == "last run 10 s ago (cooldown 10 min)"


def test_cooldown_ends_exactly_after_its_length() -> None:
    g = guard_input(cooldown=600)
    over = by_name(history_guards(g, [Execution(NOW - 600)], NOW, []))["cooldown"]
    assert over.passed
    assert over.detail == "no run in the last 10 min"
    assert not by_name(history_guards(g, [Execution(NOW - 599)], NOW, []))["cooldown"].passed


def test_cooldown_applies_to_automatic_runs_only() -> None:
    g = guard_input("manual", cooldown=600)
    assert "cooldown" not in by_name(history_guards(g, [Execution(NOW - 1)], NOW, []))


def test_breaker_counts_a_run_exactly_one_window_old() -> None:
    g = guard_input(max_executions=2, window=3600)
    runs = [Execution(NOW - 3600), Execution(NOW - 10), Execution(NOW - 3601)]
    breaker = by_name(history_guards(g, runs, NOW, []))["circuit_breaker"]
    assert not breaker.passed
    assert not breaker.overridden
    assert breaker.detail == "2 executions in the last 1 h (max 2)"


def test_force_marks_the_breaker_overridden_only_when_it_trips() -> None:
    g = guard_input(max_executions=2)
    forced = GuardInput(g.action, g.spec, g.settings, g.trigger, force=True)
    assert not by_name(history_guards(forced, [Execution(NOW)], NOW, []))[
        "circuit_breaker"
    ].overridden
    tripped = by_name(history_guards(forced, [Execution(NOW)] * 2, NOW, []))["circuit_breaker"]
    assert tripped.overridden


def test_already_handled_details() -> None:
    g = guard_input()
    runs = [Execution(NOW - 9000, frozenset({"a", "b"}))]
    one = by_name(history_guards(g, runs, NOW, ["a"]))["already_handled"]
    assert (one.passed, one.detail, one.escalate) == (False, "already acted on this alert", False)
    two = by_name(history_guards(g, runs, NOW, ["a", "b"]))["already_handled"]
    assert two.detail == "already acted on these alerts"
    assert "already_handled" not in by_name(history_guards(g, runs, NOW, []))


def test_an_alert_handled_hours_ago_is_still_handled(tmp_path: Path) -> None:
    actions = {**ON, "restart": touch_action(tmp_path / "r")}
    assert make_runner(tmp_path, actions).run(auto()).outcome == "verified"
    later = make_runner(tmp_path, actions)
    later.clock = later.history.clock = lambda: time.time() + 6 * 3600  # past window, cooldown
    assert later.run(auto()).outcome == "blocked"
    assert blocked_by(tmp_path) == ["already_handled"]
    next_day = make_runner(tmp_path, actions)
    next_day.clock = next_day.history.clock = lambda: time.time() + 24.5 * 3600
    assert next_day.run(auto()).outcome == "verified"


def test_a_resolved_notification_never_pages(tmp_path: Path) -> None:
    notifier = RecordingNotifier()
    runner = make_runner(
        tmp_path, {**ON, "restart": touch_action(tmp_path / "r")}, notifier=notifier
    )
    assert runner.run(auto(notification(status="resolved"), immediate=True)).outcome == "blocked"
    assert blocked_by(tmp_path)[0] == "resolved"
    assert notifier.events == []


def test_a_firing_group_whose_alerts_all_resolved_is_resolved(tmp_path: Path) -> None:
    note = notification()
    note = note.model_copy(
        update={"alerts": [note.alerts[0].model_copy(update={"status": "resolved"})]}
    )
    assert note.status == "firing"
    runner = make_runner(tmp_path, {**ON, "restart": touch_action(tmp_path / "r")})
    assert runner.run(auto(note)).outcome == "blocked"
    assert blocked_by(tmp_path)[0] == "resolved"


def test_confidence_at_the_floor_is_enough(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, {**ON, "restart": touch_action(tmp_path / "r")})
    assert runner.run(auto(confidence=0.8)).outcome == "verified"
    guard = next(g for g in runner.preview(auto()).guards if g.name == "confidence")
    assert guard.detail == "confidence 0.90 >= 0.80"


def test_manual_runs_skip_confidence_and_allowlist(tmp_path: Path) -> None:
    marker = tmp_path / "r"
    runner = make_runner(tmp_path, {"restart": {**touch_action(marker), "alerts": ["Other"]}})
    note = notification()
    request = ActionRequest("restart", "manual", analysis_of(note, confidence=0.1), note)
    assert runner.run(request).outcome == "verified"
    guards = by_name(runner.preview(request).guards)
    assert guards["confidence"].detail == guards["allowlist"].detail == "not applicable"


def test_automatic_runs_without_analysis_or_notification_skip_those_guards() -> None:
    g = guard_input()
    assert confidence(g).detail == allowlist(g).detail == "not applicable"
    assert resolved(g).passed


@pytest.mark.parametrize(
    ("allow", "detail"),
    [
        ({"alerts": ["Other"]}, "action 'restart' is not allowed for these alerts"),
        ({"alerts": [], "matchers": [{"job": "x"}]}, "action 'restart' is not allowed for these "
                                                     "alerts"),
        ({"alerts": []}, "action 'restart' allows no alert (set its `alerts` or `matchers`)"),
    ],
)  # fmt: skip
def test_allowlist_says_why(tmp_path: Path, allow: dict[str, Any], detail: str) -> None:
    runner = make_runner(tmp_path, {**ON, "restart": {**touch_action(tmp_path / "r"), **allow}})
    guard = by_name(runner.preview(auto()).guards)["allowlist"]
    assert (guard.passed, guard.detail) == (False, detail)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (59, "59 s"), (60, "1 min"), (90, "90 s"), (3600, "1 h"), (5400, "90 min")],
)
def test_spans_read_naturally(seconds: float, text: str) -> None:
    assert _span(seconds) == text


def test_guard_json_and_every_guard_name(tmp_path: Path) -> None:
    result = GuardResult("x", False, "why", overridden=True)
    assert result.to_json() == {"name": "x", "passed": False, "detail": "why", "overridden": True}
    actions = {**ON, "restart": {**touch_action(tmp_path / "r"), "alerts": ["A", "B"]}}
    preview = make_runner(tmp_path, actions).preview(auto(group("A:1", "B:2")))
    assert [(g.name, g.passed) for g in preview.guards] == [
        ("kill_switch", True),
        ("safety_mode", True),
        ("resolved", True),
        ("confidence", True),
        ("allowlist", True),
        ("already_handled", True),
        ("circuit_breaker", True),
        ("cooldown", True),
        ("single_flight", True),
    ]
    details = {g.name: g.detail for g in preview.guards}
    assert details["kill_switch"] == "ok"
    assert details["allowlist"] == "allowed for A, B"


def test_blocking_details_say_what_to_change() -> None:
    assert kill_switch(guard_input(enabled=False)).detail == (
        "actions are disabled (actions.enabled = false)"
    )
    assert safety_mode(guard_input()).detail.endswith(
        "(set actions.auto_remediate = true or listen --auto-remediate)"
    )
    g = guard_input()
    note = notification(status="resolved")
    blocked = resolved(GuardInput(g.action, g.spec, g.settings, "auto", notification=note))
    assert (blocked.passed, blocked.detail) == (False, "the notification is resolved")


def test_a_resolved_group_is_resolved_even_with_an_alert_still_listed_firing() -> None:
    g = guard_input()
    note = Notification.model_validate(
        {"status": "resolved", "alerts": [{"labels": {"alertname": "PredictorDown"}}]}
    )
    assert note.firing  # the alert says firing; the notification says resolved
    assert not resolved(GuardInput(g.action, g.spec, g.settings, "auto", notification=note)).passed
