"""Redact obvious secrets from alert text before it is logged or sent to an LLM."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    r"|credential|auth(orization)?|session[_-]?id|cookie)",
    re.IGNORECASE,
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer xxx / Basic xxx
    (
        re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE),
        r"\1 " + REDACTED,
    ),
    # key=value / key: value where the key names a secret
    (
        re.compile(
            r"(?P<key>\b[\w.-]*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|apikey"
            r"|access[_-]?key|private[_-]?key|credential)s?[\w.-]*)"
            r"(?P<sep>\"?\s*[:=]\s*\"?)(?P<value>[^\s\"',;&]+)",
            re.IGNORECASE,
        ),
        r"\g<key>\g<sep>" + REDACTED,
    ),
    # scheme://user:password@host
    (
        re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@", re.IGNORECASE),
        r"\1" + REDACTED + "@",
    ),
    # Well-known token formats
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), REDACTED),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), REDACTED),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)"
        ),
        REDACTED,
    ),
)


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_labels(values: Mapping[str, str]) -> dict[str, str]:
    """Redact values under secret-looking keys entirely, and secrets inside the rest."""
    return {
        key: REDACTED if _SECRET_KEY.search(key) else redact_text(value)
        for key, value in values.items()
    }


def redact_payload(value: Any) -> Any:
    """Redact a decoded JSON payload (notification) recursively."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact_payload(item) for item in value]
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(item, str) and _SECRET_KEY.search(str(key))
            else redact_payload(item)
            for key, item in value.items()
        }
    return value
