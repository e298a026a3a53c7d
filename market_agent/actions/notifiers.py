"""Escalation: tell a human, through every configured notifier, with retries.

Notifiers: a generic JSON webhook (the escalation event as the body) and a
Slack-compatible incoming webhook (``{"text": ...}``). Each escalation is an
``escalation`` audit record naming the notifiers and how delivery went; notifier
URLs are secrets and never appear in records or messages.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from market_agent.models import new_id
from market_agent.redact import redact_text

if TYPE_CHECKING:
    from market_agent.audit import AuditLog
    from market_agent.settings import NotifierSettings

log = logging.getLogger("market_agent.actions")
#: Alert names quoted in one log line, each cut to MAX_LOGGED_NAME characters.
MAX_LOGGED_NAMES = 5
MAX_LOGGED_NAME = 120

#: Why an escalation happened (the `reason` field of records and events).
REASONS = (
    "action_failed",  # the action failed verification and was not recovered by a rollback
    "rolled_back",  # the action failed verification; the rollback was verified
    "guard_blocked",  # a guard blocked an action an immediate-action analysis asked for
    "alertmanager_unreachable",  # the re-check before acting was impossible
    "prometheus_unreachable",  # the action's verify_query could not be asked before acting
    "analysis_proposed",  # the analysis itself proposed `escalate`
    "not_configured",  # the analysis asked for an action that is not configured
    "action_interrupted",  # found at start-up: a run's process died before its result
)
#: How delivery went (the `outcome` field of escalation records).
OUTCOMES = (
    "sent",  # every notifier took it
    "partial",  # some did
    "failed",  # none did, after retries
    "no_notifiers",  # none is configured: the escalation is only in the audit log
)


def quoted_names(names: Sequence[str]) -> str:
    """Alert names for a log line: JSON-quoted (alert text is untrusted) and bounded."""
    if not names:
        return "(no alert)"
    shown = [_clip(name) for name in names[:MAX_LOGGED_NAMES]]
    more = len(names) - len(shown)
    return json.dumps(shown) + (f" and {more} more" if more else "")


def _clip(name: str) -> str:
    return name if len(name) <= MAX_LOGGED_NAME else name[:MAX_LOGGED_NAME] + "..."


@dataclass(frozen=True, slots=True)
class Delivery:
    notifier: str
    ok: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "notifier": self.notifier,
            "ok": self.ok,
            "attempts": self.attempts,
            "status_code": self.status_code,
            "error": self.error,
        }


class Notifier(Protocol):
    name: str

    def send(self, event: Mapping[str, Any]) -> Delivery: ...


class _HttpNotifier:
    """POSTs a JSON body; retries connection errors, timeouts, 429 and 5xx."""

    def __init__(
        self, name: str, settings: NotifierSettings, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.name = name
        self.settings = settings
        self.sleep = sleep

    def body(self, event: Mapping[str, Any]) -> dict[str, Any]:
        return dict(event)

    def send(self, event: Mapping[str, Any]) -> Delivery:
        import httpx

        settings = self.settings
        headers = dict(settings.headers)
        if settings.bearer_token is not None:
            headers["Authorization"] = f"Bearer {settings.bearer_token.get_secret_value()}"
        status, error = None, None
        for attempt in range(1, settings.attempts + 1):
            try:
                response = httpx.post(
                    settings.url.get_secret_value(),
                    json=self.body(event),
                    headers=headers,
                    timeout=settings.timeout,
                    verify=settings.verify_tls,
                )
            except httpx.HTTPError as exc:
                status, error = None, f"request failed ({type(exc).__name__})"
            else:
                status = response.status_code
                if response.is_success:
                    return Delivery(self.name, True, attempt, status)
                error = f"HTTP {status}"
                if status != 429 and status < 500:
                    return Delivery(self.name, False, attempt, status, error)
            if attempt < settings.attempts:
                self.sleep(settings.backoff * 2 ** (attempt - 1))
        return Delivery(self.name, False, settings.attempts, status, error)


class WebhookNotifier(_HttpNotifier):
    """The escalation event itself as the JSON body."""


class SlackNotifier(_HttpNotifier):
    """A Slack-compatible incoming webhook: `{"text": ...}`."""

    def body(self, event: Mapping[str, Any]) -> dict[str, Any]:
        return {"text": slack_text(event)}


def slack_text(event: Mapping[str, Any]) -> str:
    alerts = ", ".join(event.get("alertnames") or []) or "no alert"
    lines = [f":rotating_light: market-agent escalation ({event.get('reason')}): {alerts}"]
    lines.append(str(event.get("message", "")))
    if event.get("description"):
        lines.append(f"Analysis: {event['description']}")
    if event.get("action_id"):
        lines.append(f"Details: market-agent history show {event['action_id']}")
    return "\n".join(_slack_escape(line) for line in lines)


def _slack_escape(text: str) -> str:
    # Alert text is untrusted: no <!channel> pings, no disguised links.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_notifiers(settings: Mapping[str, NotifierSettings]) -> list[Notifier]:
    kinds = {"webhook": WebhookNotifier, "slack": SlackNotifier}
    return [kinds[spec.type](name, spec) for name, spec in settings.items()]


class Escalator:
    """Sends an escalation to every notifier and records it in the audit log."""

    def __init__(self, notifiers: Sequence[Notifier], audit: AuditLog | None) -> None:
        self.notifiers = list(notifiers)
        self.audit = audit

    def escalate(
        self,
        reason: str,
        message: str,
        *,
        action: str | None = None,
        action_id: str | None = None,
        analysis_id: str | None = None,
        notification_id: str | None = None,
        alertnames: Sequence[str] = (),
        severity: str | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Notify and record; returns the escalation record's fields."""
        event: dict[str, Any] = {
            "type": "market-agent.escalation",
            "escalation_id": new_id(),
            "reason": reason,
            "message": redact_text(message),
            "action": action,
            "action_id": action_id,
            "analysis_id": analysis_id,
            "notification_id": notification_id,
            "alertnames": list(alertnames),
            "severity": severity,
            "description": redact_text(description) if description else None,
        }
        deliveries = [notifier.send(event) for notifier in self.notifiers]
        if not deliveries:
            outcome = "no_notifiers"
        elif all(d.ok for d in deliveries):
            outcome = "sent"
        elif any(d.ok for d in deliveries):
            outcome = "partial"
        else:
            outcome = "failed"
        _log_delivery(reason, outcome, alertnames)
        fields = {k: v for k, v in event.items() if k != "type"}
        fields["outcome"] = outcome
        fields["deliveries"] = [d.to_json() for d in deliveries]
        if self.audit is not None:
            self.audit.append("escalation", fields)
        return fields


def _log_delivery(reason: str, outcome: str, alertnames: Sequence[str]) -> None:
    names = quoted_names(alertnames)
    if outcome == "no_notifiers":
        log.warning(
            "escalation (%s) for %s reached nobody: no notifiers are configured "
            "(add a [notifiers.NAME] table); it is only in the audit log",
            reason,
            names,
        )
    elif outcome != "sent":
        log.warning("escalation (%s) for %s: delivery %s", reason, names, outcome)
    else:
        log.info("escalation (%s) for %s sent", reason, names)
