"""LLM first when configured, the rule analyzer always behind it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from market_agent.analysis.base import Analyzer, Judgement, is_managed, severity_from_label
from market_agent.models import (
    AlertSummary,
    Analysis,
    Notification,
    Severity,
    Verdict,
    new_id,
    utc_now,
)


class PolicyViolation(Exception):
    """An LLM verdict that breaks a rule no model may override."""


class AnalysisService:
    """Produces one `Analysis` per notification; never fails because of the LLM."""

    def __init__(
        self,
        rules: Analyzer,
        llm: Analyzer | None = None,
        *,
        managed_service: Sequence[Mapping[str, str]] = (),
        llm_unavailable: str | None = None,
    ) -> None:
        self.rules = rules
        self.llm = llm
        self.managed_service = managed_service
        #: Why the LLM was wanted but cannot run (e.g. no API key); a fallback reason.
        self.llm_unavailable = llm_unavailable

    def analyze(
        self,
        notification: Notification,
        *,
        source: str,
        context: Mapping[str, Any] | None = None,
        notification_id: str | None = None,
    ) -> Analysis:
        context = dict(context or {})
        judgement, fallback_reason = self._judge(notification, context)
        # Every part is already validated (the verdict, the notification): skip a second pass.
        # `id` and `created_at` are given, not left to their factories: model_construct
        # inspects a factory's signature on every call.
        return Analysis.model_construct(
            **dict(judgement.verdict),
            id=new_id(),
            created_at=utc_now(),
            source=source,
            group_key=notification.group_key,
            status=notification.status,
            alerts=[AlertSummary.of(alert) for alert in notification.alerts],
            analyzer=judgement.analyzer,
            model=judgement.model,
            fallback_reason=fallback_reason,
            usage=judgement.usage,
            context=context,
            notification_id=notification_id,
        )

    def _judge(
        self, notification: Notification, context: Mapping[str, Any]
    ) -> tuple[Judgement, str | None]:
        if self.llm is None:
            return self.rules.judge(notification, context), self.llm_unavailable
        try:
            judgement = self.llm.judge(notification, context)
            verdict = self._enforce_policy(notification, judgement.verdict)
        except Exception as exc:
            return self.rules.judge(notification, context), _reason(exc)
        return Judgement(verdict, judgement.analyzer, judgement.model, judgement.usage), None

    def _enforce_policy(self, notification: Notification, verdict: Verdict) -> Verdict:
        """Rules no model output may break, whatever the alert text said."""
        firing = notification.firing
        if notification.status == "resolved" or not firing:
            return verdict.model_copy(
                update={
                    "issue_detected": False,
                    "severity": Severity.INFO,
                    "proposed_action": "none",
                    "requires_immediate_action": False,
                }
            )
        if verdict.proposed_action == "restart" and not any(
            is_managed(alert.labels, self.managed_service) for alert in firing
        ):
            raise PolicyViolation("LLM proposed restart for an alert outside the managed service")
        floor = Severity.highest([severity_from_label(a.labels.get("severity")) for a in firing])
        if verdict.severity.rank < floor.rank:
            verdict = verdict.model_copy(update={"severity": floor})
        return verdict


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
