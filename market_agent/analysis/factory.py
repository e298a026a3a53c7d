"""Build the analysis service from settings."""

from __future__ import annotations

from market_agent.analysis.analyzer import AnalysisService
from market_agent.analysis.base import BUILTIN_ACTIONS
from market_agent.config import Settings


def build_analysis_service(settings: Settings, *, use_llm: bool = True) -> AnalysisService:
    from market_agent.analysis.rules import RuleAnalyzer

    managed = settings.analysis.managed_service
    rules = RuleAnalyzer(managed_service=managed, extra_rules=settings.analysis.rules)
    llm_settings = settings.llm
    if not use_llm or not llm_settings.active:
        return AnalysisService(rules, managed_service=managed)
    if not llm_settings.base_url and not llm_settings.resolved_api_key():
        reason = f"LLM enabled but no API key (set ${llm_settings.api_key_env} or llm.base_url)"
        return AnalysisService(rules, managed_service=managed, llm_unavailable=reason)
    from market_agent.analysis.llm import LLMAnalyzer

    allowed = allowed_actions(settings)
    llm = LLMAnalyzer(llm_settings, allowed_actions=allowed)
    return AnalysisService(rules, llm, managed_service=managed)


def allowed_actions(settings: Settings) -> tuple[str, ...]:
    """Built-in actions plus the names of configured ones."""
    return tuple(dict.fromkeys([*BUILTIN_ACTIONS, *settings.actions.definitions]))
