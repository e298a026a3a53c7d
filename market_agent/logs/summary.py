"""A bounded, redacted summary of log lines: what the analysis and the model see.

Lines are grouped by signature: the message with numbers, ids, hex, UUIDs, IP
addresses and ports, times and quoted strings replaced by placeholders (a traceback
is its first line and its exception). Shape (`context["logs"]`)::

    {"source": "file", "window": {"start": "...Z", "end": "...Z"}, "lines": 812,
     "limit_reached": false, "levels": {"error": 40, "info": 772},
     "signatures": [{"signature", "level", "count", "first_seen", "last_seen",
                     "example"}],          # warning and above, most frequent first
     "frequent": [...],                   # the same for other levels (start-up banners)
     "examples": [str]}                   # the last few lines, newest last
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from market_agent.logs.base import LEVELS, Level, LogLine
from market_agent.logs.parse import at_least
from market_agent.redact import redact_text

MAX_SIGNATURES = 10
MAX_FREQUENT = 5
MAX_EXAMPLES = 3
MAX_SIGNATURE_CHARS = 240
MAX_EXAMPLE_CHARS = 400
#: What the caps above allow as JSON (indented, as in the prompt), whatever the lines:
#: quotes and backslashes double, nothing else grows (see `_printable`).
MAX_PROMPT_CHARS = 28_000

_HEX = "[0-9a-fA-F]"
_DIGIT = re.compile(r"\d")


def _has_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


def _hex_id(match: re.Match[str]) -> str:
    """A run of 6+ hex digits is an id when it mixes digits and letters."""
    text = match.group()
    return text if text.isdigit() or text.isalpha() else "<hex>"


class _Placeholder(NamedTuple):
    #: A cheap test the text passes whenever `pattern` can match (most lines skip most).
    applies: Callable[[str], bool]
    pattern: re.Pattern[str]
    replacement: str | Callable[[re.Match[str]], str]


# Applied in this order. `X(?<!\wX)` is `\bX` written so that the regex engine can
# look for X's first character quickly; no pattern ignores case (classes spell it out).
_PLACEHOLDERS: tuple[_Placeholder, ...] = (
    _Placeholder(
        lambda text: text.count("-") >= 4,
        re.compile(rf"{_HEX}(?<!\w{_HEX}){_HEX}{{7}}(?:-{_HEX}{{4}}){{3}}-{_HEX}{{12}}\b"),
        "<uuid>",
    ),
    _Placeholder(
        lambda text: text.count("-") >= 2 and text.count(":") >= 2,
        re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"),
        "<time>",
    ),
    _Placeholder(
        lambda text: text.count(":") >= 2,
        re.compile(r"\d(?<!\w\d)\d?:\d{2}:\d{2}(?:[.,]\d+)?\b"),
        "<time>",
    ),
    _Placeholder(
        lambda text: text.count(".") >= 3,
        re.compile(r"\d(?<!\w\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?::\d{1,5})?\b"),
        "<ip>",
    ),
    _Placeholder(
        lambda text: "[" in text and ":" in text,
        re.compile(r"\[[0-9a-fA-F:]*:[0-9a-fA-F:]+\](?::\d{1,5})?"),
        "<ip>",
    ),
    _Placeholder(lambda text: ":" in text, re.compile(r":(?<=[A-Za-z0-9]:)\d{2,5}\b"), ":<port>"),
    _Placeholder(
        lambda text: "0x" in text or "0X" in text,
        re.compile(r"0(?<!\w0)[xX][0-9a-fA-F]+\b"),
        "<hex>",
    ),
    _Placeholder(_has_digit, re.compile(rf"{_HEX}(?<!\w{_HEX}){_HEX}{{5,}}\b"), _hex_id),
    _Placeholder(
        lambda text: "'" in text or '"' in text,
        re.compile(r"'[^'\n]{0,200}'|\"[^\"\n]{0,200}\""),
        "<str>",
    ),
    _Placeholder(_has_digit, re.compile(r"\d(?<![A-Za-z0-9_<]\d)\d*(?:\.\d+)?"), "<n>"),
)
#: Terminal colour codes go; other control characters become U+FFFD, so that the
#: summary's size in the prompt stays near its size in characters (no \u00XX escapes).
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LEADING_LEVEL = re.compile(
    r"^\s*(?:CRITICAL|FATAL|ERROR|WARNING|WARN|INFO|DEBUG|NOTICE|TRACE)\b[:\s]*"
)


@functools.lru_cache(maxsize=4096)  # the same lines come back: a loop's traceback, a banner
def normalise(text: str) -> str:
    """One line with its variable parts replaced by placeholders."""
    for placeholder in _PLACEHOLDERS:
        if placeholder.applies(text):
            text = placeholder.pattern.sub(placeholder.replacement, text)
    return " ".join(text.split())


@functools.lru_cache(maxsize=4096)
def signature(message: str) -> str:
    """The grouping key of a record: its first line, and its last when it has several
    (a traceback's exception). Blank lines do not count."""
    lines = message.strip().splitlines()  # first and last are the non-blank ones
    if not lines:
        return ""
    first, last = lines[0].strip(), lines[-1].strip()
    head = normalise(_LEADING_LEVEL.sub("", first))
    if len(lines) > 1 and last != first:
        head += " ... " + normalise(last)
    return head[:MAX_SIGNATURE_CHARS]


@dataclass(slots=True)
class _Group:
    level: Level
    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    example: str

    def add(self, line: LogLine) -> None:
        self.count += 1
        if at_least(line.level, self.level):
            self.level = line.level
        if line.timestamp is not None:
            self.first_seen = min(self.first_seen or line.timestamp, line.timestamp)
            self.last_seen = max(self.last_seen or line.timestamp, line.timestamp)
        self.example = line.message

    def to_json(self, key: str) -> dict[str, Any]:
        return {
            "signature": _printable(redact_text(key)),
            "level": self.level,
            "count": self.count,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "example": _example(self.example),
        }


def summarize(
    lines: Sequence[LogLine],
    *,
    source: str,
    start: datetime,
    end: datetime,
    limit: int,
) -> dict[str, Any]:
    """The summary of `lines` (oldest first) read for the window `start`..`end`."""
    groups: dict[str, _Group] = {}
    levels = dict.fromkeys(LEVELS, 0)
    keys = [signature(line.message) for line in lines]
    for line, key in zip(lines, keys, strict=True):
        levels[line.level] += 1
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(line.level, 0, None, None, "")
        group.add(line)
    ranked = sorted(groups.items(), key=lambda item: -item[1].count)
    serious = [(k, g) for k, g in ranked if at_least(g.level, "warning")]
    other = [(k, g) for k, g in ranked if not at_least(g.level, "warning") and g.count > 1]
    return {
        "source": source,
        "window": {"start": iso(start), "end": iso(end)},
        "lines": len(lines),
        "limit_reached": len(lines) >= limit,
        "levels": {level: count for level, count in levels.items() if count},
        "signatures": [g.to_json(k) for k, g in serious[:MAX_SIGNATURES]],
        "frequent": [g.to_json(k) for k, g in other[:MAX_FREQUENT]],
        "examples": _latest_distinct(lines, keys),
    }


def _latest_distinct(lines: Sequence[LogLine], keys: Sequence[str]) -> list[str]:
    """The newest few lines, one per signature (`keys`), oldest first."""
    seen: set[str] = set()
    examples: list[str] = []
    for line, key in zip(reversed(lines), reversed(keys), strict=True):
        if key not in seen:
            seen.add(key)
            examples.insert(0, _example(line.message))
            if len(examples) == MAX_EXAMPLES:
                break
    return examples


def _example(message: str) -> str:
    """A line as logged, redacted; a long record keeps its start and its last line."""
    text = _printable(redact_text(message))
    if len(text) <= MAX_EXAMPLE_CHARS:
        return text
    last = text.rstrip().rsplit("\n", 1)[-1][: MAX_EXAMPLE_CHARS // 2]
    return text[: MAX_EXAMPLE_CHARS - len(last) - 7] + " [...] " + last


def _printable(text: str) -> str:
    if text.isprintable():  # the common case, quickly (a newline is not printable)
        return text
    return _CONTROL.sub("\ufffd", _ANSI_ESCAPE.sub("", text))


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
