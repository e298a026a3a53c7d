"""Escalation notifiers: JSON webhook and Slack-compatible, with retries; recorded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from pytest_httpx import HTTPXMock

from market_agent.actions.notifiers import (
    OUTCOMES,
    REASONS,
    Escalator,
    SlackNotifier,
    WebhookNotifier,
    build_notifiers,
)
from market_agent.audit import AuditLog
from market_agent.settings import NotifierSettings

URL = "https://hooks.example/T000/B000/secretpart"


def settings(**fields: object) -> NotifierSettings:
    return NotifierSettings.model_validate({"url": URL, "backoff": 0, **fields})


EVENT = {
    "type": "market-agent.escalation",
    "reason": "action_failed",
    "message": "restart failed (verify: /health not healthy)",
    "alertnames": ["PredictorDown"],
    "action_id": "abc123",
    "description": "<!channel> click <http://evil|here> & run",
}


def test_webhook_retries_server_errors_then_succeeds(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=URL, status_code=503)
    httpx_mock.add_exception(httpx.ConnectError("refused"), url=URL)
    httpx_mock.add_response(url=URL, status_code=200)
    delivery = WebhookNotifier("oncall", settings(attempts=3)).send(EVENT)
    assert delivery.ok and delivery.attempts == 3
    bodies = [json.loads(r.content) for r in httpx_mock.get_requests()]
    assert bodies == [EVENT] * 3


def test_webhook_does_not_retry_client_errors(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=URL, status_code=400)
    delivery = WebhookNotifier("oncall", settings(attempts=3)).send(EVENT)
    assert not delivery.ok
    assert delivery.attempts == 1
    assert delivery.error == "HTTP 400"


def test_webhook_gives_up_after_its_attempts(httpx_mock: HTTPXMock) -> None:
    for _ in range(2):
        httpx_mock.add_response(url=URL, status_code=500)
    delivery = WebhookNotifier("oncall", settings(attempts=2)).send(EVENT)
    assert not delivery.ok and delivery.attempts == 2


def test_slack_body_is_text_with_untrusted_text_escaped(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=URL)
    assert SlackNotifier("slack", settings(type="slack")).send(EVENT).ok
    body = json.loads(httpx_mock.get_request().content)  # type: ignore[union-attr]
    assert set(body) == {"text"}
    assert "PredictorDown" in body["text"]
    assert "market-agent history show abc123" in body["text"]
    assert "<!channel>" not in body["text"]
    assert "&lt;!channel&gt;" in body["text"]


def test_escalation_is_recorded_without_the_secret_url(
    tmp_path: Path, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=URL)
    audit = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    notifiers = build_notifiers({"chat": settings(type="slack")})
    record = Escalator(notifiers, audit).escalate(
        "guard_blocked", "restart was not run", action="restart", alertnames=["PredictorDown"]
    )
    assert record["outcome"] == "sent"
    text = (tmp_path / "audit.jsonl").read_text()
    assert "secretpart" not in text
    stored = json.loads(text)
    assert stored["kind"] == "escalation"
    assert stored["deliveries"] == [
        {"notifier": "chat", "ok": True, "attempts": 1, "status_code": 200, "error": None}
    ]


def test_escalation_without_notifiers_is_still_recorded(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    record = Escalator([], audit).escalate("analysis_proposed", "a human is needed")
    assert record["outcome"] == "no_notifiers"
    assert json.loads((tmp_path / "audit.jsonl").read_text())["reason"] == "analysis_proposed"


def test_notifier_url_is_secret_in_settings() -> None:
    assert URL not in repr(settings())
    with pytest.raises(ValueError, match="type"):
        NotifierSettings.model_validate({"url": URL, "type": "pagerduty"})


def test_escalation_reaching_nobody_is_a_warning_naming_the_alerts(caplog) -> None:
    hostile = 'Evil"\nWARNING forged' + "x" * 500
    Escalator([], None).escalate("analysis_proposed", "a human", alertnames=[hostile, "B"])
    (line,) = [r for r in caplog.records if r.levelname == "WARNING"]
    message = line.getMessage()
    assert "reached nobody" in message and "analysis_proposed" in message
    assert "\n" not in message  # alert text is JSON-quoted: it cannot forge log lines
    assert len(message) < 400  # and each name is cut


def test_escalation_reasons_and_outcomes_are_the_documented_ones() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    reasons_paragraph = readme.split("They are audit records\n(`escalation`) too")[1][:600]
    documented = set(re.findall(r"`([a-z_]+)`", reasons_paragraph))
    assert set(REASONS) <= documented
    assert set(OUTCOMES) <= documented
