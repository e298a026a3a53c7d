"""The `file` backend: a log file read from its end, the rotated `PATH.1` followed.

At most `max_bytes` are read in all, newest first, and reading stops early once a
block starts before the window: the cost does not grow with the file's size.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from market_agent.logs.base import LogLine, LogQuery, LogSourceError
from market_agent.logs.parse import (
    json_line,
    keep,
    merge_records,
    newest_records,
    plain_line,
    plain_records,
    split_timestamp,
)

BLOCK_BYTES = 256 * 1024
#: A line that starts a record: a timestamp or a JSON object (not a traceback's body).
_RECORD_START = re.compile(rb"\n[0-9{]")


class FileLogSource:
    name = "file"

    def __init__(self, path: Path, *, format: str = "plain", max_bytes: int) -> None:
        self.path = path
        self.parse: Callable[[str], LogLine] = json_line if format == "json" else plain_line
        self.max_bytes = max_bytes

    def read(self, query: LogQuery, *, timeout: float) -> list[LogLine]:
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        budget = self.max_bytes
        for path in (self.path, rotated(self.path)):
            if budget <= 0 or (path is not self.path and not path.exists()):
                break
            data, whole = _tail(path, budget, query, deadline)
            chunks.insert(0, data)
            budget -= len(data)
            if not whole or _starts_before(data, query.since):
                break
        text = b"".join(chunks).decode("utf-8", "replace")
        raw = newest_records([line for line in text.splitlines() if line.strip()], query.limit)
        if self.parse is plain_line:
            return keep(plain_records(raw), query)
        return keep(merge_records(self.parse(line) for line in raw), query)


def rotated(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def _tail(path: Path, budget: int, query: LogQuery, deadline: float) -> tuple[bytes, bool]:
    """The last complete lines of `path` (at most `budget` bytes, enough for the
    window and `query.limit` records), and whether they start at the file's start."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            start, starts = size, 0
            blocks: list[bytes] = []
            while start > 0 and size - start < budget and starts <= query.limit:
                if time.monotonic() > deadline:
                    raise LogSourceError(f"reading {path} took too long", "timeout")
                step = min(BLOCK_BYTES, start, budget - (size - start))
                start -= step
                handle.seek(start)
                blocks.insert(0, handle.read(step))
                starts += len(_RECORD_START.findall(blocks[0]))
                if _starts_before(blocks[0], query.since, partial=start > 0):
                    break
    except FileNotFoundError:
        raise LogSourceError(f"no log file at {path}", "not_found") from None
    except PermissionError:
        raise LogSourceError(f"cannot read {path}: permission denied", "permission") from None
    except OSError as exc:
        raise LogSourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    data = b"".join(blocks)
    if start > 0:  # the first line is cut: drop it
        cut = data.find(b"\n")
        data = data[cut + 1 :] if cut >= 0 else b""
    return data, start == 0


def _starts_before(block: bytes, since: datetime, *, partial: bool = False) -> bool:
    """Whether the first dated line of `block` is older than `since`."""
    lines = block.split(b"\n", 20)
    for raw in lines[1:] if partial else lines:
        moment, _ = split_timestamp(raw[:64].decode("utf-8", "replace"))
        if moment is None and raw[:1] == b"{":
            moment = json_line(raw.decode("utf-8", "replace")).timestamp
        if moment is not None:
            return moment < since
    return False
