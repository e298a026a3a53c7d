"""Build the pipeline from settings and the invocation's shared clients and audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    from market_agent.settings import default_state_dir

    actions = settings.actions
    state_dir = audit.path.parent if audit is not None else default_state_dir()
    return ActionRunner(
        actions,
        audit=audit,
        verifier=Verifier(PredictorHealth(predictor), PrometheusCondition(prometheus)),
        escalator=escalator or build_escalator(settings, audit),
        alerts=AlertmanagerRecheck(alertmanager),
        lock_dir=(actions.lock_dir or state_dir / "locks").expanduser(),
        alert_timeout=settings.alertmanager.timeout,
    )


def build_remediator(runner: ActionRunner) -> Remediator:
    from market_agent.actions.remediator import Remediator

    return Remediator(runner, runner.escalator)
