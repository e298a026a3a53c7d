"""Build the analysis service from settings."""

from __future__ import annotations

from collections.abc import Callable

from market_agent.analysis.analyzer import AnalysisService
from market_agent.analysis.base import BUILTIN_ACTIONS, Analyzer
from market_agent.config import Settings


def build_analysis_service(settings: Settings, *, use_llm: bool = True) -> AnalysisService:
    from market_agent.analysis.rules import RuleAnalyzer

    learnt = _with_effectiveness(settings)
    managed = settings.analysis.managed_service
    rules = learnt(RuleAnalyzer(managed_service=managed, extra_rules=settings.analysis.rules))
    llm_settings = settings.llm
    if not use_llm or not llm_settings.active:
        return AnalysisService(rules, managed_service=managed)
    if not llm_settings.base_url and not llm_settings.resolved_api_key():
        reason = f"LLM enabled but no API key (set ${llm_settings.api_key_env} or llm.base_url)"
        return AnalysisService(rules, managed_service=managed, llm_unavailable=reason)
    from market_agent.analysis.llm import LLMAnalyzer

    allowed = allowed_actions(settings)
    llm = learnt(LLMAnalyzer(llm_settings, allowed_actions=allowed))
    return AnalysisService(rules, llm, managed_service=managed)


def _with_effectiveness(settings: Settings) -> Callable[[Analyzer], Analyzer]:
    """Give every analyzer what the audit log learnt about past actions on these alerts
    (`context["effectiveness"]`, see `market_agent.actions.effectiveness`)."""
    if not settings.audit.enabled:
        return lambda analyzer: analyzer
    from market_agent.actions.effectiveness import EffectivenessTracker, WithEffectiveness

    tracker = EffectivenessTracker(settings.audit.path.expanduser())
    return lambda analyzer: WithEffectiveness(analyzer, tracker)


def allowed_actions(settings: Settings) -> tuple[str, ...]:
    """Built-in actions plus the names of configured ones."""
    return tuple(dict.fromkeys([*BUILTIN_ACTIONS, *settings.actions.definitions]))
