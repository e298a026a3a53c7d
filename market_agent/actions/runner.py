"""The remediation pipeline: guards -> execute -> verify -> rollback -> verify -> escalate.

Every step is an ``action`` audit record carrying the action id, the analysis and
notification ids that caused it, the step and its outcome (schema in the README):

    step      outcome
    guard     blocked | overridden          (one record per guard that blocks)
    execute   started | succeeded | failed
    verify    passed | failed
    rollback  started | succeeded | failed
    rollback_verify  passed | failed
    result    verified | rolled_back | failed | blocked | interrupted (set at start-up)

Escalations are separate ``escalation`` records with the same ids.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from market_agent.actions.backends import Plan, UnsafeParameter, build_plan, run_plan
from market_agent.actions.guards import (
    DEDUP_HORIZON,
    STATIC_GUARDS,
    ActionHistory,
    GuardInput,
    GuardResult,
    Trigger,
    acted_for,
    alert_keys,
    history_guards,
)
from market_agent.actions.notifiers import quoted_names
from market_agent.actions.probes import AlertCheckUnavailable
from market_agent.errors import ConfigError, ExitCode
from market_agent.locks import try_flock
from market_agent.models import new_id
from market_agent.settings import PLACEHOLDERS, ActionSpec

if TYPE_CHECKING:
    from market_agent.actions.notifiers import Escalator
    from market_agent.actions.permissions import Permission
    from market_agent.actions.probes import AlertChecker, Verifier
    from market_agent.audit import AuditLog
    from market_agent.models import Analysis, Notification
    from market_agent.settings import ActionsSettings

log = logging.getLogger("market_agent.actions")

OUTCOME_EXIT = {
    "verified": ExitCode.OK,
    "blocked": ExitCode.BLOCKED,
    "rolled_back": ExitCode.ROLLED_BACK,
    "failed": ExitCode.ACTION_FAILED,
}


@dataclass(frozen=True)
class ActionRequest:
    action: str = "restart"
    trigger: Trigger = "manual"
    analysis: Analysis | None = None
    notification: Notification | None = None
    reason: str | None = None
    #: Override the circuit breaker (only that guard); recorded.
    force: bool = False


@dataclass
class Preview:
    """What would run, what would verify it, and which guards would block."""

    action_id: str
    action: str
    params: dict[str, str]
    plan: Plan | None
    rollback: Plan | None
    verification: dict[str, Any]
    guards: list[GuardResult]
    #: What the backends need and whether this process has it (dry runs only).
    permissions: list[Permission] = field(default_factory=list)

    @property
    def blocking(self) -> list[GuardResult]:
        return [g for g in self.guards if not g.passed and not g.overridden]

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_json() if self.plan else None,
            "rollback_plan": self.rollback.to_json() if self.rollback else None,
            "verification": self.verification,
            "guards": [g.to_json() for g in self.guards],
            "permissions": [p.to_json() for p in self.permissions],
        }


@dataclass
class ActionResult:
    """The outcome of one run (or dry run); `to_json` is the `restart --json` schema."""

    action_id: str
    action: str
    trigger: Trigger
    outcome: str
    preview: Preview
    dry_run: bool = False
    forced: bool = False
    reason: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    escalations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        if self.dry_run:
            return ExitCode.BLOCKED if self.preview.blocking else ExitCode.OK
        return OUTCOME_EXIT[self.outcome]

    def to_json(self) -> dict[str, Any]:
        return {
            "action_id": self.action_id,
            "action": self.action,
            "trigger": self.trigger,
            "outcome": self.outcome,
            "exit_code": int(self.exit_code),
            "dry_run": self.dry_run,
            "forced": self.forced,
            "reason": self.reason,
            **self.preview.to_json(),
            "steps": self.steps,
            "escalations": [
                {k: e.get(k) for k in ("escalation_id", "reason", "outcome")}
                for e in self.escalations
            ],
        }


class ActionRunner:
    """Runs configured actions through the guarded pipeline. Build once, reuse."""

    def __init__(
        self,
        settings: ActionsSettings,
        *,
        audit: AuditLog | None,
        verifier: Verifier,
        escalator: Escalator,
        alerts: AlertChecker | None = None,
        lock_dir: Path,
        alert_timeout: float = 5.0,
        clock: Any = time.time,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.verifier = verifier
        self.escalator = escalator
        self.alerts = alerts
        self.lock_dir = lock_dir
        self.alert_timeout = alert_timeout
        self.clock = clock
        self.history = ActionHistory(audit.path if audit is not None else None, clock)

    def warm(self) -> None:
        """Read the history the guards need (the audit log back over each action's
        horizon): later runs read only what was appended since."""
        for name, spec in self.settings.definitions.items():
            _, window, cooldown = self.settings.limits(spec)
            self.history.executions(name, max(window, cooldown, DEDUP_HORIZON))

    def spec(self, action: str) -> ActionSpec:
        spec = self.settings.definitions.get(action)
        if spec is None:
            known = ", ".join(sorted(self.settings.definitions)) or "none"
            raise ConfigError(
                f"no action {action!r} is configured (configured: {known}); "
                f"add an [actions.{action}] table to the config"
            )
        return spec

    # Preview -------------------------------------------------------------------------

    def preview(self, request: ActionRequest) -> Preview:
        """Everything a dry run shows; runs nothing and records nothing."""
        spec = self.spec(request.action)
        preview = self._static(request, spec, new_id())
        preview.guards += self._history(request, spec)
        with self._lock(request.action) as acquired:
            preview.guards.append(_busy(request.action) if not acquired else _free())
        return preview

    def dry_run(self, request: ActionRequest) -> ActionResult:
        """The preview as a result (`outcome` "dry_run"); nothing runs or is recorded.

        It also says which permission each plan needs and whether this process has it.
        """
        from market_agent.actions.permissions import check_plans

        preview = self.preview(request)
        preview.permissions = check_plans(preview.plan, preview.rollback)
        return ActionResult(
            preview.action_id,
            request.action,
            request.trigger,
            "dry_run",
            preview,
            dry_run=True,
            forced=request.force,
            reason=request.reason,
        )

    def _static(self, request: ActionRequest, spec: ActionSpec, action_id: str) -> Preview:
        g = _input(request, spec, self.settings)
        guards = [guard(g) for guard in STATIC_GUARDS]
        params = action_params(spec, request.notification, action_id)
        plan = rollback = None
        try:
            plan = build_plan(spec, params)
            rollback = build_plan(spec.rollback, params) if spec.rollback else None
        except UnsafeParameter as exc:
            guards.append(GuardResult("parameters", False, str(exc)))
        verification = self.verifier.plan(spec)
        return Preview(action_id, request.action, params, plan, rollback, verification, guards)

    def _history(self, request: ActionRequest, spec: ActionSpec) -> list[GuardResult]:
        g = _input(request, spec, self.settings)
        _, window, cooldown = self.settings.limits(spec)
        horizon = max(window, cooldown, DEDUP_HORIZON)
        runs = self.history.executions(request.action, horizon)
        return history_guards(g, runs, self.clock(), alert_keys(g))

    # Running -------------------------------------------------------------------------

    def refuse(self, request: ActionRequest, detail: str) -> ActionResult:
        """Record a run a human did not approve (declined, or no terminal and no --yes)."""
        spec = self.spec(request.action)
        preview = self._static(request, spec, new_id())
        preview.guards.append(GuardResult("approval", False, detail, escalate=False))
        run = _Run(self, request, preview)
        return run.blocked(preview.guards[-1:])

    def run(self, request: ActionRequest) -> ActionResult:
        spec = self.spec(request.action)
        preview = self._static(request, spec, new_id())
        run = _Run(self, request, preview)
        if preview.blocking:
            return run.blocked(preview.blocking)
        with self._lock(request.action) as acquired:
            if not acquired:
                preview.guards.append(_busy(request.action))
                return run.blocked(preview.guards[-1:])
            history = self._history(request, spec)
            preview.guards += [_free(), *history]
            for guard in history:
                if guard.overridden:
                    run.record("guard", "overridden", guard=guard.name, detail=guard.detail)
            if preview.blocking:
                return run.blocked(preview.blocking)
            if not (run.recheck() and run.verifiable(spec)):
                return run.result
            return run.execute(spec)

    def _lock(self, action: str) -> AbstractContextManager[bool]:
        return action_lock(self.lock_dir, action)


@contextmanager
def action_lock(lock_dir: Path, action: str) -> Iterator[bool]:
    """Single flight: a non-blocking exclusive flock per action, across processes."""
    path = lock_dir / (re.sub(r"[^A-Za-z0-9._-]", "_", action) + ".lock")
    try:
        lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = try_flock(path)
    except OSError as exc:
        raise ConfigError(
            f"action lock {path}: {exc.strerror or exc} (check actions.lock_dir)"
        ) from None
    if fd is None:
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)


def _free() -> GuardResult:
    return GuardResult("single_flight", True, "no other run in progress")


def _busy(action: str) -> GuardResult:
    detail = f"another process is running action {action!r} right now"
    return GuardResult("single_flight", False, detail, escalate=False)


def _input(request: ActionRequest, spec: ActionSpec, settings: ActionsSettings) -> GuardInput:
    return GuardInput(
        request.action,
        spec,
        settings,
        request.trigger,
        request.analysis,
        request.notification,
        request.force,
    )


def action_params(
    spec: ActionSpec, notification: Notification | None, action_id: str
) -> dict[str, str]:
    """Placeholder values: configured defaults, then the firing alerts' common labels."""
    params = dict(spec.params)
    if notification is not None and notification.firing:
        common = dict(notification.firing[0].labels)
        for alert in notification.firing[1:]:
            common = {k: v for k, v in common.items() if alert.labels.get(k) == v}
        params.update({k: v for k, v in common.items() if k in PLACEHOLDERS})
    params["action_id"] = action_id
    return params


