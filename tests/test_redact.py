from __future__ import annotations

import pytest

from market_agent.redact import REDACTED, redact_labels, redact_payload, redact_text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcdefghijklmnop", "abcdefghijklmnop"),
        ("login failed: password=hunter2 for ops", "hunter2"),
        ('{"api_key": "ABCDEF123456"}', "ABCDEF123456"),
        ("DSN postgres://app:s3cr3t@db:5432/x", "s3cr3t"),
        ("key sk-abcdefghijklmnopqrstuvwx leaked", "sk-abcdefghijklmnopqrstuvwx"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123", "ghp_abcdefghijklmnopqrstuvwxyz0123"),
        ("slack xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
        ("aws AKIAABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOP"),
        ("jwt eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.sig_nature", "eyJhbGciOiJIUzI1"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "MIIEow"),
        ("url?token=xyz123&user=1", "xyz123"),
    ],
)
def test_secrets_are_redacted(text: str, secret: str) -> None:
    redacted = redact_text(text)
    assert secret not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize(
    "text",
    [
        "Market Predictor 127.0.0.1:8000 is down",
        "certificate for api.example.com expires in 3 days",
        "token bucket refill rate is low",
        "p95 latency is 2.3s",
    ],
)
def test_ordinary_alert_text_is_untouched(text: str) -> None:
    assert redact_text(text) == text


def test_label_values_under_secret_keys_are_hidden() -> None:
    labels = {"alertname": "X", "db_password": "p4ss", "api-token": "t", "instance": "a:1"}
    assert redact_labels(labels) == {
        "alertname": "X",
        "db_password": REDACTED,
        "api-token": REDACTED,
        "instance": "a:1",
    }


def test_payloads_are_redacted_recursively() -> None:
    payload = {"alerts": [{"labels": {"secret": "s"}, "annotations": {"d": "Bearer abcdefghij"}}]}
    assert redact_payload(payload) == {
        "alerts": [{"labels": {"secret": REDACTED}, "annotations": {"d": f"Bearer {REDACTED}"}}]
    }
