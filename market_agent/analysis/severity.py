"""The one mapping from an alert's `severity` label to a `Severity`.

The words live in `rules/rules.toml` (`[severity]`), read here and nowhere else: the rule
analyzer, the floor applied to an LLM's verdict and the prompt all use this module.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Any

from market_agent.models import Severity


def parse_severity_map(raw: Mapping[str, Any]) -> dict[str, Severity]:
    """`{"critical": ["crit", "p1"], ...}` -> `{"crit": CRITICAL, "p1": CRITICAL, ...}`."""
    mapping: dict[str, Severity] = {}
    for level, words in raw.items():
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"rules.toml severity.{level}: expected a list of strings")
        for word in words:
            mapping[word.strip().lower()] = Severity(level)
    return mapping


@functools.cache
def shipped_rules() -> Mapping[str, Any]:
    """`rules/rules.toml` parsed, once per process for the rule table and the severity map
    (parsing it takes milliseconds); read-only. Raises `tomllib.TOMLDecodeError`."""
    # Not `files("market_agent.analysis.rules")`: that would import the whole rule engine.
    text = (resources.files("market_agent.analysis") / "rules" / "rules.toml").read_text("utf-8")
    return tomllib.loads(text)


@functools.cache
def severity_map() -> Mapping[str, Severity]:
    """The shipped mapping (lower-case label value -> severity)."""
    return parse_severity_map(shipped_rules().get("severity", {}))


def severity_from_label(value: str | None) -> Severity:
    """Map an alert's `severity` label, case-insensitively; unknown or missing is info."""
    return severity_map().get((value or "").strip().lower(), Severity.INFO)


def describe_severity_map() -> str:
    """The mapping as prompt text: `critical <- critical, crit, page, ...`."""
    by_level: dict[Severity, list[str]] = {}
    for word, level in severity_map().items():
        by_level.setdefault(level, []).append(word)
    lines = [f"- {level.value} <- {', '.join(words)}" for level, words in by_level.items()]
    return "\n".join([*lines, "- anything else (or no label) <- info"])