class _Run:
    """One pass through the pipeline: records each step, builds the result."""

    def __init__(self, runner: ActionRunner, request: ActionRequest, preview: Preview) -> None:
        self.runner = runner
        self.request = request
        self.preview = preview
        self.analysis = request.analysis
        self.notification = request.notification
        self.alertnames = _alertnames(request)
        self.result = ActionResult(
            preview.action_id,
            request.action,
            request.trigger,
            "blocked",
            preview,
            forced=request.force,
            reason=request.reason,
        )

    def record(self, step: str, outcome: str, **fields: Any) -> None:
        entry = {"step": step, "outcome": outcome, **fields}
        self.result.steps.append(entry)
        audit = self.runner.audit
        if audit is None:
            return
        audit.append(
            "action",
            {
                "action_id": self.preview.action_id,
                "action": self.request.action,
                "trigger": self.request.trigger,
                "analysis_id": self.analysis.id if self.analysis else None,
                "notification_id": self.analysis.notification_id if self.analysis else None,
                "alertnames": self.alertnames,
                **entry,
            },
        )

    def escalate(self, reason: str, message: str) -> None:
        analysis = self.analysis
        record = self.runner.escalator.escalate(
            reason,
            message,
            action=self.request.action,
            action_id=self.preview.action_id,
            analysis_id=analysis.id if analysis else None,
            notification_id=analysis.notification_id if analysis else None,
            alertnames=self.alertnames,
            severity=analysis.severity.value if analysis else None,
            description=analysis.description if analysis else None,
        )
        self.result.escalations.append(record)

    def blocked(self, guards: list[GuardResult]) -> ActionResult:
        for guard in guards:
            self.record("guard", "blocked", guard=guard.name, detail=guard.detail)
        names = ", ".join(g.name for g in guards)
        self.record("result", "blocked", detail=f"blocked by {names}")
        self.result.outcome = "blocked"
        self._log_blocked(guards)
        asked = self.analysis is not None and self.analysis.requires_immediate_action
        # No page when any guard says none is needed (already handled, silenced, ...).
        if self.request.trigger == "auto" and asked and all(g.escalate for g in guards):
            detail = "; ".join(g.detail for g in guards)
            self.escalate("guard_blocked", f"{self.request.action} was not run: {detail}")
        return self.result

    def _log_blocked(self, guards: list[GuardResult]) -> None:
        if self.request.trigger != "auto":
            return  # a person is watching the result
        action, alerts = self.request.action, quoted_names(self.alertnames)
        if any(g.name == "safety_mode" for g in guards):
            log.warning(
                "%s for %s was not run: safety mode (listen --auto-remediate, or "
                "actions.auto_remediate = true, lets it run)",
                action,
                alerts,
            )
        else:
            names = ", ".join(g.name for g in guards)
            log.info("%s for %s was not run: blocked by %s", action, alerts, names)

    def recheck(self) -> bool:
        """Right before acting: is the alert still firing and not silenced?"""
        runner, notification = self.runner, self.notification
        if self.request.trigger != "auto" or notification is None:
            return True
        if not runner.settings.recheck_alertmanager:
            return True
        if runner.alerts is None:
            return self._recheck_failed("no Alertmanager client configured")
        try:
            state, detail = runner.alerts.state(notification.firing, runner.alert_timeout)
        except AlertCheckUnavailable as exc:
            return self._recheck_failed(str(exc))
        if state != "firing":
            guard = GuardResult("alert_state", False, detail, escalate=False)
            self.preview.guards.append(guard)
            self.blocked([guard])
            return False
        return True

    def _recheck_failed(self, why: str) -> bool:
        detail = f"cannot re-check the alert with Alertmanager: {why}"
        return self._not_blind("alert_state", detail, "alertmanager_unreachable")

    def verifiable(self, spec: ActionSpec) -> bool:
        """Before an automatic run: can Prometheus answer the verification query at all?

        If not, the action could only be verified as failed, then rolled back: a human
        decides instead.
        """
        condition = self.runner.verifier.condition
        if self.request.trigger != "auto" or not spec.verify_query or condition is None:
            return True
        reachable, seen = condition.holds("vector(1)", min(spec.verify_timeout, 5.0))
        if reachable:
            return True
        detail = f"cannot verify it: Prometheus did not answer ({seen})"
        return self._not_blind("verification", detail, "prometheus_unreachable")

    def _not_blind(self, guard_name: str, detail: str, reason: str) -> bool:
        """Block a run that lacks what it needs to act safely, and tell a human; False."""
        guard = GuardResult(guard_name, False, detail, escalate=False)
        self.preview.guards.append(guard)
        self.blocked([guard])
        self.escalate(reason, f"{self.request.action} was not run: {detail}")
        return False

    def execute(self, spec: ActionSpec) -> ActionResult:
        plan = self.preview.plan
        assert plan is not None  # a plan that could not be built is a blocking guard
        started = time.monotonic()
        self.record(
            "execute",
            "started",
            plan=plan.to_json(),
            params=self.preview.params,
            reason=self.request.reason,
            forced=self.request.force,
            alert_keys=alert_keys(_input(self.request, spec, self.runner.settings)),
        )
        since = time.time()  # a verify_query holds only on samples scraped after this
        verified = self._run_step("execute", plan) and self._verify("verify", spec, since)
        elapsed = round(time.monotonic() - started, 3)
        alert = self._alert_started_at(spec)
        if verified:
            return self._finish(
                "verified", "verified", recover_s=elapsed, elapsed_s=elapsed, **alert
            )
        rollback = self.preview.rollback
        since = time.time()
        recovered = (
            rollback is not None
            and self._run_step("rollback", rollback)
            and self._verify("rollback_verify", spec, since)
        )
        if recovered:
            detail = "failed verification; rolled back and verified"
            self._finish("rolled_back", detail, elapsed_s=_since(started), **alert)
            self.escalate("rolled_back", self._failure_message(rolled_back=True))
            return self.result
        detail = "failed; " + ("rollback failed" if rollback else "no rollback configured")
        self._finish("failed", detail, elapsed_s=_since(started), **alert)
        self.escalate("action_failed", self._failure_message(rolled_back=False))
        return self.result

    def _alert_started_at(self, spec: ActionSpec) -> dict[str, str]:
        """`alert_started_at`: the earliest startsAt of the alerts it acted for, so that
        time to recover can be told from the alert's start too (`history stats`)."""
        alerts = acted_for(_input(self.request, spec, self.runner.settings))
        starts = [alert.starts_at for alert in alerts if alert.starts_at is not None]
        if not starts:
            return {}
        first = min(starts).astimezone(UTC).isoformat(timespec="microseconds")
        return {"alert_started_at": first.replace("+00:00", "Z")}

    def _run_step(self, step: str, plan: Plan) -> bool:
        if step == "rollback":
            self.record("rollback", "started", plan=plan.to_json())
        extra = {"action": self.request.action, "action_id": self.preview.action_id}
        outcome = run_plan(plan, extra_body=extra)
        self.record(
            step,
            "succeeded" if outcome.ok else "failed",
            detail=outcome.detail,
            duration_ms=outcome.duration_ms,
            commands=[s.to_json() for s in outcome.steps],
        )
        return outcome.ok

    def _verify(self, step: str, spec: ActionSpec, since: float) -> bool:
        outcome = self.runner.verifier.verify(spec, since)
        self.record(
            step,
            "passed" if outcome.ok else "failed",
            detail=outcome.detail,
            duration_ms=outcome.duration_ms,
            checks=outcome.checks,
        )
        return outcome.ok

    def _finish(self, outcome: str, detail: str, **fields: Any) -> ActionResult:
        self.result.outcome = outcome
        self.record("result", outcome, detail=detail, forced=self.request.force, **fields)
        return self.result

    def _failure_message(self, *, rolled_back: bool) -> str:
        failed = [s for s in self.result.steps if s["outcome"] == "failed"]
        why = "; ".join(f"{s['step']}: {s.get('detail', '')}" for s in failed) or "unknown"
        end = "rolled back" if rolled_back else "not recovered"
        return f"{self.request.action} failed ({why}); {end}"


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _alertnames(request: ActionRequest) -> list[str]:
    if request.notification is not None:
        return sorted({alert.name for alert in request.notification.alerts})
    if request.analysis is not None:
        return sorted({alert.alertname for alert in request.analysis.alerts})
    return []
