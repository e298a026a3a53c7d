"""Typed settings for the `[logs]` TOML section: where the predictor's logs are.

    [logs]
    backend = "file"               # journald | file | docker | kubernetes | loki
    path = "/var/log/market-predictor/app.log"
    format = "plain"               # plain | json (one JSON object per line)
    window_before = "10m"          # read from this long before the alert started, to now
    timeout = 2.0                  # seconds for one read (within analysis.context_timeout)
    max_lines = 5000               # the newest lines kept
    max_bytes = 4194304            # bytes read at most (file: from the end; others: output)

Per backend: journald `unit` (and `directory` or `file` for exported journals); file
`path` and `format` (rotated `PATH.1` is followed); docker `container`; kubernetes
`deployment`, `namespace`, `context`; loki `url`, `query` (a LogQL stream selector),
`token_file`, `verify_tls`, `ca_file`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from market_agent.settings.actions import Duration
from market_agent.settings.base import Section as _Section

#: Names passed to journalctl, docker and kubectl: never an option, never shell syntax.
SAFE_NAME = re.compile(r"[A-Za-z0-9._:@/][A-Za-z0-9._:@/-]{0,252}")

LogBackend = Literal["journald", "file", "docker", "kubernetes", "loki"]

#: The key each backend cannot do without.
_REQUIRED = {
    "file": "path",
    "docker": "container",
    "kubernetes": "deployment",
    "loki": "url",
}


class LogsSettings(_Section):
    """`[logs]`: one log backend for the predictor and the limits of every read."""

    backend: LogBackend
    #: journald: `journalctl --unit=UNIT` (all units of the journal when unset with a file).
    unit: str | None = None
    #: journald: read an exported journal directory (`--directory`) or file (`--file`).
    directory: Path | None = None
    file: Path | None = None
    #: file: the log file; `PATH.1` is read too when the window reaches back past it.
    path: Path | None = None
    format: Literal["plain", "json"] = "plain"
    #: docker: `docker logs NAME`.
    container: str | None = None
    #: kubernetes: `kubectl logs deploy/DEPLOYMENT -n NAMESPACE [--context CONTEXT]`.
    deployment: str | None = None
    namespace: str = "default"
    context: str | None = None
    #: loki: base URL, LogQL stream selector, bearer token file, TLS.
    url: str | None = None
    query: str | None = None
    token_file: Path | None = None
    verify_tls: bool = True
    ca_file: Path | None = None
    #: Seconds one read may take (the context's own budget caps it too).
    timeout: Duration = Field(default=2.0, gt=0)
    #: How long before the alert's start the window opens.
    window_before: Duration = Field(default=600.0, ge=0)
    max_lines: int = Field(default=5000, ge=1, le=1_000_000)
    max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    @field_validator("unit", "container", "deployment", "namespace", "context")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and not SAFE_NAME.fullmatch(value):
            raise ValueError(
                f"{value[:60]!r} is not allowed (letters, digits and . _ : / @ - only, "
                "not starting with -)"
            )
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _complete(self) -> LogsSettings:
        needed = _REQUIRED.get(self.backend)
        if needed and not getattr(self, needed):
            raise ValueError(f"backend {self.backend!r} needs `logs.{needed}`")
        if self.backend == "journald":
            if self.directory and self.file:
                raise ValueError("set one of `logs.directory` and `logs.file`, not both")
            if not (self.unit or self.directory or self.file):
                raise ValueError("backend 'journald' needs `logs.unit` (or a journal file)")
        if self.backend == "loki" and not self.query:
            raise ValueError("backend 'loki' needs `logs.query`, e.g. {job=\"market-predictor\"}")
        return self
