"""The `journald` backend: `journalctl -o json` for a unit, live or from exported files."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from market_agent.logs.base import LogLine, LogQuery, LogSourceError
from market_agent.logs.command import run_reader
from market_agent.logs.parse import detect_level, keep, merge_records, syslog_level

#: `__REALTIME_TIMESTAMP` (and `__CURSOR`, `__MONOTONIC_TIMESTAMP`) always come too.
OUTPUT_FIELDS = "--output-fields=MESSAGE,PRIORITY"


class JournaldLogSource:
    name = "journald"

    def __init__(
        self,
        *,
        unit: str | None = None,
        directory: Path | None = None,
        file: Path | None = None,
        max_bytes: int,
    ) -> None:
        self.unit = unit
        self.directory = directory
        self.file = file
        self.max_bytes = max_bytes

    def argv(self, query: LogQuery) -> list[str]:
        # Only the fields read below (journald adds ~15 more to every line of a service):
        # half the output to format, pass and parse, and more entries within max_bytes.
        argv = ["journalctl", "--no-pager", "--quiet", "--output=json", OUTPUT_FIELDS]
        if self.directory is not None:
            argv.append(f"--directory={self.directory}")
        if self.file is not None:
            argv.append(f"--file={self.file}")
        if self.unit:
            argv.append(f"--unit={self.unit}")
        # Newest first, so that `--lines` keeps the newest entries of the window.
        argv += [f"--since=@{query.since.timestamp():.6f}", "--reverse", f"--lines={query.limit}"]
        if query.until is not None:
            argv.append(f"--until=@{query.until.timestamp():.6f}")
        return argv

    def read(self, query: LogQuery, *, timeout: float) -> list[LogLine]:
        output = run_reader(
            self.argv(query), timeout=timeout, max_bytes=self.max_bytes, newest_first=True
        )
        entries = list(_entries(output))
        entries.reverse()
        records = merge_records(entries, own_time=False)
        return keep(records, query)


def _entries(output: str) -> Iterator[LogLine]:
    bad = 0
    for raw in output.splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            bad += 1
            continue
        if isinstance(entry, dict):
            yield entry_line(entry)
    if bad and not output.strip().startswith("{"):
        raise LogSourceError("journalctl printed something other than JSON", "bad_output")


def entry_line(entry: Mapping[str, Any]) -> LogLine:
    """One journal entry: MESSAGE (text or a byte array), PRIORITY, __REALTIME_TIMESTAMP."""
    message = _text(entry.get("MESSAGE"))
    level = detect_level(message)  # an app's own level beats stdout's default priority
    if level is None:
        priority = str(entry.get("PRIORITY"))
        level = syslog_level(int(priority)) if priority.isdigit() else "unknown"
    return LogLine(_time(entry.get("__REALTIME_TIMESTAMP")), level, message)


def _text(value: Any) -> str:
    if isinstance(value, list):  # journald's JSON form of a non-UTF-8 message
        return bytes(b for b in value if isinstance(b, int) and 0 <= b < 256).decode(
            "utf-8", "replace"
        )
    return "" if value is None else str(value)


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(value) / 1_000_000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
