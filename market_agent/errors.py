"""One exception hierarchy and the documented process exit codes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Exit codes are a contract: scripts and CI smoke checks rely on them."""

    OK = 0
    #: `analyze --fail-on` threshold met; `status`: something is degraded or down.
    ALERT = 1
    #: Bad usage, configuration or input.
    USAGE = 2
    #: The audit log could not be written or read.
    AUDIT = 3
    #: A remote service failed (an endpoint unreachable when it was required).
    SERVICE = 4
    #: `restart`: refused (no approval) or blocked by a guard.
    BLOCKED = 5
    #: `restart`: the action failed verification and was rolled back.
    ROLLED_BACK = 6
    #: `restart`: the action failed and could not be rolled back; escalated.
    ACTION_FAILED = 7
    #: `history verify`: the hash chain is broken.
    TAMPERED = 8
    #: An unexpected internal error (a bug): please report it with --debug output.
    INTERNAL = 70
    #: Interrupted by the user (Ctrl-C).
    INTERRUPTED = 130


class MarketAgentError(Exception):
    """Base class: a one-line, user-facing message and an exit code."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(MarketAgentError):
    exit_code = ExitCode.USAGE


class InputError(MarketAgentError):
    """A payload could not be read or does not have the expected shape."""

    exit_code = ExitCode.USAGE


class AuditError(MarketAgentError):
    exit_code = ExitCode.AUDIT


class ServiceError(MarketAgentError):
    exit_code = ExitCode.SERVICE


#: A validation problem in the user's words: the phrase after what they typed
#: ("--watch", "llm.timeout", "alerts[0].labels"), by pydantic error type; the
#: `{...}` fields come from the error's context.
_PHRASES = {
    "greater_than_equal": "must be at least {ge}{unit}",
    "greater_than": "must be more than {gt}{unit}",
    "less_than_equal": "must be at most {le}{unit}",
    "less_than": "must be less than {lt}{unit}",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "literal_error": "must be one of: {choices}",
    "enum": "must be one of: {choices}",
    "missing": "is required",
    "extra_forbidden": "is not a known key",
    "dict_type": "must be {table}",
    "model_type": "must be {table}",
    "model_attributes_type": "must be {table}",
    "list_type": "must be {array}",
    "datetime_parsing": "must be a date and time (RFC 3339)",
    "datetime_type": "must be a date and time (RFC 3339)",
    "datetime_from_date_parsing": "must be a date and time (RFC 3339)",
}
#: Problems whose value is worth echoing: a bound or a choice (never a secret).
_ECHO_INPUT = {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}
_ECHO_INPUT |= {"literal_error", "enum"}
_NUMBER = re.compile(r"^-?[0-9][0-9_.eE+-]*$")


def describe_problem(
    error: Mapping[str, Any],
    subject: str,
    *,
    unit: str = "",
    table: str = "a table",
    array: str = "a list",
) -> str:
    """One pydantic error (`ValidationError.errors()` item) as a sentence about
    `subject`: "--watch must be at least 0.5 seconds (got 0.1)"."""
    kind = str(error.get("type", ""))
    context = dict(error.get("ctx") or {})
    if kind == "value_error":
        return f"{subject}: {context.get('error', error.get('msg', ''))}"
    if kind in ("too_short", "too_long"):
        return f"{subject} {_length_phrase(kind, context)}"
    phrase = _PHRASES.get(kind)
    if phrase is None:
        message = str(error.get("msg", "is not valid"))
        return f"{subject}: {message[:1].lower()}{message[1:]}"
    choices = ", ".join(re.findall(r"'([^']*)'", str(context.get("expected", ""))))
    context = {name: f"{v:g}" if isinstance(v, float) else v for name, v in context.items()}
    text = phrase.format(
        unit=f" {unit}" if unit else "", table=table, array=array, choices=choices, **context
    )
    return f"{subject} {text}{_echo(kind, error.get('input'))}"


def _length_phrase(kind: str, context: Mapping[str, Any]) -> str:
    if kind == "too_long":
        return f"must have at most {context.get('max_length')} items"
    least = context.get("min_length", 1)
    return "must not be empty" if least == 1 else f"must have at least {least} items"


def _echo(kind: str, value: Any) -> str:
    if kind not in _ECHO_INPUT or not isinstance(value, str | int | float):
        return ""
    shown = value if isinstance(value, str) and _NUMBER.match(value) else repr(value)
    return f" (got {shown})" if len(str(shown)) <= 40 else ""


def closest(word: str, known: Iterable[str]) -> str | None:
    """The one of `known` that `word` is a near miss of, if any ("did you mean")."""
    import difflib

    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return close[0] if close else None
