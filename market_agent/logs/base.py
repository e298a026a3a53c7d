"""What every log backend provides: bounded reads of the predictor's log lines.

A backend (journald, file, docker, kubernetes, loki) turns a `LogQuery` into at most
`query.limit` `LogLine`s, oldest first, within `timeout` seconds, or raises
`LogSourceError`. Nothing here runs a shell; a line's text is untrusted data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

#: The levels a line is normalised to; `unknown` when the backend cannot tell.
Level = Literal["critical", "error", "warning", "info", "debug", "unknown"]
LEVELS: tuple[Level, ...] = ("critical", "error", "warning", "info", "debug", "unknown")

#: Why a read failed, for the audit log and `sources` in the context.
FailureKind = Literal["unreachable", "timeout", "not_found", "permission", "bad_output", "error"]


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime | None
    level: Level
    message: str


@dataclass(frozen=True)
class LogQuery:
    since: datetime
    until: datetime | None = None
    #: Plain substring (never a regular expression or a shell word), case-insensitive.
    contains: str | None = None
    #: The lowest level wanted (`error` keeps `error` and `critical`).
    level: Level | None = None
    limit: int = 5000


class LogSourceError(Exception):
    def __init__(self, message: str, kind: FailureKind = "error") -> None:
        super().__init__(message)
        self.kind: FailureKind = kind


class LogSource(Protocol):
    #: The backend's name as configured (`journald`, `file`, ...), for evidence and audit.
    name: str

    def read(self, query: LogQuery, *, timeout: float) -> list[LogLine]: ...
