"""The `loki` backend: `GET /loki/api/v1/query_range` with the configured LogQL selector.

The selector is configuration, passed as data to the HTTP API; a substring filter
from a query becomes a `|= "..."` line filter with the text as a quoted literal.
HTTP, retries, time budget and the failure taxonomy are the project's
`ServiceClient`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from market_agent.clients.base import ClientError, ServiceClient
from market_agent.logs.base import FailureKind, Level, LogLine, LogQuery, LogSourceError
from market_agent.logs.parse import json_line, keep, level_name, merge_records, plain_line
from market_agent.settings import EndpointSettings, LogsSettings

_LEVEL_LABELS = ("level", "detected_level", "severity", "lvl")


class LokiClient(ServiceClient):
    service = "logs"


class LokiLogSource:
    name = "loki"

    def __init__(self, settings: LogsSettings) -> None:
        endpoint = EndpointSettings(
            url=settings.url or "",
            timeout=settings.timeout,
            bearer_token_file=settings.token_file,
            verify_tls=settings.verify_tls,
            ca_file=settings.ca_file,
        )
        self.client = LokiClient(endpoint)
        self.selector = settings.query or ""
        self.max_bytes = settings.max_bytes

    def params(self, query: LogQuery) -> dict[str, str]:
        logql = self.selector
        if query.contains:
            logql += f" |= {json.dumps(query.contains)}"
        end = query.until or datetime.now(UTC)
        return {
            "query": logql,
            "start": str(_nanoseconds(query.since)),
            "end": str(_nanoseconds(end)),
            "limit": str(query.limit),
            "direction": "backward",
        }

    def read(self, query: LogQuery, *, timeout: float) -> list[LogLine]:
        try:
            body = self.client.get_object(
                "/loki/api/v1/query_range", params=self.params(query), timeout=timeout
            )
        except ClientError as exc:
            raise LogSourceError(str(exc), _kind(exc)) from None
        lines = sorted(self._lines(body), key=lambda line: line.timestamp or query.since)
        return keep(merge_records(lines, own_time=False), query)

    def _lines(self, body: Mapping[str, Any]) -> Iterator[LogLine]:
        data = body.get("data")
        if body.get("status") != "success" or not isinstance(data, dict):
            raise LogSourceError("Loki answered without a success status", "bad_output")
        if data.get("resultType") != "streams" or not isinstance(data.get("result"), list):
            raise LogSourceError("Loki's answer is not a list of streams", "bad_output")
        budget = self.max_bytes
        for stream in data["result"]:
            if not isinstance(stream, dict):
                continue
            labels = stream.get("stream")
            level = _label_level(labels if isinstance(labels, dict) else {})
            values = stream.get("values")
            for value in values if isinstance(values, list) else []:
                line = _entry(value, level)
                if line is None:
                    continue
                budget -= len(line.message)
                if budget < 0:
                    return
                yield line


def _entry(value: Any, level: Level | None) -> LogLine | None:
    if not (isinstance(value, list) and len(value) >= 2 and isinstance(value[1], str)):
        return None
    try:
        moment = datetime.fromtimestamp(int(value[0]) / 1e9, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        moment = None
    text = value[1]
    parsed = json_line(text) if text.startswith("{") else plain_line(text)
    if level is not None and parsed.level == "unknown":
        parsed = LogLine(parsed.timestamp, level, parsed.message)
    return LogLine(moment or parsed.timestamp, parsed.level, parsed.message)


def _label_level(labels: Mapping[str, Any]) -> Level | None:
    for key in _LEVEL_LABELS:
        value = labels.get(key)
        if isinstance(value, str) and (level := level_name(value)):
            return level
    return None


def _nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


def _kind(exc: ClientError) -> FailureKind:
    if exc.kind.value == "timeout":
        return "timeout"
    if exc.kind.unreachable:
        return "unreachable"
    if exc.status_code in (401, 403):
        return "permission"
    if exc.status_code == 404:
        return "not_found"
    return "bad_output" if exc.kind.value == "invalid_body" else "error"
