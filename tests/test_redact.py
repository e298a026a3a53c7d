from __future__ import annotations

import json
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from market_agent import redact
from market_agent.redact import (
    REDACTED,
    Pattern,
    compile_rules,
    has_trigger,
    is_secret_key,
    may_hold_secrets,
    redact_labels,
    redact_model,
    redact_payload,
    redact_text,
    rules,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "alerts"
RULES_DATA = tomllib.loads((ROOT / "market_agent" / "redact_rules.toml").read_text())

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB_CLASSIC = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
JWT = "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.sig_nature"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
LONG = "The predictor has been restarting in a loop. " * 12  # over 512 characters

#: Free text holding a secret: (text, the secret). The last column names the one rule
#: that alone catches the case, when one does (see `test_every_rule_is_needed`).
MUST_REDACT_TEXT = [
    ("Authorization: Bearer abc123", "abc123", None),
    ("upstream sent bearer abc123 again", "abc123", "bearer"),
    ("BEARER abcdefghijklmnop", "abcdefghijklmnop", "bearer"),
    ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", None),
    ("retried with basic dXNlcjpwdw== and failed", "dXNlcjpwdw", "basic"),
    ("Cookie: theme=dark; sid=abc123", "abc123", "cookie-header"),
    ("set-cookie: session=abc123; Path=/", "abc123", None),
    ("login failed: password=hunter2 for ops", "hunter2", "key-value"),
    ("PASSWORD=hunter2", "hunter2", "key-value"),
    ("secret: hunter2", "hunter2", "key-value"),
    ("pwd=hunt", "hunt", "key-value"),
    ("db.password = hunter2", "hunter2", "key-value"),
    ('{"api_key": "ABCDEF123456"}', "ABCDEF123456", "key-value"),
    ('{"password": "hunter 2"}', "hunter 2", "key-value"),
    ("x-api-key: k3y", "k3y", "key-value"),
    ("apikey=k3y", "k3y", "key-value"),
    ("session_id=abc123", "abc123", "key-value"),
    ("SessionId: abc123", "abc123", "key-value"),
    ("credentials=abc123", "abc123", "key-value"),
    ("credential: abc123", "abc123", "key-value"),
    ("private_key=abc123", "abc123", "key-value"),
    ("access_key=abc123", "abc123", "key-value"),
    ("url?token=xyz123&user=1", "xyz123", "key-value"),
    ("Authorization: Token abc123", "abc123", "key-value"),
    ("passwd hunter2", "hunter2", "password-word"),
    ("the db password hunter2! leaked", "hunter2", "password-word"),
    ("DSN postgres://app:s3cr3t@db:5432/x", "s3cr3t", "url-userinfo"),
    ("cache redis://:pw@host:6379 down", ":pw@", "url-userinfo"),
    (PEM, "MIIEow", "pem-private-key"),
    ("key sk-abcdefghijklmnopqrstuvwx leaked", "sk-abcdefghijklmnopqrstuvwx", "openai-key"),
    (f"pushed with {GITHUB_CLASSIC} by ci", GITHUB_CLASSIC, "github-token"),
    ("gho_abcdefghijklmnopqrstuvwxyz0123456789", "gho_abcdefghij", "github-token"),
    ("github_pat_11ABCDEFG0_abcdefghijklmnopqrstuvwxyz", "github_pat_11", "github-token"),
    ("slack xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij", "slack-token"),
    ("aws AKIAABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOP", "aws-access-key-id"),
    ("ASIAABCDEFGHIJKLMNOP", "ASIAABCDEFGHIJKLMNOP", "aws-access-key-id"),
    (f"aws {AWS_SECRET} leaked", AWS_SECRET, "aws-secret-access-key"),
    (AWS_SECRET, AWS_SECRET, "aws-secret-access-key"),
    (f"jwt {JWT}", "eyJhbGciOiJIUzI1", "jwt"),
    (LONG + " login password=hunter2 " + LONG, "hunter2", "key-value"),
    (LONG + f" pushed with {GITHUB_CLASSIC}", GITHUB_CLASSIC, "github-token"),
]

#: Free text that must come out unchanged.
MUST_KEEP_TEXT = [
    "Market Predictor 127.0.0.1:8000 is down",
    "certificate for api.example.com expires in 3 days",
    "token bucket refill rate is low",
    "p95 latency is 2.3s",
    "compass_region=eu-west-1",
    "runbook_author: alice",
    "tokens_per_second=1500 on the decoder",
    "password reset failed for 3 users",
    "basic checks passed",
    "bypass=on, passenger_count: 4",
    "deployed 3f786850e387550fdab836ed7e6dc881de23001b",  # a git commit, not an AWS key
    "see https://runbooks.example.com/market-predictor/PredictorHighErrorRate",
    "ssh://git@github.com/org/repo",
    "http://127.0.0.1:9090/graph?g0.expr=up%20%3D%3D%200&g0.tab=1",
    "sk-short",
    "",
    LONG,
]

SECRET_KEYS = [
    *("password", "db_password", "DB_PASSWORD", "dbPassword", "passwd", "pass", "passphrase"),
    *("pwd", "PWD", "secret", "client_secret", "Secrets", "token", "api-token", "accessToken"),
    *("authtoken", "auth", "X-Auth", "Authorization", "AUTHORIZATION", "cookie", "Set-Cookie"),
    *("session_id", "SessionId", "SESSIONID", "sessionid", "credential", "credentials"),
    *("private_key", "privateKey", "access_key", "AWS_SECRET_ACCESS_KEY", "api_key", "apikey"),
    *("APIKey", "x-api-key", "api_keys", "refreshtoken", "ACCESSTOKEN", "Cookies", "Passwords"),
]
PLAIN_KEYS = [
    *("compass_region", "runbook_author", "tokens_per_second", "alertname", "groupKey"),
    *("instance", "session_count", "author", "passenger", "keyspace", "monkey", "description"),
    *("input_tokens", "secretary", "cookiecutter"),
]


@pytest.mark.parametrize(("text", "secret", "rule"), MUST_REDACT_TEXT)
def test_secrets_in_text_are_redacted(text: str, secret: str, rule: str | None) -> None:
    redacted = redact_text(text)
    assert secret not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize("text", MUST_KEEP_TEXT)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("Authorization: Bearer abc123", f"Authorization: Bearer {REDACTED}"),
        ('{"api_key": "ABCDEF123456"}', f'{{"api_key": "{REDACTED}"}}'),
        ("redis://:pw@host", f"redis://:{REDACTED}@host"),
        ("Cookie: a=1; b=2", f"Cookie: {REDACTED}"),
        ("compass=north password=x tokens_per_second=5", f"compass=north password={REDACTED} "),
    ],
)
def test_only_the_secret_goes(text: str, redacted: str) -> None:
    assert redact_text(text).startswith(redacted)


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_values_under_secret_keys_are_hidden_whole(key: str) -> None:
    labels = {"alertname": "X", key: "plain value", "instance": "a:1"}
    assert redact_labels(labels) == {"alertname": "X", key: REDACTED, "instance": "a:1"}
    assert redact_payload({"labels": labels})["labels"][key] == REDACTED


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_values_under_other_keys_are_kept(key: str) -> None:
    assert not is_secret_key(key)
    assert redact_labels({key: "eu-west-1"}) == {key: "eu-west-1"}
    assert redact_text(f"{key}=eu-west-1") == f"{key}=eu-west-1"


