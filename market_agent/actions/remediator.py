"""What `listen` calls after each journaled analysis: act, escalate, or do nothing.

    remediator.handle(analysis, notification)

- proposed `none`: nothing;
- proposed `escalate` (on a firing notification): an escalation;
- proposed a configured action: the guarded pipeline (`ActionRunner.run`), which in
  safety mode (the default) records the proposal as blocked and runs nothing;
- proposed an action that is not configured: recorded, escalated if immediate.

`handle` never raises: a listener must keep serving; failures are logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from market_agent.actions.notifiers import quoted_names
from market_agent.actions.runner import ActionRequest, ActionResult

if TYPE_CHECKING:
    from market_agent.actions.notifiers import Escalator
    from market_agent.actions.runner import ActionRunner
    from market_agent.models import Analysis, Notification

log = logging.getLogger("market_agent.actions")


class Remediator:
    def __init__(self, runner: ActionRunner, escalator: Escalator) -> None:
        self.runner = runner
        self.escalator = escalator

    def warm(self) -> None:
        """Read the action history now, not at the first action (see `ActionRunner.warm`)."""
        self.runner.warm()

    def handle(self, analysis: Analysis, notification: Notification) -> ActionResult | None:
        """Act on one analysis; returns the action's result when one was attempted."""
        try:
            return self._handle(analysis, notification)
        except Exception:
            log.exception("remediation failed for analysis %s", analysis.id)
            return None

    def _handle(self, analysis: Analysis, notification: Notification) -> ActionResult | None:
        action = analysis.proposed_action
        if action == "none":
            return None
        firing = notification.status == "firing" and bool(notification.firing)
        if action == "escalate":
            if firing:
                self._escalate(
                    analysis,
                    notification,
                    "analysis_proposed",
                    "the analysis proposes escalation to a human",
                )
            return None
        if action not in self.runner.settings.definitions:
            log.warning(
                "action %s proposed for %s is not configured (no [actions] table of that "
                "name): nothing runs",
                quoted_names([action]),
                quoted_names(sorted({alert.name for alert in notification.alerts})),
            )
            if firing and analysis.requires_immediate_action:
                self._escalate(
                    analysis,
                    notification,
                    "not_configured",
                    f"the analysis asks for {action!r}, which is not configured",
                )
            return None
        request = ActionRequest(action, "auto", analysis, notification)
        return self.runner.run(request)

    def _escalate(
        self, analysis: Analysis, notification: Notification, reason: str, message: str
    ) -> None:
        self.escalator.escalate(
            reason,
            message,
            analysis_id=analysis.id,
            notification_id=analysis.notification_id,
            alertnames=sorted({alert.name for alert in notification.alerts}),
            severity=analysis.severity.value,
            description=analysis.description,
        )
