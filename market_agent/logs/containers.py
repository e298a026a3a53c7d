"""The `docker` and `kubernetes` backends: `docker logs` and `kubectl logs` with the
runtime's timestamps, bounded by time (`--since`), lines (`--tail`) and bytes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from market_agent.logs.base import LogLine, LogQuery
from market_agent.logs.command import run_reader
from market_agent.logs.parse import keep, merge_records, plain_line, split_timestamp


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class DockerLogSource:
    name = "docker"

    def __init__(self, container: str, *, max_bytes: int) -> None:
        self.container = container
        self.max_bytes = max_bytes

    def argv(self, query: LogQuery) -> list[str]:
        argv = ["docker", "logs", "--timestamps", f"--since={_rfc3339(query.since)}"]
        if query.until is not None:
            argv.append(f"--until={_rfc3339(query.until)}")
        return [*argv, f"--tail={query.limit}", "--", self.container]

    def read(self, query: LogQuery, *, timeout: float) -> list[LogLine]:
        # The container's stderr comes out on docker's stderr: read both streams.
        output = run_reader(
            self.argv(query), timeout=timeout, max_bytes=self.max_bytes, merge_stderr=True
        )
        return keep(merge_records(_stamped(output), own_time=False), query)


class KubernetesLogSource:
    name = "kubernetes"

    def __init__(
        self, deployment: str, *, namespace: str, context: str | None, max_bytes: int
    ) -> None:
        self.deployment = deployment
        self.namespace = namespace
        self.context = context
        self.max_bytes = max_bytes

    def argv(self, query: LogQuery) -> list[str]:
        argv = ["kubectl"]
        if self.context:
            argv.append(f"--context={self.context}")
        return [
            *argv,
            "logs",
            f"deploy/{self.deployment}",
            f"--namespace={self.namespace}",
            "--all-containers=true",
            "--timestamps=true",
            f"--since-time={_rfc3339(query.since)}",
            f"--tail={query.limit}",
            f"--limit-bytes={self.max_bytes}",
        ]

    def read(self, query: LogQuery, *, timeout: float) -> list[LogLine]:
        output = run_reader(self.argv(query), timeout=timeout, max_bytes=self.max_bytes)
        return keep(merge_records(_stamped(output), own_time=False), query)


def _stamped(output: str) -> Iterator[LogLine]:
    """Lines prefixed with the runtime's RFC 3339 time; the app's own text follows."""
    for raw in output.splitlines():
        if not raw.strip():
            continue
        moment, rest = split_timestamp(raw)
        line = plain_line(rest)
        yield LogLine(moment or line.timestamp, line.level, line.message)