def test_label_values_are_searched_for_secrets_too() -> None:
    labels = {"dsn": "postgres://app:s3cr3t@db/x"}
    assert redact_labels(labels) == {"dsn": f"postgres://app:{REDACTED}@db/x"}


def test_payloads_are_redacted_recursively() -> None:
    payload = {
        "alerts": [
            {
                "labels": {"secret": "s", "severity": "critical", "count": 3},
                "annotations": {"d": "Bearer abc", "nested": [{"pwd": "x"}, ["token=abc123"]]},
                "auth": {"user": "u", "value": "hunter2"},
                "token_count": 5,
                "session_id": None,
            }
        ]
    }
    assert redact_payload(payload) == {
        "alerts": [
            {
                "labels": {"secret": REDACTED, "severity": "critical", "count": 3},
                "annotations": {
                    "d": f"Bearer {REDACTED}",
                    "nested": [{"pwd": REDACTED}, [f"token={REDACTED}"]],
                },
                "auth": REDACTED,
                "token_count": 5,
                "session_id": None,
            }
        ]
    }


def test_long_texts_are_redacted_without_filling_the_memo() -> None:
    """Label values repeat, so short texts are memoised; long ones would fill memory."""
    limit = 512
    short = "password=hunter2 and more".ljust(limit, "!")
    long = short + "!"
    for text in (short, long):
        before = redact._redact_short.cache_info().currsize
        assert redact_text(text) == text.replace("hunter2", REDACTED)
        grew = redact._redact_short.cache_info().currsize - before
        assert grew == (1 if text is short else 0)


class Quote(BaseModel):
    at: datetime
    text: str
    tags: list[str]


def test_models_are_redacted_field_by_field() -> None:
    at = datetime(2026, 11, 17, 9, 6, tzinfo=UTC)
    quote = Quote(at=at, text="login password=hunter2", tags=["token=abc123", "ok"])
    assert redact_model(quote) == Quote(
        at=at, text=f"login password={REDACTED}", tags=[f"token={REDACTED}", "ok"]
    )


def test_a_model_without_secrets_is_kept_as_it_is() -> None:
    quote = Quote(at=datetime(2026, 11, 17, tzinfo=UTC), text="Predictor down", tags=[])
    assert redact_model(quote) is quote


def test_text_without_a_trigger_is_known_to_be_safe() -> None:
    assert has_trigger("Market Predictor 127.0.0.1:8000 is down") is False
    assert has_trigger("passwd") is True


# The table exercises every rule of redact_rules.toml: a rule that the table does not
# need, or whose trigger misses what it redacts, is a test failure.


def _apply_all_but(skipped: Pattern, text: str) -> str:
    for pattern in rules().patterns:
        if pattern is not skipped:
            text = pattern.apply(text)
    return text


