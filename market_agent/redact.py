"""Redact obvious secrets from alert text before it is logged or sent to an LLM."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic_core import SchemaValidator, ValidationError, core_schema

REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    r"|credential|auth(orization)?|session[_-]?id|cookie)",
    re.IGNORECASE,
)
#: (substrings that must appear in the lower-cased text, pattern, replacement).
#: The substring pre-check keeps ordinary alert text off the regex engine.
_RULES: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...] = (
    # Authorization: Bearer xxx / Basic xxx
    (
        ("bearer", "basic", "token"),
        re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE),
        r"\1 " + REDACTED,
    ),
    # key=value / key: value where the key names a secret
    (
        ("pass", "pwd", "secret", "token", "key", "credential"),
        re.compile(
            r"(?P<key>(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
            r"|private[_-]?key|credential)s?[\w.-]*)"
            r"(?P<sep>\"?\s*[:=]\s*\"?)(?P<value>[^\s\"',;&]+)",
            re.IGNORECASE,
        ),
        r"\g<key>\g<sep>" + REDACTED,
    ),
    # scheme://user:password@host
    (
        ("://",),
        re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@", re.IGNORECASE),
        r"\1" + REDACTED + "@",
    ),
    # Well-known token formats
    (("sk-",), re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), REDACTED),
    (
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
        re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
        REDACTED,
    ),
    (("xox",), re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), REDACTED),
    (("akia", "asia"), re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    (
        ("eyj",),
        re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
        REDACTED,
    ),
    (
        ("-----begin",),
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*KEY-----|$)"),
        REDACTED,
    ),
)


_ALL_TRIGGERS = tuple(dict.fromkeys(t for triggers, _, _ in _RULES for t in triggers))

#: For `may_hold_secrets`: one case-insensitive search for what every ASCII text that a
#: pattern of `_RULES` (or a key that `_SECRET_KEY`) matches contains. Narrower than
#: the per-string triggers above: "key" and "://" are in every notification (groupKey,
#: generatorURL), while the patterns need "api_key" or the like, or an "@" after the
#: "://". Rust's regex engine (pydantic-core's) scans a payload in a few microseconds,
#: where Python's `re` or thirty `in` tests take ten times as long.
_PAYLOAD_TRIGGERS = SchemaValidator(
    core_schema.str_schema(
        pattern=(
            r"(?i)bearer|basic|token|pass|pwd|secret|credential|api[_-]?key|access[_-]?key"
            r"|private[_-]?key|@|sk-|gh[pousr]_|xox|akia|asia|eyj|-----begin|auth|session"
            r"|cookie"
        ),
        regex_engine="rust-regex",
    )
)


def redact_text(text: str) -> str:
    """`text` with obvious secrets replaced by `[REDACTED]`."""
    if len(text) < 8:
        return text
    if len(text) <= 512:  # label values repeat across alerts and notifications
        return _redact_short(text)
    return _redact(text)


def _redact(text: str) -> str:
    low = text.lower()
    for trigger in _ALL_TRIGGERS:
        if trigger in low:
            break
    else:
        return text
    for triggers, pattern, replacement in _RULES:
        for trigger in triggers:
            if trigger in low:
                text = pattern.sub(replacement, text)
                break
    return text


_redact_short = functools.lru_cache(maxsize=8192)(_redact)


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def redact_labels(values: Mapping[str, str]) -> dict[str, str]:
    """Redact values under secret-looking keys entirely, and secrets inside the rest."""
    return {
        key: REDACTED if _is_secret_key(key) else redact_text(value)
        for key, value in values.items()
    }


def may_hold_secrets(value: Any) -> bool:
    """False only when `redact_payload(value)` certainly equals `value`.

    One serialisation and one search, instead of a walk over every string: most alert
    payloads hold no secret, and for them this is several times quicker.
    """
    try:
        text = orjson.dumps(value)
    except TypeError:  # not plain JSON: let the walk decide
        return True
    if not text.isascii():  # re.IGNORECASE folds some non-ASCII letters to ASCII ones
        return True
    try:
        _PAYLOAD_TRIGGERS.validate_python(text.decode("ascii"))
    except ValidationError:  # no match: no trigger anywhere
        return False
    return True


def redact_payload(value: Any) -> Any:
    """Redact a decoded JSON payload (notification) recursively."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact_payload(item) for item in value]
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(item, str) and _is_secret_key(str(key))
            else redact_payload(item)
            for key, item in value.items()
        }
    return value
