"""`RuleAnalyzer`: the rule table applied to a notification, with live context."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from market_agent.analysis.base import Judgement
from market_agent.analysis.rules import adjust, logs, scoring, wording
from market_agent.analysis.rules.scoring import AVAILABILITY, CRITICAL, Evidence, Finding
from market_agent.analysis.rules.table import load_rule_table
from market_agent.errors import ConfigError
from market_agent.labels import is_managed
from market_agent.models import Alert, Notification, Verdict
from market_agent.models import Evidence as Found

# Validates exactly as `Verdict(...)` does, without BaseModel's Python-level __init__.
_validate_verdict: Callable[[dict[str, Any]], Verdict] = (
    Verdict.__pydantic_validator__.validate_python
)


class RuleAnalyzer:
    """Deterministic analyzer driven by the rule table in `rules.toml`.

    `managed_service`: label matchers; an alert concerns the managed service when
    all labels of any one matcher equal its labels. `extra_rules`: the user's
    `[[analysis.rules]]` tables, which take precedence over built-in rules.
    `restart_action`: the name of the action proposed for a restart.
    Raises `ConfigError` for a bad rule or an empty matcher.
    """

    name = "rules"

    def __init__(
        self,
        *,
        managed_service: Sequence[Mapping[str, str]] = (
            {"job": "market-predictor"},
            {"service": "market-predictor"},
        ),
        extra_rules: Sequence[Mapping[str, Any]] = (),
        restart_action: str = "restart",
    ) -> None:
        self.table = load_rule_table(extra_rules)
        self.restart_action = restart_action
        self._managed = tuple(dict(matcher) for matcher in managed_service)
        if not all(self._managed):
            raise ConfigError("managed_service: every label matcher must name at least one label")

    def judge(self, notification: Notification, context: Mapping[str, Any]) -> Judgement:
        """Judge one notification; `context` holds optional live facts (`{}` if none).

        Context keys (all optional, odd shapes ignored): `predictor` (reachable,
        healthy, error), `metrics` (up, error_ratio, p95_latency_seconds,
        feed_lag_seconds, accuracy) and `effectiveness`
        (`{alertname: {action: {"recent": [bool, ...]}}}`, most recent last).
        """
        firing = notification.firing if notification.status == "firing" else []
        if not firing:
            return Judgement(verdict=wording.resolved_verdict(notification), analyzer="rules")
        evidence = [self._evidence(alert) for alert in firing]
        finding = scoring.find(self.table, evidence)
        found: list[Found] = []
        if context:
            context = adjust.mapping(context)
            limits, action = self.table.thresholds, self.restart_action
            adjust.apply_context(finding, evidence, context, limits, action)
            since = logs.alert_start((a.starts_at for a in firing), context.get("gathered_at"))
            found = self._log_evidence(finding, adjust.mapping(context.get("logs")), since)
        if finding.issue_type is AVAILABILITY and not finding.restartable and not found:
            finding.notes.append("it is restarting in a loop, so another restart will not help")
        adjust.raise_severity(finding)
        vetoed = frozenset({self.restart_action}) if finding.restart_vetoed_by else frozenset()
        verdict = self._verdict(finding, evidence)
        return Judgement(verdict, "rules", evidence=tuple(found), vetoed_actions=vetoed)

    def _log_evidence(
        self, finding: scoring.Finding, summary: Mapping[str, Any], since: datetime | None
    ) -> list[Found]:
        """Current log signatures about the managed service (the logs are the predictor's)."""
        if not finding.managed or not summary or not self.table.log_signatures:
            return []
        return logs.apply_logs(finding, summary, self.table.log_signatures, since)

    def _evidence(self, alert: Alert) -> Evidence:
        table = self.table
        scores, matched, named, restartable = table.matcher.votes(alert)
        managed = is_managed(alert.labels, self._managed)
        severity = table.severity_of(alert)
        return Evidence(alert, severity, managed, scores, matched, named, restartable)

    def _verdict(self, finding: Finding, evidence: Sequence[Evidence]) -> Verdict:
        outage = finding.managed and finding.issue_type is AVAILABILITY
        head = wording.headline(finding, evidence)
        where = wording.location(head.labels)
        return _validate_verdict(
            {
                "issue_detected": True,
                "severity": finding.severity,
                "issue_type": finding.issue_type,
                "description": wording.describe(finding, evidence, head, where),
                "recommended_actions": wording.recommend(self.table, finding, head, where),
                "proposed_action": self._action(finding),
                "confidence": min(max(finding.confidence, 0.0), 1.0),
                "requires_immediate_action": outage or finding.severity is CRITICAL,
            }
        )

    def _action(self, finding: Finding) -> str:
        """`restart` only for an outage of the managed service that a restart can fix."""
        if finding.log_action:
            return finding.log_action
        for rule in finding.rules:
            if rule.proposed_action:
                if rule.proposed_action != self.restart_action:
                    return rule.proposed_action
                break
        outage = finding.managed and finding.issue_type is AVAILABILITY
        if outage and finding.restartable:
            ineffective = "restart_ineffective" in finding.situations
            return "escalate" if ineffective else self.restart_action
        return "escalate" if finding.severity is CRITICAL else "none"