@pytest.mark.parametrize("pattern", rules().patterns, ids=lambda pattern: pattern.name)
def test_every_rule_is_needed(pattern: Pattern) -> None:
    """Each rule alone catches some must-redact case, so dropping it fails a test."""
    sole = [(text, secret) for text, secret, rule in MUST_REDACT_TEXT if rule == pattern.name]
    assert sole, f"no must-redact case for {pattern.name}"
    for text, secret in sole:
        assert secret in _apply_all_but(pattern, text), f"{text!r} is caught by another rule"


@pytest.mark.parametrize("word", RULES_DATA["keys"]["words"])
def test_every_key_word_is_needed(word: str) -> None:
    """Each `[keys]` word alone makes some secret key secret."""
    words = [other for other in RULES_DATA["keys"]["words"] if other != word]
    fewer = compile_rules({**RULES_DATA, "keys": {"words": words}})
    assert not all(fewer.names_secret(key) for key in SECRET_KEYS)


def test_each_case_names_a_rule_that_exists() -> None:
    names = {pattern.name for pattern in rules().patterns}
    assert {rule for _, _, rule in MUST_REDACT_TEXT} - {None} <= names


@pytest.mark.parametrize("pattern", rules().patterns, ids=lambda pattern: pattern.name)
@pytest.mark.parametrize(("text", "secret", "rule"), MUST_REDACT_TEXT)
def test_a_rule_changes_only_text_its_trigger_matches(
    pattern: Pattern, text: str, secret: str, rule: str | None
) -> None:
    if pattern.apply(text) != text:
        assert re.search(pattern.trigger, text, re.IGNORECASE)
        assert has_trigger(text)


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_every_secret_key_has_a_trigger(key: str) -> None:
    assert has_trigger(key)


# The quick pre-check of whole payloads (`may_hold_secrets`): it may say yes in vain,
# never no where the walk would redact something.


@pytest.mark.parametrize(("text", "secret", "rule"), MUST_REDACT_TEXT)
def test_a_payload_with_a_secret_is_never_waved_through(
    text: str, secret: str, rule: str | None
) -> None:
    assert may_hold_secrets({"alerts": [{"annotations": {"description": text}}]})
    assert may_hold_secrets({"alerts": [{"annotations": {"description": text.upper()}}]})


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_a_payload_with_a_secret_key_is_never_waved_through(key: str) -> None:
    assert may_hold_secrets({"labels": {key: "value"}})


@pytest.mark.parametrize("text", ["Market Predictor is down", LONG])
def test_a_payload_without_a_trigger_is_waved_through(text: str) -> None:
    assert not may_hold_secrets({"alerts": [{"annotations": {"description": text}}]})


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_ordinary_notifications_are_waved_through(name: str) -> None:
    """The point of the pre-check: URLs and groupKey alone do not trigger the walk."""
    payload = json.loads((EXAMPLES / name).read_text())
    assert not may_hold_secrets(payload)
    assert redact_payload(payload) == payload


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


@pytest.mark.parametrize(
    "text", ["passwd hunter2 \u00e9t\u00e9", "caf\u00e9 password=hunter2", "\u212a ghp_" + "a" * 36]
)
def test_non_ascii_text_is_redacted_too(text: str) -> None:
    assert redact_text(text).count(REDACTED) == 1


_FRAGMENTS = [
    *("Bearer ", "basic ", "Token ", "abcdefghijkl", "password", "passwd", "pwd", "secret"),
    *("api_key", "API-KEY", "apikey", "apiKey", "access_key", "private-key", "credentials"),
    *("=", ": ", '"', "'", "\n", " ", "sk-", "0123456789abcdefghij", "ghp_", "gho_", "xoxb-"),
    *("AKIA", "ASIA", "ABCDEFGHIJKLMNOP", "eyJ", ".", "-----BEGIN RSA PRIVATE KEY-----"),
    *("postgres://", "user", ":", "@", "host", "://", "down", "latency", "groupKey"),
    *("http://x/graph?g0.expr=", "auth", "session", "SessionId", "cookie", "Set-Cookie: "),
    *("K", "\u212a", "\u017f", "github_pat_", "hunter2", "dXNlcjpwdw==", "compass", "Id"),
    *("tokens_per_second", AWS_SECRET[:20], AWS_SECRET[20:], "/", "+", "_", "-"),
]
_TEXT = st.lists(st.sampled_from(_FRAGMENTS), max_size=8).map("".join)
_KEYS = st.sampled_from(
    ["alertname", "description", "summary", "db_pass", "Authorization", "x", "sessionId"]
)
_PAYLOADS = st.recursive(
    _TEXT | st.integers() | st.none(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS | _TEXT, inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(payload=_PAYLOADS)
@example(payload={"d": "postgres://user:abcdefghijkl@host"})
@example(payload={"d": "api_key=abcdefghijkl"})
@example(payload={"d": AWS_SECRET})
@example(payload={"apiKey": ["x"]})
def test_the_pre_check_never_skips_what_the_walk_would_redact(payload: Any) -> None:
    if not may_hold_secrets(payload):
        assert redact_payload(payload) == payload
