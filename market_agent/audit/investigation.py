"""`investigation_step` audit records: one per tool call an investigating LLM made.

A step links to its analysis (`analysis_id`, `notification_id`), says which tool was
called with which arguments, and keeps the (redacted, truncated) result the model was
given, or the error. `history show ID` finds them by analysis or notification id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from market_agent.audit.query import load_record, reverse_lines
from market_agent.errors import InputError

STEP_KIND = "investigation_step"
_STEP_NEEDLE = b'"kind":"investigation_step"'
MIN_ID_CHARS = 6


@dataclass(frozen=True, slots=True)
class Investigation:
    """The steps of one analysis's investigation (oldest first) and the analysis record."""

    analysis_id: str
    steps: list[tuple[bytes, dict[str, Any]]]
    analysis: tuple[bytes, dict[str, Any]] | None


def step_fields(
    *,
    analysis_id: str | None,
    notification_id: str | None,
    alertnames: tuple[str, ...],
    step: int,
    tool: str,
    arguments: Mapping[str, Any],
    result: str,
    elapsed_ms: float,
    error: str | None,
) -> dict[str, Any]:
    """The fields of one step record (the audit log redacts them when it writes)."""
    return {
        "analysis_id": analysis_id,
        "notification_id": notification_id,
        "alertnames": list(alertnames),
        "step": step,
        "tool": tool,
        "arguments": dict(arguments),
        "result": result,
        "elapsed_ms": elapsed_ms,
        "error": error,
    }


def find_investigation(paths: list[Path], ident: str) -> Investigation | None:
    """The investigation of the analysis (or notification) `ident` names, a unique prefix
    of at least 6 characters; None when no step links to it (or `ident` is shorter)."""
    if len(ident) < MIN_ID_CHARS:
        return None
    steps: list[tuple[bytes, dict[str, Any]]] = []
    matched: set[str] = set()
    for line in reverse_lines(paths, needles=(ident.encode(),)):
        record = load_record(line) if _STEP_NEEDLE in line else None
        named = _named_by(record, ident) if record is not None else None
        if record is None or named is None:
            continue
        matched.add(named)
        if len(matched) > 1:
            raise InputError(f"id {ident!r} is ambiguous: give more characters")
        steps.append((line, record))
    if not steps:
        return None
    # A notification analysed twice (listen after a crash): the newest analysis.
    analysis_id = str(steps[0][1].get("analysis_id"))
    mine = [step for step in reversed(steps) if step[1].get("analysis_id") == analysis_id]
    return Investigation(analysis_id, mine, _analysis_record(paths, analysis_id))


def _named_by(record: dict[str, Any], ident: str) -> str | None:
    """The analysis or notification id of `record` that starts with `ident`."""
    for key in ("analysis_id", "notification_id"):
        value = record.get(key)
        if isinstance(value, str) and value.startswith(ident):
            return value
    return None


def _analysis_record(paths: list[Path], analysis_id: str) -> tuple[bytes, dict[str, Any]] | None:
    needle = b'"id":"' + analysis_id.encode() + b'"'
    for line in reverse_lines(paths, needles=(needle,)):
        if b'"kind":"analysis"' not in line:
            continue
        record = load_record(line)
        if record is not None and record.get("id") == analysis_id:
            return line, record
    return None
