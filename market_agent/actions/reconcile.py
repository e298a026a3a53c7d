"""Start-up reconciliation: an action whose process died mid-run gets a result, and a human.

A SIGKILL (or a power cut) between an action's `execute started` record and its
`result` leaves the service in an unknown state: restarted or not, verified or not.
At start-up (`listen`, `restart`) every such run gets a `result` record with outcome
`interrupted` and is escalated (`action_interrupted`). Its `execute started` record
already counts toward the circuit breaker, and the result sets the cooldown's clock.

A run is interrupted only if no process holds its action's single-flight lock: the
lock is held for the whole run, so a run in progress elsewhere is left alone.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from market_agent.actions.runner import action_lock

if TYPE_CHECKING:
    from market_agent.actions.notifiers import Escalator
    from market_agent.audit import AuditLog

log = logging.getLogger("market_agent.actions")

#: Fields of the `execute started` record copied to the `interrupted` result.
LINKS = ("action_id", "action", "trigger", "analysis_id", "notification_id", "alertnames")


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A run with an `execute started` record and no `result` record."""

    started: dict[str, Any]
    last_step: str

    @property
    def action(self) -> str:
        return str(self.started.get("action"))

    @property
    def action_id(self) -> str:
        return str(self.started.get("action_id"))


def unfinished_runs(audit_path: Path) -> list[Unfinished]:
    """Runs started but never given a result, oldest first."""
    from market_agent.audit.query import Query, log_files, select

    finished: set[str] = set()
    last_step: dict[str, str] = {}
    found: list[Unfinished] = []
    for _, record in select(log_files(audit_path), Query(kinds=frozenset({"action"}))):
        ident = record.get("action_id")
        if not isinstance(ident, str):
            continue
        step, outcome = record.get("step"), record.get("outcome")
        last_step.setdefault(ident, f"{step} {outcome}")
        if step == "result":
            finished.add(ident)
        elif step == "execute" and outcome == "started" and ident not in finished:
            found.append(Unfinished(record, last_step[ident]))
    return found[::-1]


def reconcile_interrupted(
    audit: AuditLog, escalator: Escalator, lock_dir: Path
) -> list[dict[str, Any]]:
    """Give every interrupted run its `interrupted` result and escalate it; the results."""
    if not audit.path.exists() or not unfinished_runs(audit.path):
        return []
    with ExitStack() as locks:
        # Hold the lock of each action, then look again: a run that was in progress
        # during the first look may have finished since.
        candidates = {run.action for run in unfinished_runs(audit.path)}
        held = {a for a in sorted(candidates) if locks.enter_context(action_lock(lock_dir, a))}
        results = []
        for run in unfinished_runs(audit.path):
            if run.action not in held:
                log.info("action %s (%s) is running elsewhere", run.action_id, run.action)
                continue
            results.append(_interrupted(audit, escalator, run))
        return results


def _interrupted(audit: AuditLog, escalator: Escalator, run: Unfinished) -> dict[str, Any]:
    started = run.started
    detail = f"interrupted: its process stopped after `{run.last_step}`; state unknown"
    # Page first: a crash before the result is recorded pages again rather than never.
    escalation = escalator.escalate(
        "action_interrupted",
        f"{run.action} was interrupted ({run.last_step}, started {started.get('ts')}); "
        "check the service by hand",
        action=run.action,
        action_id=run.action_id,
        analysis_id=started.get("analysis_id"),
        notification_id=started.get("notification_id"),
        alertnames=started.get("alertnames") or (),
    )
    fields = {key: started.get(key) for key in LINKS}
    fields.update(
        step="result",
        outcome="interrupted",
        detail=detail,
        forced=bool(started.get("forced")),
        escalation_id=escalation["escalation_id"],
    )
    log.warning("action %s (%s) was interrupted; escalated", run.action_id, run.action)
    return audit.append("action", fields)
