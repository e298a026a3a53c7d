"""Guards: every reason not to act, checked before an action runs.

Each guard returns a `GuardResult`; the pipeline records every block. The ones
that need the outside world (single flight, the Alertmanager re-check) live in
the runner, right before acting; the history-based ones (circuit breaker,
cooldown, already handled) count the audit log, so they hold across processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from market_agent.labels import is_managed

if TYPE_CHECKING:
    from market_agent.models import Alert, Analysis, Notification
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


def acted_for(g: GuardInput) -> list[Alert]:
    """The firing alerts a run would act for: for an automatic run, those the action allows."""
    if g.notification is None:
        return []
    firing = g.notification.firing
    if g.trigger != "auto":
        return firing
    spec = g.spec
    return [
        alert
        for alert in firing
        if alert.name in spec.alerts or is_managed(alert.labels, spec.matchers)
    ]


def allowlist(g: GuardInput) -> GuardResult:
    if g.trigger != "auto" or g.notification is None:
        return _ok("allowlist", "not applicable")
    allowed = [alert.name for alert in acted_for(g)]
    if not allowed:
        if not g.spec.alerts and not g.spec.matchers:
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
    #: The identities (`Alert.identity`) of the alerts it acted for.
    alert_keys: frozenset[str] = frozenset()
    finished: float | None = None


class ActionHistory:
    """Past executions of an action, from the audit log.

    The first call reads the log back over the horizon; later calls read only what
    was appended since (by any process), so a long history or a large log does not
    slow each run down. A rotated log is read again.
    """

    def __init__(self, audit_path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.audit_path = audit_path
        self.clock = clock
        self._lock = threading.Lock()
        self._horizon = 0.0
        #: (inode, offset read up to) of the current file.
        self._position: tuple[int, int] | None = None
        #: action -> action_id -> its run, in the order the runs started.
        self._runs: dict[str, dict[str, Execution]] = {}
        #: action_id -> epoch of its non-blocked `result` record.
        self._finished: dict[str, float] = {}
        self._forgot_at = 0.0

    def executions(self, action: str, horizon: float) -> list[Execution]:
        if self.audit_path is None:
            return []
        now = self.clock()
        with self._lock:
            self._refresh(horizon, now)
            runs = self._runs.get(action, {}).values()
            cutoff = now - horizon
            return [run for run in reversed(runs) if run.started >= cutoff]  # newest first

    def _refresh(self, horizon: float, now: float) -> None:
        assert self.audit_path is not None
        try:
            stat = self.audit_path.stat()
        except FileNotFoundError:
            self._position = None
            return
        position = self._position
        stale = position is None or position[0] != stat.st_ino or stat.st_size < position[1]
        if stale or horizon > self._horizon:
            self._load(stat.st_ino, stat.st_size, max(horizon, self._horizon), now)
        self._read_tail()
        self._forget(now)

    def _load(self, inode: int, size: int, horizon: float, now: float) -> None:
        """Read the log back over `horizon`; what is appended meanwhile is read again
        by `_read_tail` (from `size`), which is harmless: records are keyed by id."""
        from market_agent.audit.query import Query, format_ts, log_files, select

        assert self.audit_path is not None
        self._runs, self._finished, self._horizon = {}, {}, horizon
        since = format_ts(datetime.fromtimestamp(now - horizon, UTC))
        query = Query(kinds=frozenset({"action"}), since=since)
        newest_first = [record for _, record in select(log_files(self.audit_path), query)]
        for record in reversed(newest_first):
            self._note(record)
        self._position = (inode, size)

    def _read_tail(self) -> None:
        from market_agent.audit.query import load_record

        assert self.audit_path is not None and self._position is not None
        inode, offset = self._position
        with self.audit_path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
        complete = data.rfind(b"\n") + 1  # a record being written is read next time
        for line in data[:complete].splitlines():
            if _ACTION in line and (_EXECUTE in line or _RESULT in line):
                record = load_record(line)
                if record is not None and record.get("kind") == "action":
                    self._note(record)
        self._position = (inode, offset + complete)

    def _note(self, record: Mapping[str, object]) -> None:
        from market_agent.audit.query import epoch

        ident, action = record.get("action_id"), record.get("action")
        if not isinstance(ident, str) or not isinstance(action, str):
            return
        step, outcome = record.get("step"), record.get("outcome")
        runs = self._runs.setdefault(action, {})
        if step == "result" and outcome != "blocked":
            when = self._finished.setdefault(ident, epoch(str(record.get("ts"))))
            run = runs.get(ident)
            if run is not None and run.finished is None:
                runs[ident] = replace(run, finished=when)
        elif step == "execute" and outcome == "started" and ident not in runs:
            when = epoch(str(record.get("ts")))
            runs[ident] = Execution(when, recorded_alert_keys(record), self._finished.get(ident))

    def _forget(self, now: float) -> None:
        """Drop runs older than the horizon (once a minute), so memory stays bounded."""
        if now - self._forgot_at < 60:
            return
        self._forgot_at = now
        cutoff = now - self._horizon
        for runs in self._runs.values():
            for ident in [i for i, run in runs.items() if run.started < cutoff]:
                del runs[ident]
        for ident in [i for i, when in self._finished.items() if when < cutoff]:
            del self._finished[ident]


_ACTION = b'"kind":"action"'
_EXECUTE = b'"step":"execute"'
_RESULT = b'"step":"result"'


def recorded_alert_keys(record: Mapping[str, object]) -> frozenset[str]:
    """The alert identities an `execute started` record names (`alert_keys`)."""
    keys = record.get("alert_keys")
    if not isinstance(keys, list):
        return frozenset()
    return frozenset(key for key in keys if isinstance(key, str))


def history_guards(
    g: GuardInput, runs: Sequence[Execution], now: float, alert_keys: Sequence[str]
) -> list[GuardResult]:
    """Already handled, circuit breaker (`force` overrides it) and cooldown, passed or not.

    `alert_keys`: the identities of the alerts this run would act for. It is already
    handled when the action ran for every one of them, whatever group each came in.
    """
    limit, window, cool = g.settings.limits(g.spec)
    results = []
    if alert_keys:
        results.append(_already_handled(runs, alert_keys))
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


def _already_handled(runs: Sequence[Execution], alert_keys: Sequence[str]) -> GuardResult:
    handled = frozenset().union(*(run.alert_keys for run in runs))
    new = [key for key in alert_keys if key not in handled]
    if not new:
        detail = f"already acted on {_plural(len(alert_keys), 'this alert', 'these alerts')}"
        return GuardResult("already_handled", False, detail, escalate=False)
    detail = f"{len(new)} of {len(alert_keys)} alerts not acted on yet"
    return GuardResult("already_handled", True, detail)


def alert_keys(g: GuardInput) -> list[str]:
    """The identities (fingerprint and start) of the alerts a run would act for."""
    return sorted({alert.identity() for alert in acted_for(g)})


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
