"""Build the pipeline from settings and the invocation's shared clients and audit log."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from market_agent.settings import default_state_dir

if TYPE_CHECKING:
    from market_agent.actions.notifiers import Escalator
    from market_agent.actions.remediator import Remediator
    from market_agent.actions.runner import ActionRunner
    from market_agent.audit import AuditLog
    from market_agent.settings import Settings


def build_escalator(settings: Settings, audit: AuditLog | None) -> Escalator:
    from market_agent.actions.notifiers import Escalator, build_notifiers

    return Escalator(build_notifiers(settings.notifiers), audit)


def build_runner(
    settings: Settings,
    audit: AuditLog | None,
    *,
    predictor: Any,
    prometheus: Any,
    alertmanager: Any,
    escalator: Escalator | None = None,
) -> ActionRunner:
    """`predictor`, `prometheus`, `alertmanager`: the `market_agent.clients` objects."""
    from market_agent.actions.probes import (
        AlertmanagerRecheck,
        PredictorHealth,
        PrometheusCondition,
        Verifier,
    )
    from market_agent.actions.runner import ActionRunner

    actions = settings.actions
    return ActionRunner(
        actions,
        audit=audit,
        verifier=Verifier(PredictorHealth(predictor), PrometheusCondition(prometheus)),
        escalator=escalator or build_escalator(settings, audit),
        alerts=AlertmanagerRecheck(alertmanager),
        lock_dir=action_lock_dir(settings, audit),
        alert_timeout=settings.alertmanager.timeout,
    )


def build_remediator(runner: ActionRunner) -> Remediator:
    from market_agent.actions.remediator import Remediator

    return Remediator(runner, runner.escalator)


def action_lock_dir(settings: Settings, audit: AuditLog | None) -> Path:
    """`actions.lock_dir`, by default `locks/` beside the audit log."""
    state_dir = audit.path.parent if audit is not None else default_state_dir()
    return (settings.actions.lock_dir or state_dir / "locks").expanduser()


def reconcile_at_startup(settings: Settings, audit: AuditLog | None) -> list[dict[str, Any]]:
    """Record and escalate the actions a killed process left without a result."""
    from market_agent.actions.reconcile import reconcile_interrupted

    if audit is None:
        return []
    escalator = build_escalator(settings, audit)
    return reconcile_interrupted(audit, escalator, action_lock_dir(settings, audit))
