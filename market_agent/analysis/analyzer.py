"""LLM first when configured, the rule analyzer always behind it, the policy after."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from market_agent.analysis.base import (
    BUILTIN_ACTIONS,
    AnalysisLink,
    Analyzer,
    Judgement,
    linked_to,
)
from market_agent.analysis.policy import ActionCatalog, ActionInfo, apply_policy
from market_agent.analysis.severity import severity_from_label
from market_agent.labels import is_managed
from market_agent.models import (
    Alert,
    AlertSummary,
    Analysis,
    Notification,
    PolicyOverride,
    new_id,
    utc_now,
)


class AnalysisService:
    """Produces one `Analysis` per notification; never fails because of the LLM."""

    def __init__(
        self,
        rules: Analyzer,
        llm: Analyzer | None = None,
        *,
        managed_service: Sequence[Mapping[str, str]] = (),
        llm_unavailable: str | None = None,
        actions: ActionCatalog | None = None,
    ) -> None:
        self.rules = rules
        self.llm = llm
        self.managed_service = managed_service
        #: Why the LLM was wanted but cannot run (e.g. no API key); a fallback reason.
        self.llm_unavailable = llm_unavailable
        self.actions = actions or default_catalog(managed_service)

    def warm(self) -> None:
        """Import and build what the first LLM call needs (no request is sent)."""
        warm = getattr(self.llm, "warm", None)
        if warm is not None:
            warm()

    def warm_history(self) -> None:
        """Read what the analyzers learn from the audit log (slow on a large log)."""
        warm = getattr(self.rules, "warm_history", None)
        if warm is not None:
            warm()

    def analyze(
        self,
        notification: Notification,
        *,
        source: str,
        context: Mapping[str, Any] | None = None,
        notification_id: str | None = None,
    ) -> Analysis:
        context = dict(context or {})
        analysis_id = new_id()
        names = tuple(sorted({alert.name for alert in notification.alerts}))
        with linked_to(AnalysisLink(analysis_id, notification_id, names)):
            judgement, fallback_reason, overrides = self._judge(notification, context)
        # Every part is already validated (the verdict, the notification): skip a second pass.
        # `id` and `created_at` are given, not left to their factories: model_construct
        # inspects a factory's signature on every call.
        return Analysis.model_construct(
            **dict(judgement.verdict.bounded()),
            id=analysis_id,
            created_at=utc_now(),
            source=source,
            group_key=notification.group_key,
            status=notification.status,
            alerts=[AlertSummary.of(alert) for alert in self.by_relevance(notification.alerts)],
            analyzer=judgement.analyzer,
            model=judgement.model,
            fallback_reason=fallback_reason,
            usage=judgement.usage,
            context=context,
            notification_id=notification_id,
            policy_overrides=overrides,
            evidence=list(judgement.evidence),
            investigation=judgement.investigation,
        )

    def by_relevance(self, alerts: Sequence[Alert]) -> list[Alert]:
        """Firing before resolved, active before silenced or inhibited, the managed
        service's before others', then the most severe first (stable otherwise)."""

        def relevance(alert: Alert) -> tuple[bool, bool, bool, int]:
            managed = is_managed(alert.labels, self.managed_service)
            severity = severity_from_label(alert.labels.get("severity")).rank
            return alert.status == "firing", not alert.suppressed, managed, severity

        return sorted(alerts, key=relevance, reverse=True)

    def _judge(
        self, notification: Notification, context: Mapping[str, Any]
    ) -> tuple[Judgement, str | None, list[PolicyOverride]]:
        if self.llm is None:
            return self.rules.judge(notification, context), self.llm_unavailable, []
        try:
            judgement = self.llm.judge(notification, context)
        except Exception as exc:
            return self.rules.judge(notification, context), _reason(exc), []
        rule = self.rules.judge(notification, context)
        allowed = [a.name for a in self.actions.allowed_for(notification)]
        verdict, overrides = apply_policy(
            notification, judgement.verdict, rule.verdict, allowed, vetoed=rule.vetoed_actions
        )
        evidence = (*judgement.evidence, *rule.evidence)
        final = dataclasses.replace(judgement, verdict=verdict, evidence=evidence)
        return final, judgement.fallback_reason, overrides


def default_catalog(managed_service: Sequence[Mapping[str, str]]) -> ActionCatalog:
    """The built-in actions only (restart for the managed service)."""
    infos = tuple(ActionInfo(name, name, universal=name != "restart") for name in BUILTIN_ACTIONS)
    return ActionCatalog(infos, tuple(managed_service))


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
