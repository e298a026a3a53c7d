"""Log text into `LogLine`s: timestamps, levels, JSON lines, multi-line tracebacks.

Shared by the backends. Everything here is pure and bounded: a line is text of any
content, never interpreted beyond these patterns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from market_agent.logs.base import LEVELS, Level, LogLine, LogQuery

#: A record's message is cut to this; a traceback keeps its first and last lines.
MAX_MESSAGE_CHARS = 2000
MAX_RECORD_LINES = 40

_ISO_PREFIX = re.compile(
    r"^\s*(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?)[ \t]?"
)
_LEVEL_KV = re.compile(r"\b(?:level|lvl|severity|levelname)\s*[=:]\s*\"?([A-Za-z]+)", re.I)
_LEVEL_WORDS = (
    r"(CRITICAL|CRIT|FATAL|PANIC|EMERG|ALERT|ERROR|ERR|WARNING|WARN|NOTICE|INFO|DEBUG|TRACE)"
    r"(?=$|[\s\]):>|,])"
)
_LEVEL_WORD = re.compile(r"(?:^|[\s\[(<|])" + _LEVEL_WORDS)
#: The usual record start in one match: a time, then maybe a level word right after it.
_STAMP_AND_LEVEL = re.compile(_ISO_PREFIX.pattern + "(?:" + _LEVEL_WORDS + ")?")
_LEVEL_BRACKET = re.compile(
    r"\[(critical|crit|fatal|error|err|warning|warn|notice|info|debug)\]", re.I
)
_CONTINUATION = re.compile(
    r"^(?:[ \t]|Traceback \(most recent call last\)|During handling of the above|"
    r"The above exception was|[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b(?::|$))"
)
#: Level names in the wild -> our levels.
_LEVEL_NAMES: dict[str, Level] = {
    "critical": "critical",
    "crit": "critical",
    "fatal": "critical",
    "panic": "critical",
    "emerg": "critical",
    "emergency": "critical",
    "alert": "critical",
    "error": "error",
    "err": "error",
    "eror": "error",
    "warning": "warning",
    "warn": "warning",
    "notice": "info",
    "info": "info",
    "information": "info",
    "debug": "debug",
    "trace": "debug",
}
_RANK = {level: rank for rank, level in enumerate(reversed(LEVELS))}
_JSON_MESSAGE_KEYS = ("message", "msg", "MESSAGE", "event", "log")
_JSON_LEVEL_KEYS = ("level", "levelname", "severity", "lvl", "log.level", "PRIORITY")
_JSON_TIME_KEYS = ("timestamp", "time", "ts", "@timestamp", "asctime", "t")


def level_name(text: str) -> Level | None:
    """A level from its name in any case (`WARN`, `Error`, ...), or None."""
    return _LEVEL_NAMES.get(text.strip().lower())


def detect_level(text: str) -> Level | None:
    """The level a plain log line states near its start, or None."""
    head = text[:160]
    match = _LEVEL_WORD.search(head)
    if match:  # the common case: every word it matches is a level name
        return _LEVEL_NAMES[match.group(1).lower()]
    for pattern in (_LEVEL_KV, _LEVEL_BRACKET):
        match = pattern.search(head)
        if match and (level := level_name(match.group(1))):
            return level
    return None


def at_least(level: Level, floor: Level) -> bool:
    """Whether `level` is as severe as `floor` (`unknown` is below `debug`)."""
    return _RANK[level] >= _RANK[floor]


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 / RFC 3339 time (nanoseconds allowed); naive times are local time."""
    try:  # the common case, quickly: at most microseconds, `Z` or an offset
        moment = datetime.fromisoformat(text)
    except ValueError:
        return _parse_odd_time(text)
    return moment.astimezone(UTC)


def _parse_odd_time(text: str) -> datetime | None:
    text = text.strip().replace(",", ".")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    head, dot, rest = text.partition(".")
    if dot:  # Python parses at most 6 fractional digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.astimezone(UTC)  # a naive time is taken as local time


def split_timestamp(text: str) -> tuple[datetime | None, str]:
    """(time, rest) for a line that starts with an ISO time, else (None, text)."""
    match = _ISO_PREFIX.match(text)
    if not match:
        return None, text
    moment = parse_time(match.group(1))
    return (moment, text[match.end() :]) if moment else (None, text)


def plain_line(text: str) -> LogLine:
    if _CONTINUATION.match(text):  # a traceback's body: no time, no level of its own
        return LogLine(None, "unknown", text.rstrip())
    return _record_start(text)


def _record_start(text: str) -> LogLine:
    """`plain_line` for a line that is not a continuation."""
    match = _STAMP_AND_LEVEL.match(text)
    moment = parse_time(match.group(1)) if match else None
    if match is None or moment is None:
        return LogLine(None, detect_level(text) or "unknown", text.rstrip())
    word = match.group(2)  # a level word right after the time is the one detect_level finds
    rest = text[match.start(2) if word else match.end() :]
    level = _LEVEL_NAMES[word.lower()] if word else detect_level(rest)
    return LogLine(moment, level or "unknown", rest.rstrip())


