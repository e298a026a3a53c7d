from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from market_agent.redact import (
    REDACTED,
    may_hold_secrets,
    redact_labels,
    redact_payload,
    redact_text,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "alerts"

SECRETS = pytest.mark.parametrize(
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


@SECRETS
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


# The quick pre-check of whole payloads (`may_hold_secrets`): it may say yes in vain,
# never no where the walk would redact something.


@SECRETS
def test_a_payload_with_a_secret_is_never_waved_through(text: str, secret: str) -> None:
    assert may_hold_secrets({"alerts": [{"annotations": {"description": text}}]})
    assert may_hold_secrets({"alerts": [{"annotations": {"description": text.upper()}}]})


@pytest.mark.parametrize(
    "key", ["db_password", "api-token", "X-Auth", "SessionId", "cookie", "private_key", "PWD"]
)
def test_a_payload_with_a_secret_looking_key_is_never_waved_through(key: str) -> None:
    assert may_hold_secrets({"labels": {key: "value"}})


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_ordinary_notifications_are_waved_through(name: str) -> None:
    """The point of the pre-check: URLs and groupKey alone do not trigger the walk."""
    payload = json.loads((EXAMPLES / name).read_text())
    assert may_hold_secrets(payload) is (redact_payload(payload) != payload)


@pytest.mark.parametrize(
    "value",
    [
        {"description": "caf\u00e9 at 3 a.m."},  # not ASCII: the walk decides
        {"labels": {"k": "\u212aey"}},  # the Kelvin sign folds to "k" under IGNORECASE
        {1: "not a JSON key"},
        {"n": 2**70},
        {"set": {1, 2}},
    ],
)
def test_what_the_pre_check_cannot_judge_goes_to_the_walk(value: Any) -> None:
    assert may_hold_secrets(value)


_FRAGMENTS = [
    *("Bearer ", "basic ", "Token ", "abcdefghijkl", "password", "passwd", "pwd", "secret"),
    *("api_key", "API-KEY", "apikey", "access_key", "private-key", "credentials", "=", ": "),
    *('"', "'", "\n", " ", "sk-", "0123456789abcdefghij", "ghp_", "gho_", "xoxb-", "AKIA"),
    *("ASIA", "ABCDEFGHIJKLMNOP", "eyJ", ".", "-----BEGIN RSA PRIVATE KEY-----", "postgres://"),
    *("user", ":", "@", "host", "://", "down", "latency", "groupKey", "http://x/graph?g0.expr="),
    *("auth", "session", "cookie", "K", "\u212a", "\u017f"),
]
_TEXT = st.lists(st.sampled_from(_FRAGMENTS), max_size=8).map("".join)
_KEYS = st.sampled_from(["alertname", "description", "summary", "db_pass", "Authorization", "x"])
_PAYLOADS = st.recursive(
    _TEXT | st.integers() | st.none(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS | _TEXT, inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(payload=_PAYLOADS)
@example(payload={"d": "postgres://user:abcdefghijkl@host"})
@example(payload={"d": "api_key=abcdefghijkl"})
def test_the_pre_check_never_skips_what_the_walk_would_redact(payload: Any) -> None:
    if not may_hold_secrets(payload):
        assert redact_payload(payload) == payload
