"""What no model may decide: one function merges the LLM's verdict with the rules'.

The rules (a table in the README, "LLM policy"):

- resolved notification: issue_detected false, severity info, proposed_action none,
  requires_immediate_action false;
- firing: issue_detected true; severity = max(model, the label's floor, the rules');
- proposed_action: an action allowed for these alerts, else the rules' (else none);
- firing and critical: requires_immediate_action true; proposed_action `none` becomes
  the rules' proposal, else escalate;
- an action the rules' evidence vetoes (a restart when the logs show it will not help:
  out of memory, a feed vendor down) becomes the rules' proposal, else escalate.

Every change is returned as a `PolicyOverride` (field, model, final, rule).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from market_agent.analysis.severity import severity_from_label
from market_agent.labels import is_managed
from market_agent.models import Alert, Notification, PolicyOverride, Severity, Verdict


@dataclass(frozen=True, slots=True)
class ActionInfo:
    """One action an analyzer may propose: what it does, and for which alerts."""

    name: str
    #: One line for the prompt: backend, target, verification.
    does: str
    #: Alert names and label matchers it is allowed for; both empty: the managed service.
    alerts: tuple[str, ...] = ()
    matchers: tuple[Mapping[str, str], ...] = ()
    #: Allowed for any alert (escalate, none).
    universal: bool = False


@dataclass(frozen=True, slots=True)
class ActionCatalog:
    """The actions known to this process, and the managed service's matchers."""

    actions: tuple[ActionInfo, ...]
    managed_service: Sequence[Mapping[str, str]] = field(default_factory=tuple)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(action.name for action in self.actions)

    def allowed_for(self, notification: Notification) -> tuple[ActionInfo, ...]:
        """The actions allowed for this notification's firing alerts (`none` always)."""
        firing = notification.firing
        return tuple(a for a in self.actions if a.universal or self._fits(a, firing))

    def _fits(self, action: ActionInfo, alerts: Sequence[Alert]) -> bool:
        """The managed service, or the action's own allowlist (for automatic runs)."""
        return any(
            is_managed(alert.labels, self.managed_service)
            or alert.name in action.alerts
            or is_managed(alert.labels, action.matchers)
            for alert in alerts
        )


def apply_policy(
    notification: Notification,
    model: Verdict,
    rule: Verdict,
    allowed: Sequence[str],
    *,
    vetoed: Collection[str] = (),
) -> tuple[Verdict, list[PolicyOverride]]:
    """The final verdict, and every field the policy changed from the model's."""
    final = _final_values(notification, model, rule, allowed)
    if final["proposed_action"] in vetoed:
        fallback = rule.proposed_action
        ok = fallback in allowed and fallback not in vetoed
        final["proposed_action"] = fallback if ok else "escalate"
    overrides = [
        PolicyOverride(
            field=name,
            model=_plain(getattr(model, name)),
            final=_plain(value),
            rule=_plain(getattr(rule, name)),
        )
        for name, value in final.items()
        if value != getattr(model, name)
    ]
    if not overrides:
        return model, []
    return model.model_copy(update={o.field: final[o.field] for o in overrides}), overrides


def _final_values(
    notification: Notification, model: Verdict, rule: Verdict, allowed: Sequence[str]
) -> dict[str, Any]:
    firing = notification.firing
    if notification.status == "resolved" or not firing:
        return {
            "issue_detected": False,
            "severity": Severity.INFO,
            "proposed_action": "none",
            "requires_immediate_action": False,
        }
    floor = Severity.highest([severity_from_label(a.labels.get("severity")) for a in firing])
    severity = Severity.highest([model.severity, floor, rule.severity])
    action = model.proposed_action
    if action not in allowed:
        action = rule.proposed_action if rule.proposed_action in allowed else "none"
    critical = severity is Severity.CRITICAL
    if critical and action == "none":
        action = rule.proposed_action if rule.proposed_action in allowed else "none"
        action = "escalate" if action == "none" else action
    return {
        "issue_detected": True,
        "severity": severity,
        "proposed_action": action,
        "requires_immediate_action": model.requires_immediate_action or critical,
    }


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Severity) else value