def plain_records(lines: Iterable[str]) -> Iterator[LogLine]:
    """`merge_records(plain_line(text) for text in lines)`, quicker: a traceback's body
    line is joined to its record without being parsed on its own."""
    current: LogLine | None = None
    parts: list[str] = []
    for text in lines:
        if _CONTINUATION.match(text):
            # Non-blank, it stays a continuation once stripped on the right: it joins.
            if current is not None and (body := text.rstrip()):
                parts.append(body)
                continue
            line = LogLine(None, "unknown", text.rstrip())
        else:
            line = _record_start(text)
        if current is not None and _joins(current, line, own_time=True):
            parts.append(line.message)
            continue
        if current is not None:
            yield _joined(current, parts)
        current, parts = line, [line.message]
    if current is not None:
        yield _joined(current, parts)


def json_line(text: str) -> LogLine:
    """One JSON object per line (structlog, python-json-logger, bunyan, ...)."""
    try:
        record = json.loads(text)
    except ValueError:
        return plain_line(text)
    if not isinstance(record, dict):
        return plain_line(text)
    message = _first(record, _JSON_MESSAGE_KEYS)
    extra = _first(record, ("exc_info", "exception", "stack_trace", "error"))
    text_message = str(message if message is not None else text)
    if isinstance(extra, str) and extra and extra not in text_message:
        text_message += "\n" + extra
    level = _json_level(_first(record, _JSON_LEVEL_KEYS)) or detect_level(text_message)
    stamp = _first(record, _JSON_TIME_KEYS)
    return LogLine(_json_time(stamp), level or "unknown", text_message)


def _first(record: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        if key in record:
            return record[key]
    return None


def _json_level(value: Any) -> Level | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return syslog_level(value)
    if isinstance(value, str):
        return syslog_level(int(value)) if value.isdigit() else level_name(value)
    return None


def _json_time(value: Any) -> datetime | None:
    if isinstance(value, str):
        return parse_time(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value  # milliseconds since the epoch
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def syslog_level(priority: int) -> Level:
    """A syslog priority (0 emerg .. 7 debug), as journald's PRIORITY field."""
    if priority <= 2:
        return "critical"
    levels: dict[int, Level] = {3: "error", 4: "warning", 5: "info", 6: "info"}
    return levels.get(priority, "debug")


def is_continuation(line: LogLine) -> bool:
    """A line that belongs to the record before it (a traceback's body, its exception)."""
    return line.level == "unknown" and _CONTINUATION.match(line.message) is not None


def merge_records(lines: Iterable[LogLine], *, own_time: bool = True) -> Iterator[LogLine]:
    """Join continuation lines to the record they follow (level and time from it).

    `own_time`: a line with its own timestamp is never a continuation (file logs);
    false when every line carries the runtime's timestamp (docker, kubectl).
    """
    current: LogLine | None = None
    parts: list[str] = []
    for line in lines:
        if current is not None and _joins(current, line, own_time):
            parts.append(line.message)
            continue
        if current is not None:
            yield _joined(current, parts)
        current, parts = line, [line.message]
    if current is not None:
        yield _joined(current, parts)


def _joins(current: LogLine, line: LogLine, own_time: bool) -> bool:
    if line.level != "unknown":  # the cheap tests first: most lines start a record
        return False
    if own_time and line.timestamp is not None and line.timestamp != current.timestamp:
        return False
    return _CONTINUATION.match(line.message) is not None


def _joined(first: LogLine, parts: list[str]) -> LogLine:
    level = first.level
    if level == "unknown" and parts[0].startswith("Traceback"):
        level = "error"  # an uncaught exception, printed without a log record
    if len(parts) == 1 and level == first.level and len(first.message) <= MAX_MESSAGE_CHARS:
        return first
    if len(parts) > MAX_RECORD_LINES:
        parts = [*parts[:5], "  [...]", *parts[-(MAX_RECORD_LINES - 6) :]]
    return _cut(LogLine(first.timestamp, level, "\n".join(parts)))


def _cut(line: LogLine) -> LogLine:
    message = line.message
    if len(message) > MAX_MESSAGE_CHARS:
        half = MAX_MESSAGE_CHARS // 2
        message = message[:half] + " [...] " + message[-half:]
    return LogLine(line.timestamp, line.level, message)


def newest_records(lines: list[str], limit: int) -> list[str]:
    """The raw lines of (about) the newest `limit` records: those worth parsing."""
    starts = 0
    for index in range(len(lines) - 1, -1, -1):
        if not _CONTINUATION.match(lines[index]):
            starts += 1
            if starts >= limit:
                return lines[index:]
    return lines


def keep(lines: Iterable[LogLine], query: LogQuery) -> list[LogLine]:
    """The lines within the query's window and filters, the newest `limit` of them."""
    contains = query.contains.lower() if query.contains else None
    kept = [
        line
        for line in lines
        if (line.timestamp is None or line.timestamp >= query.since)
        and (query.until is None or line.timestamp is None or line.timestamp <= query.until)
        and (query.level is None or at_least(line.level, query.level))
        and (contains is None or contains in line.message.lower())
    ]
    return kept[-query.limit :] if len(kept) > query.limit else kept
