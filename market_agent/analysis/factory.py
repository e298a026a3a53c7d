"""Build the analysis service from settings."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from market_agent.analysis.analyzer import AnalysisService
from market_agent.analysis.base import BUILTIN_ACTIONS, Analyzer, Judgement
from market_agent.analysis.policy import ActionCatalog, ActionInfo
from market_agent.models import Notification
from market_agent.settings import ActionSpec, BackendSpec, Settings

if TYPE_CHECKING:
    from market_agent.analysis.tools import Toolbox
    from market_agent.audit.effectiveness import EffectivenessTracker

log = logging.getLogger("market_agent.actions")


def build_analysis_service(
    settings: Settings, *, use_llm: bool = True, toolbox: Toolbox | None = None
) -> AnalysisService:
    from market_agent.analysis.rules import RuleAnalyzer

    learnt = _with_effectiveness(settings)
    managed = settings.analysis.managed_service
    rules = learnt(RuleAnalyzer(managed_service=managed, extra_rules=settings.analysis.rules))
    llm_settings = settings.llm
    catalog = action_catalog(settings)
    if not use_llm or not llm_settings.active:
        unavailable = None
        if use_llm and settings.analysis.mode == "investigate":
            unavailable = "investigation needs the LLM, which is off (set llm.base_url or a key)"
        return AnalysisService(
            rules, managed_service=managed, llm_unavailable=unavailable, actions=catalog
        )
    if not llm_settings.base_url and not llm_settings.resolved_api_key():
        reason = f"LLM enabled but no API key (set ${llm_settings.api_key_env} or llm.base_url)"
        return AnalysisService(
            rules, managed_service=managed, llm_unavailable=reason, actions=catalog
        )
    from market_agent.analysis.llm import LLMAnalyzer

    if settings.analysis.mode == "investigate":
        llm = learnt(_investigator(settings, catalog, toolbox))
    else:
        llm = learnt(LLMAnalyzer(llm_settings, actions=catalog))
    return AnalysisService(rules, llm, managed_service=managed, actions=catalog)


def _investigator(settings: Settings, catalog: ActionCatalog, toolbox: Toolbox | None) -> Analyzer:
    """`analysis.mode = "investigate"`: the LLM with read-only tools (`toolbox`, else
    built from the settings) and every step in the audit log."""
    from market_agent.analysis.investigate import AuditSteps, InvestigatingAnalyzer

    audit = None
    if settings.audit.enabled:
        from market_agent.audit import AuditLog

        audit = AuditLog.from_settings(settings.audit)
    return InvestigatingAnalyzer(
        settings.llm,
        limits=settings.analysis.investigation,
        toolbox=toolbox or build_toolbox(settings),
        record=AuditSteps(audit) if audit is not None else None,
        actions=catalog,
    )


def build_toolbox(settings: Settings) -> Toolbox:
    """The investigation's tools over the configured services, logs and audit log."""
    from market_agent.analysis.tools import Toolbox
    from market_agent.clients import AlertmanagerClient, PredictorClient, PrometheusClient
    from market_agent.logs.factory import build_log_source

    return Toolbox(
        prometheus=PrometheusClient(settings.prometheus),
        predictor=PredictorClient(settings.predictor),
        alertmanager=AlertmanagerClient(settings.alertmanager),
        logs=build_log_source(settings),
        history=_action_history(settings),
        max_result_chars=settings.analysis.investigation.max_result_chars,
    )


def _with_effectiveness(settings: Settings) -> Callable[[Analyzer], Analyzer]:
    """Give every analyzer what the audit log learnt about past actions on these alerts
    (`context["effectiveness"]`, see `market_agent.audit.effectiveness`)."""
    if not settings.audit.enabled:
        return lambda analyzer: analyzer
    from market_agent.audit.effectiveness import EffectivenessTracker

    tracker = EffectivenessTracker(settings.audit.path.expanduser())
    return lambda analyzer: WithEffectiveness(analyzer, tracker)


class WithEffectiveness:
    """An `Analyzer` that adds `context["effectiveness"]` for the alerts it judges."""

    def __init__(self, inner: Analyzer, tracker: EffectivenessTracker) -> None:
        self.inner = inner
        self.tracker = tracker
        self.name = inner.name

    def judge(self, notification: Notification, context: Mapping[str, Any]) -> Judgement:
        if "effectiveness" not in context:
            try:
                figures = self.tracker.figures(alert.name for alert in notification.alerts)
            except Exception as exc:  # history is a help, never a reason not to analyse
                log.warning("action history unavailable: %s", exc)
                figures = {}
            if figures:
                context = {**context, "effectiveness": figures}
        return self.inner.judge(notification, context)

    def warm_history(self) -> None:
        """Read the audit log's past actions now, not at the first analysis."""
        self.tracker.figures(())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _action_history(settings: Settings) -> Callable[[str], Mapping[str, Any]] | None:
    """One alert's action figures from the audit log (None when it is off)."""
    if not settings.audit.enabled:
        return None
    from market_agent.audit.effectiveness import EffectivenessTracker

    tracker = EffectivenessTracker(settings.audit.path.expanduser())
    return lambda alertname: tracker.figures([alertname])


def allowed_actions(settings: Settings) -> tuple[str, ...]:
    """Built-in actions plus the names of configured ones."""
    return tuple(dict.fromkeys([*BUILTIN_ACTIONS, *settings.actions.definitions]))


def action_catalog(settings: Settings) -> ActionCatalog:
    """Every action an analyzer may propose, with what it does and for which alerts."""
    configured = settings.actions.definitions
    notifiers = ", ".join(sorted(settings.notifiers)) or "none configured: shown to the operator"
    builtin = {
        "restart": ActionInfo(
            "restart",
            "restart the managed service (no backend configured: a proposal for a human)",
        ),
        "escalate": ActionInfo(
            "escalate", f"page a human through the notifiers ({notifiers})", universal=True
        ),
        "none": ActionInfo("none", "no action; the analysis is only reported", universal=True),
    }
    infos = [
        _configured(name, configured[name]) if name in configured else builtin[name]
        for name in allowed_actions(settings)
    ]
    return ActionCatalog(tuple(infos), tuple(settings.analysis.managed_service))


def _configured(name: str, spec: ActionSpec) -> ActionInfo:
    parts = [spec.description] if spec.description else []
    parts.append(f"backend {spec.backend}: {_target(spec)}")
    checks = []
    if spec.verify_health:
        checks.append(f"the predictor's /health healthy within {spec.verify_timeout:g} s")
    if spec.verify_query:
        checks.append(f"PromQL `{spec.verify_query}` returns a result")
    parts.append("verified by " + " and ".join(checks) if checks else "not verified")
    if spec.rollback is not None:
        parts.append(f"rolled back with {spec.rollback.backend}: {_target(spec.rollback)}")
    return ActionInfo(
        name,
        "; ".join(parts),
        alerts=tuple(spec.alerts),
        matchers=tuple(spec.matchers),
        universal=name in ("escalate", "none"),
    )


def _target(spec: BackendSpec) -> str:
    if spec.backend == "command":
        return "runs " + " ".join(spec.argv)
    if spec.backend == "systemd":
        return f"systemctl restart {spec.unit}"
    if spec.backend == "docker":
        return f"docker restart {spec.container}"
    if spec.backend == "kubernetes":
        return f"kubectl rollout restart deployment/{spec.deployment} -n {spec.namespace}"
    url = urlsplit(spec.url or "")
    return f"POST to {url.scheme}://{url.hostname}{url.path}"  # never credentials or query
