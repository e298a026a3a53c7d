"""A real `LogSource` over a text file, for tests that need logs without `[logs]`.

Lines look like Python logging's (`2026-12-03 14:05:00,123 ERROR name: message`) or
`<ISO time> LEVEL message`; the level is the first level word on the line. A FIFO
is read as it is written; when nothing comes within `timeout`, the read fails with
`LogSourceError(kind="timeout")`, as a backend that hangs does.
"""

from __future__ import annotations

import os
import select
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

from market_agent.logs.base import Level, LogLine, LogQuery, LogSourceError

_LEVELS: dict[str, Level] = {
    "CRITICAL": "critical",
    "ERROR": "error",
    "WARNING": "warning",
    "WARN": "warning",
    "INFO": "info",
    "DEBUG": "debug",
}
_RANK: dict[str, int] = {"debug": 0, "info": 1, "warning": 2, "error": 3, "critical": 4}


class TextFileLogs:
    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reads = 0

    def read(self, query: LogQuery, *, timeout: float) -> list[LogLine]:
        self.reads += 1
        lines = [parse_line(raw) for raw in self._text(timeout).splitlines() if raw.strip()]
        kept = [line for line in lines if _wanted(line, query)]
        return kept[-query.limit :]

    def _text(self, timeout: float) -> str:
        if not stat.S_ISFIFO(self.path.stat().st_mode):
            return self.path.read_text(encoding="utf-8", errors="replace")
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise LogSourceError(f"no log lines within {timeout:g} s", "timeout")
            time.sleep(0.05)  # let the writer finish its lines
            return os.read(fd, 1 << 20).decode("utf-8", "replace")
        finally:
            os.close(fd)


def parse_line(raw: str) -> LogLine:
    words = raw.split()
    level: Level = next((_LEVELS[w] for w in words[:4] if w in _LEVELS), "unknown")
    return LogLine(_timestamp(words), level, raw.strip())


def _timestamp(words: list[str]) -> datetime | None:
    for text in (" ".join(words[:2]), words[0] if words else ""):
        try:
            moment = datetime.fromisoformat(text.replace(",", ".").replace("Z", "+00:00"))
        except ValueError:
            continue
        return moment if moment.tzinfo else moment.astimezone(UTC)
    return None


def _wanted(line: LogLine, query: LogQuery) -> bool:
    if line.timestamp is not None and line.timestamp < query.since:
        return False
    if query.contains and query.contains.lower() not in line.message.lower():
        return False
    return not (query.level and _RANK.get(line.level, 0) < _RANK[query.level])
