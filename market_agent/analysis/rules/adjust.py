"""Live context about the managed service adjusting a finding.

Reachability, current metrics and how well restarts worked before may raise the
severity, reclassify the issue or lower the confidence. Context values are
untrusted: odd shapes are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from market_agent.analysis.rules.scoring import (
    AVAILABILITY,
    CRITICAL,
    HIGH,
    Evidence,
    Finding,
    rank,
)
from market_agent.analysis.rules.table import Thresholds
from market_agent.models import IssueType, Severity

#: Issue types a stale market-data feed explains better than the alert text.
_FEED_EXPLAINS = frozenset(
    {IssueType.DATA, IssueType.ERRORS, IssueType.PERFORMANCE, IssueType.UNKNOWN}
)


def mapping(value: Any) -> Mapping[str, Any]:
    """`value` if it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def apply_context(
    finding: Finding,
    evidence: Sequence[Evidence],
    context: Mapping[str, Any],
    limits: Thresholds,
    restart_action: str,
) -> None:
    """Adjust a finding about the managed service to what is true right now."""
    if not finding.managed:  # the live context describes the managed service only
        return
    apply_predictor(finding, mapping(context.get("predictor")))
    apply_metrics(finding, mapping(context.get("metrics")), limits)
    effectiveness = mapping(context.get("effectiveness"))
    apply_effectiveness(finding, evidence, effectiveness, restart_action, limits)


def apply_predictor(finding: Finding, predictor: Mapping[str, Any]) -> None:
    """An unreachable predictor is an outage, whatever the alert says."""
    reachable = predictor.get("reachable")
    if reachable is False:
        error = predictor.get("error")
        detail = f" ({error})" if isinstance(error, str) and error else ""
        finding.notes.append(f"the predictor is unreachable right now{detail}")
        finding.reclassify(IssueType.AVAILABILITY, "live probe")
        finding.severity = Severity.CRITICAL
        finding.confidence = max(finding.confidence, 0.9)
        finding.situations.append("unreachable")
    elif reachable is True and finding.issue_type is IssueType.AVAILABILITY:
        if predictor.get("healthy") is True:
            finding.notes.append("the predictor answers and reports healthy now")
            finding.cleared = True
    elif predictor.get("healthy") is False:
        finding.notes.append("the predictor reports itself unhealthy")


def apply_metrics(finding: Finding, metrics: Mapping[str, Any], limits: Thresholds) -> None:
    """Feed outage or model problem; otherwise, has the condition already cleared?"""
    if "unreachable" in finding.situations:
        return
    lag = _number(metrics.get("feed_lag_seconds"))
    accuracy = _number(metrics.get("accuracy"))
    stale = lag is not None and lag > limits.feed_lag_stale_seconds
    if stale and finding.issue_type in _FEED_EXPLAINS:
        finding.notes.append(f"the market-data feed is {lag:.0f} s behind: a feed outage")
        finding.reclassify(IssueType.DATA, "feed lag")
        finding.confidence = max(finding.confidence, 0.8)
        finding.situations.append("feed_outage")
        return
    model_alert = finding.issue_type in (IssueType.DATA, IssueType.UNKNOWN)
    if accuracy is not None and accuracy < limits.accuracy_floor and not stale and model_alert:
        finding.notes.append(
            f"accuracy is {accuracy:.2f} with a fresh feed: the model has degraded"
        )
        finding.reclassify(IssueType.DATA, "model accuracy")
        finding.confidence = max(finding.confidence, 0.75)
        finding.situations.append("model_degraded")
        return
    apply_clearance(finding, metrics)


def apply_clearance(finding: Finding, metrics: Mapping[str, Any]) -> None:
    """Lower the confidence (not the severity) of an alert that looks cleared."""
    readings = []
    for rule in finding.rules:
        clearance = rule.clears_when
        value = _number(metrics.get(clearance.metric)) if clearance else None
        if clearance and value is not None:
            readings.append((clearance.cleared(value), clearance.metric, value))
    if readings and all(cleared for cleared, _, _ in readings):
        _, metric, value = readings[0]
        finding.notes.append(f"the condition looks cleared already ({metric} is {value:g} now)")
        finding.cleared = True
    if finding.cleared:
        finding.confidence = round(finding.confidence * 0.6, 3)


def apply_effectiveness(
    finding: Finding,
    evidence: Sequence[Evidence],
    effectiveness: Mapping[str, Any],
    action: str,
    limits: Thresholds,
) -> None:
    """Escalate instead of restarting when recent restarts did not fix this alert."""
    for name in dict.fromkeys(e.alert.name for e in evidence):
        history = mapping(mapping(effectiveness.get(name)).get(action)).get("recent")
        if not isinstance(history, list | tuple):
            continue
        recent = [x for x in history if isinstance(x, bool)][-limits.restart_history_window :]
        failures = recent.count(False)
        if failures >= limits.restart_failures_to_escalate:
            finding.notes.append(
                f"{action} failed in {failures} of the last {len(recent)} attempts "
                f"for {name}, so escalating instead"
            )
            finding.situations.append("restart_ineffective")
            return


def raise_severity(finding: Finding) -> None:
    """Raise (never lower) the severity on evidence."""
    floors = [r.severity for r in finding.rules if r.severity]
    outage = finding.managed and finding.issue_type is AVAILABILITY
    if outage and finding.restartable and not finding.cleared:
        floors.append(CRITICAL if finding.confidence >= 0.8 else HIGH)
    if floors:
        finding.severity = max([finding.severity, *floors], key=rank)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
