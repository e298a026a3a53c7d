"""The words of a verdict: its description and its recommended steps.

Step texts come from `[actions]` in rules.toml and may hold the placeholders
{alertname} {instance} {job} {service} {where}; alert text is untrusted and is
only ever substituted into them, never used as a format string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from market_agent.analysis.rules.scoring import AVAILABILITY, Evidence, Finding
from market_agent.models import Alert, IssueType, Notification, Severity, Verdict

if TYPE_CHECKING:
    from market_agent.analysis.rules.table import RuleTable

_SPACES = re.compile(r"\s+")
#: Enum member -> its plain string value: formats quicker than the member itself.
_TEXT: dict[IssueType | Severity, str] = {m: m.value for e in (IssueType, Severity) for m in e}


def headline(finding: Finding, evidence: Sequence[Evidence]) -> Alert:
    """The alert a group's description leads with: one that supports the finding's issue
    type (`scoring.find` chose it), else managed first, then most severe."""
    if finding.lead is not None:
        return finding.lead
    if len(evidence) == 1:
        return evidence[0].alert
    return max(evidence, key=lambda e: (e.managed, e.severity.rank)).alert


def location(labels: Mapping[str, str]) -> str:
    """Where an alert fires: `instance (job j, service s)`."""
    instance, job, service = labels.get("instance"), labels.get("job"), labels.get("service")
    parts = [f"job {job}"] if job else []
    if service and service != job:
        parts.append(f"service {service}")
    if instance:
        return f"{instance} ({', '.join(parts)})" if parts else instance
    return ", ".join(parts) or "an unnamed target"


def describe(finding: Finding, evidence: Sequence[Evidence], head: Alert, where: str) -> str:
    """What fires where (and its summary), how it was classified and why."""
    others = len(evidence) - 1
    more = f" with {others:,} other alert{'s' if others > 1 else ''}" if others else ""
    held = [_held_back(e.alert) for e in evidence if e.alert is not head and e.alert.suppressed]
    if held:
        more += f" ({len(held)} {held[0] if len(set(held)) == 1 else 'suppressed'})"
    state = f" ({_held_back(head)})" if head.suppressed else ""
    summary = _summary(head)
    signals = finding.signals or ", ".join([rule.id for rule in finding.rules[:3]])
    notes = "".join([f"; {note}" for note in finding.notes]) if finding.notes else ""
    return (
        f"{head.name or 'An unnamed alert'} is firing{state} on {where}{more}"
        f"{': ' if summary else ''}{summary}. Classified as {_TEXT[finding.issue_type]} "
        f"({signals or 'no known signal matched'}), severity {_TEXT[finding.severity]}{notes}."
    )


def recommend(table: RuleTable, finding: Finding, head: Alert, where: str) -> list[str]:
    """2-5 steps: runbook, situation, rule-specific, then by issue type."""
    runbook = head.annotations.get("runbook_url") or head.annotations.get("runbook")
    steps = [f"Follow the runbook: {runbook}"] if runbook else []
    values: dict[str, str] | None = None
    for step in _candidates(table, finding):
        if "{" in step:
            values = values or _placeholders(head, where)
            try:  # noqa: SIM105 - contextlib.suppress is a context manager per step
                step = step.format_map(values)
            except (KeyError, ValueError, IndexError, AttributeError):
                pass  # an unknown placeholder: show the text as written
        if step not in steps:
            steps.append(step)
            if len(steps) == 5:
                break
    return steps


def steps_by_type(
    actions: Mapping[str, Mapping[str, Sequence[str]]],
) -> dict[tuple[bool, IssueType], tuple[str, ...]]:
    """Per (managed, issue type): the step texts of the issue type, then of `unknown`."""
    generic, managed = actions.get("generic", {}), actions.get("managed", {})
    return {
        (is_managed, t): _unique(
            [*(managed if is_managed else generic).get(t, ()), *generic.get("unknown", ())]
        )
        for is_managed in (False, True)
        for t in IssueType
    }


def resolved_verdict(notification: Notification) -> Verdict:
    """The verdict on a notification with no firing alert left."""
    names = list(dict.fromkeys(a.name or "an unnamed alert" for a in notification.alerts))
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    verb = "is" if len(names) == 1 else "are"
    place = location(notification.alerts[0].labels)
    return Verdict(
        issue_detected=False,
        severity=Severity.INFO,
        issue_type=IssueType.UNKNOWN,
        description=f"Resolved: {shown} on {place} {verb} no longer firing; nothing to do.",
        recommended_actions=[
            "No action needed now.",
            "If it keeps firing and resolving, look at the alert's threshold and `for` duration.",
        ],
        proposed_action="none",
        confidence=0.95,
        requires_immediate_action=False,
    )


def _held_back(alert: Alert) -> str:
    """How Alertmanager holds a suppressed alert back: silenced, inhibited or suppressed."""
    if alert.silenced_by:
        return "silenced"
    return "inhibited" if alert.inhibited_by else "suppressed"


def _summary(alert: Alert) -> str:
    text = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    text = _SPACES.sub(" ", text).strip() if "  " in text or "\n" in text else text.strip()
    text = text.rstrip(".")
    return text if len(text) <= 200 else text[:197].rstrip() + "..."


def _candidates(table: RuleTable, finding: Finding) -> tuple[str, ...]:
    """Step texts to choose from, in order (placeholders not filled in yet)."""
    by_type = table.type_steps[finding.managed, finding.issue_type]
    restart_loop = finding.issue_type is AVAILABILITY and not finding.restartable
    if not (restart_loop or finding.situations) and table.rules_with_steps.isdisjoint(
        finding.ranked
    ):
        return by_type  # most findings: nothing but the issue type's steps
    situations = table.actions.get("situations", {})
    keys = ["restart_loop", *finding.situations] if restart_loop else finding.situations
    candidates = [step for key in keys for step in situations.get(key, ())]
    candidates += [step for rule in finding.rules for step in rule.recommended_actions]
    return _unique([*candidates, *by_type])


def _unique(steps: Iterable[str]) -> tuple[str, ...]:
    """Without repeats: a repeated text would be filled in the same way and skipped."""
    return tuple(dict.fromkeys(steps))


def _placeholders(alert: Alert, where: str) -> dict[str, str]:
    """Values for {alertname} {instance} {job} {service} {where} in action texts."""
    labels = alert.labels
    service = labels.get("service") or labels.get("job") or "the service"
    return {
        "alertname": alert.name or "the alert",
        "instance": labels.get("instance") or "the instance",
        "job": labels.get("job") or service,
        "service": service,
        "where": where,
    }
