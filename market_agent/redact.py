"""Redact secrets from alert data before it is logged, printed or sent to an LLM.

The rules are data: `redact_rules.toml` beside this module, read once on first use.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic_core import SchemaValidator, ValidationError, core_schema

if TYPE_CHECKING:
    from pydantic import BaseModel

    Model = TypeVar("Model", bound=BaseModel)

REDACTED = "[REDACTED]"

#: Where a camelCase key changes word ("apiKey", "APIKey", "SessionId").
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@dataclass(frozen=True, slots=True)
class Pattern:
    """One `[[patterns]]` entry of `redact_rules.toml`."""

    name: str
    regex: re.Pattern[str]
    replace: str
    trigger: str
    key_group: str | None

    def apply(self, text: str) -> str:
        if self.key_group is None:
            return self.regex.sub(self.replace, text)
        return self.regex.sub(self._replace_if_secret_key, text)

    def _replace_if_secret_key(self, match: re.Match[str]) -> str:
        assert self.key_group is not None  # `apply` uses this only for patterns with one
        return match.expand(self.replace) if is_secret_key(match[self.key_group]) else match[0]


@dataclass(frozen=True, slots=True)
class Rules:
    secret_key: re.Pattern[str]
    patterns: tuple[Pattern, ...]
    #: Every trigger in one case-insensitive Rust regex: it scans a payload in a few
    #: microseconds, where Python's `re` or thirty `in` tests take ten times as long.
    triggers: SchemaValidator

    def names_secret(self, key: str) -> bool:
        """Whether a whole word of `key` is one of the `[keys]` words."""
        return self.secret_key.search(_CAMEL_HUMP.sub("_", key).lower()) is not None


@functools.cache
def rules() -> Rules:
    """The rules of `redact_rules.toml`, compiled."""
    text = resources.files("market_agent").joinpath("redact_rules.toml").read_text("utf-8")
    return compile_rules(tomllib.loads(text))


def compile_rules(data: Mapping[str, Any]) -> Rules:
    """Rules from the data of a `redact_rules.toml`."""
    words: list[str] = data["keys"]["words"]
    key_words = _alternation(words)
    patterns = tuple(
        _pattern(raw, key_words, _alternation(_fewest(words))) for raw in data["patterns"]
    )
    # Fewer alternatives, a quicker search: "pass" stands for "password" and the like.
    triggers = "|".join(
        dict.fromkeys(p for pattern in patterns for p in pattern.trigger.split("|"))
    )
    return Rules(
        secret_key=re.compile(f"(?<![a-z0-9])(?:{key_words})(?![a-z0-9])"),
        patterns=patterns,
        triggers=SchemaValidator(
            core_schema.str_schema(pattern=f"(?i){triggers}", regex_engine="rust-regex")
        ),
    )


def _alternation(words: list[str]) -> str:
    return "|".join(word.replace(" ", "[_-]?") for word in words)


def _fewest(words: list[str]) -> list[str]:
    """The words of which every key word holds one (a phrase holds each of its words)."""
    single = [word for word in words if " " not in word]
    return [
        word
        for word in words
        if not any(other != word and other in part for other in single for part in word.split())
    ]


def _pattern(raw: Mapping[str, str], key_words: str, key_triggers: str) -> Pattern:
    return Pattern(
        name=raw["name"],
        regex=re.compile(raw["regex"].replace("{key_words}", key_words)),
        replace=raw["replace"],
        trigger=raw["trigger"].replace("{key_words}", key_triggers),
        key_group=raw.get("key_group"),
    )


def has_trigger(text: str) -> bool:
    """Whether `text` holds a trigger of some rule; when False no rule changes it."""
    try:
        rules().triggers.validate_python(text)
    except ValidationError:
        return False
    return True


def redact_text(text: str) -> str:
    """`text` with secrets replaced by `[REDACTED]`."""
    if len(text) <= 512:  # label values repeat across alerts and notifications
        return _redact_short(text)
    return _redact(text)


def _redact(text: str) -> str:
    # Rust's (?i) and Python's IGNORECASE may fold non-ASCII letters differently.
    if text.isascii() and not has_trigger(text):
        return text
    for pattern in rules().patterns:
        text = pattern.apply(text)
    return text


_redact_short = functools.lru_cache(maxsize=8192)(_redact)


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether a label, annotation or JSON key names a secret (see `[keys]`)."""
    return rules().names_secret(key)


def redact_labels(values: Mapping[str, str]) -> dict[str, str]:
    """Redact values under secret keys entirely, and secrets inside the rest."""
    return {
        key: REDACTED if is_secret_key(key) else redact_text(value) for key, value in values.items()
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
    if not text.isascii():  # lower() and IGNORECASE fold some non-ASCII letters to ASCII
        return True
    return has_trigger(text.decode("ascii"))


#: What a secret key's value is replaced by REDACTED as (numbers and None are kept).
#: A tuple: isinstance with `str | list | dict` takes ten times as long.
_HIDDEN_WHOLE = (str, list, dict)


def redact_payload(value: Any) -> Any:
    """Redact a decoded JSON payload (notification) recursively."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact_payload(item) for item in value]
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(item, _HIDDEN_WHOLE) and is_secret_key(str(key))
            else redact_payload(item)
            for key, item in value.items()
        }
    return value


def redact_model(model: Model) -> Model:
    """`model` (e.g. an analysis quoting alert text) with its secrets redacted."""
    fields = model.model_dump()
    if not may_hold_secrets(fields):
        return model
    return type(model).model_validate(redact_payload(fields))
