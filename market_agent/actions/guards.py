"""Guards: every reason not to act, checked before an action runs.

Each guard returns a `GuardResult`; the pipeline records every block. The ones
that need the outside world (single flight, the Alertmanager re-check) live in
the runner, right before acting; the history-based ones (circuit breaker,
cooldown, already handled) count the audit log, so they hold across processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from market_agent.labels import is_managed

if TYPE_CHECKING:
    from market_agent.models import Analysis, Notification
    from market_agent.settings import ActionSpec, ActionsSettings

Trigger = Literal["auto", "manual"]


@dataclass(frozen=True, slots=True)
class GuardResult:
    name: str
    passed: bool
    detail: str
    #: Whether blocking an immediate-action request for this reason calls for a human.
    escalate: bool = True
    #: Blocked, but `--force` overrode it (recorded).
    overridden: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "passed": self.passed,
            "detail": self.detail,
            "overridden": self.overridden,
        }


@dataclass(frozen=True, slots=True)
class GuardInput:
    action: str
    spec: ActionSpec
    settings: ActionsSettings
    trigger: Trigger
    analysis: Analysis | None = None
    notification: Notification | None = None
    force: bool = False


def _ok(name: str, detail: str = "ok") -> GuardResult:
    return GuardResult(name, True, detail)


def kill_switch(g: GuardInput) -> GuardResult:
    if not g.settings.enabled:
        return GuardResult("kill_switch", False, "actions are disabled (actions.enabled = false)")
    pause = g.settings.pause_file.expanduser()
    if pause.exists():
        return GuardResult("kill_switch", False, f"actions are paused ({pause} exists)")
    return _ok("kill_switch")


def safety_mode(g: GuardInput) -> GuardResult:
    if g.trigger == "auto" and not g.settings.auto_remediate:
        return GuardResult(
            "safety_mode",
            False,
            "safety mode: automatic runs only propose (set actions.auto_remediate = true "
            "or listen --auto-remediate)",
        )
    return _ok("safety_mode")


def resolved(g: GuardInput) -> GuardResult:
    if g.notification is not None and (
        g.notification.status == "resolved" or not g.notification.firing
    ):
        return GuardResult("resolved", False, "the notification is resolved", escalate=False)
    return _ok("resolved")


def confidence(g: GuardInput) -> GuardResult:
    if g.trigger != "auto" or g.analysis is None:
        return _ok("confidence", "not applicable")
    floor = g.settings.min_confidence
    if g.analysis.confidence < floor:
        detail = f"confidence {g.analysis.confidence:.2f} is below {floor:.2f}"
        return GuardResult("confidence", False, detail)
    return _ok("confidence", f"confidence {g.analysis.confidence:.2f} >= {floor:.2f}")


def allowlist(g: GuardInput) -> GuardResult:
    if g.trigger != "auto" or g.notification is None:
        return _ok("allowlist", "not applicable")
    spec = g.spec
    allowed = [
        alert.name
        for alert in g.notification.firing
        if alert.name in spec.alerts or is_managed(alert.labels, spec.matchers)
    ]
    if not allowed:
        if not spec.alerts and not spec.matchers:
            detail = f"action {g.action!r} allows no alert (set its `alerts` or `matchers`)"
        else:
            detail = f"action {g.action!r} is not allowed for these alerts"
        return GuardResult("allowlist", False, detail)
    return _ok("allowlist", "allowed for " + ", ".join(dict.fromkeys(allowed)))


#: In order; cheap, local checks first.
STATIC_GUARDS: tuple[Callable[[GuardInput], GuardResult], ...] = (
    kill_switch,
    safety_mode,
    resolved,
    confidence,
    allowlist,
)


# History-based guards ------------------------------------------------------------------

#: How far back "never twice on one alert" looks.
DEDUP_HORIZON = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Execution:
    """One past run of an action, from its `execute`/`started` audit record."""

    started: float
    alert_key: str | None
    finished: float | None = None


class ActionHistory:
    """Past executions of an action, read newest first from the audit log."""

    def __init__(self, audit_path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.audit_path = audit_path
        self.clock = clock

    def executions(self, action: str, horizon: float) -> list[Execution]:
        from market_agent.audit.query import Query, epoch, format_ts, log_files, select

        if self.audit_path is None:
            return []
        since = format_ts(datetime.fromtimestamp(self.clock() - horizon, UTC))
        query = Query(kinds=frozenset({"action"}), since=since)
        finished: dict[str, float] = {}
        runs: list[Execution] = []
        for _, record in select(log_files(self.audit_path), query):
            if record.get("action") != action:
                continue
            step, outcome, ident = (
                record.get("step"),
                record.get("outcome"),
                record.get("action_id"),
            )
            when = epoch(str(record.get("ts")))
            if step == "result" and outcome != "blocked" and isinstance(ident, str):
                finished.setdefault(ident, when)
            elif step == "execute" and outcome == "started":
                key = record.get("alert_key")
                done = finished.get(ident) if isinstance(ident, str) else None
                runs.append(Execution(when, key if isinstance(key, str) else None, done))
        return runs


def history_guards(
    g: GuardInput, runs: Sequence[Execution], now: float, alert_key: str | None
) -> list[GuardResult]:
    """Already handled, circuit breaker (`force` overrides it) and cooldown, passed or not."""
    limit, window, cool = g.settings.limits(g.spec)
    results = []
    if alert_key is not None:
        seen = any(run.alert_key == alert_key for run in runs)
        detail = "already acted on this alert" if seen else "first action on this alert"
        results.append(GuardResult("already_handled", not seen, detail, escalate=False))
    recent = sum(run.started >= now - window for run in runs)
    detail = f"{recent} executions in the last {_span(window)} (max {limit})"
    tripped = recent >= limit
    results.append(
        GuardResult("circuit_breaker", not tripped, detail, overridden=tripped and g.force)
    )
    if g.trigger == "auto":
        last = max((run.finished or run.started for run in runs), default=None)
        if last is not None and now - last < cool:
            detail = f"last run {now - last:.0f} s ago (cooldown {_span(cool)})"
            results.append(GuardResult("cooldown", False, detail))
        else:
            results.append(GuardResult("cooldown", True, f"no run in the last {_span(cool)}"))
    return results


def alert_key(notification: Notification | None) -> str | None:
    """Identifies the firing alerts of a notification: fingerprint and start time."""
    if notification is None or not notification.firing:
        return None
    parts = sorted(
        f"{alert.fingerprint or sorted(alert.labels.items())}@"
        f"{alert.starts_at.isoformat() if alert.starts_at else ''}"
        for alert in notification.firing
    )
    return ";".join(parts)


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
