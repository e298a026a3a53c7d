"""Per-invocation state: settings loaded once, shared things built once, on demand.

The CLI's root callback stores one `AppState` on ``ctx.obj``; commands ask it for
the settings, the audit log and the analysis service instead of building their own.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from market_agent.actions.remediator import Remediator
    from market_agent.actions.runner import ActionRunner
    from market_agent.analysis.analyzer import AnalysisService
    from market_agent.analysis.run import ContextProvider
    from market_agent.audit import AuditLog
    from market_agent.clients import (
        AlertmanagerClient,
        PredictorClient,
        PrometheusClient,
        ServiceClient,
    )
    from market_agent.settings import Settings

    ClientT = TypeVar("ClientT", bound=ServiceClient)


@dataclass
class AppState:
    config_path: Path | None = None
    debug: bool = False
    #: `--color` (True) / `--no-color` (False) / auto (None); `render.console` applies it.
    color: bool | None = None
    #: Dotted-key settings overrides from command-line flags.
    overrides: dict[str, Any] = field(default_factory=dict)
    #: The flag behind each override (`{"listen.port": "--port"}`), for error messages.
    flags: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _clients_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def of(cls, settings: Settings) -> AppState:
        """State over settings that are already loaded (e.g. handed to a child process)."""
        state = cls()
        state.__dict__["settings"] = settings  # what the cached property would hold
        return state

    @cached_property
    def settings(self) -> Settings:
        from market_agent.settings import load_settings

        return load_settings(self.config_path, self.overrides, flags=self.flags)

    def override(self, values: Mapping[str, Any], flags: Mapping[str, str] | None = None) -> None:
        """Apply command-level flags; only before the settings are first used."""
        if "settings" in self.__dict__:
            raise RuntimeError("settings already loaded")
        self.overrides.update({k: v for k, v in values.items() if v is not None})
        self.flags.update(flags or {})

    @cached_property
    def audit_log(self) -> AuditLog | None:
        """The audit log, or None with `--no-audit` / `audit.enabled = false`."""
        audit = self.settings.audit
        if not audit.enabled:
            return None
        from market_agent.audit import AuditLog

        return AuditLog.from_settings(audit)

    def analysis_service(self, *, use_llm: bool = True) -> AnalysisService:
        from market_agent.analysis.factory import build_analysis_service

        return build_analysis_service(self.settings, use_llm=use_llm)

    def predictor_client(self) -> PredictorClient:
        """The predictor's HTTP client (`[predictor]`), built once and shared."""
        from market_agent.clients import PredictorClient

        return self._client(PredictorClient)

    def prometheus_client(self) -> PrometheusClient:
        """Prometheus's HTTP client (`[prometheus]`), built once and shared."""
        from market_agent.clients import PrometheusClient

        return self._client(PrometheusClient)

    def alertmanager_client(self) -> AlertmanagerClient:
        """Alertmanager's HTTP client (`[alertmanager]`), built once and shared."""
        from market_agent.clients import AlertmanagerClient

        return self._client(AlertmanagerClient)

    def _client(self, cls: type[ClientT]) -> ClientT:
        with self._clients_lock:
            client = self._clients.get(cls.service)
            if client is None:
                client = self._clients[cls.service] = cls(getattr(self.settings, cls.service))
            return client

    def context_provider(self, enabled: bool | None = None) -> ContextProvider | None:
        """Live context for managed-service alerts, or None when off (`analysis.context`)."""
        analysis = self.settings.analysis
        if not (analysis.context if enabled is None else enabled):
            return None
        from market_agent.analysis.live_context import ContextGatherer, LogReading
        from market_agent.logs.factory import build_log_source

        source, logs = build_log_source(self.settings), self.settings.logs
        reading = None
        if source is not None and logs is not None:
            reading = LogReading(source, logs.window_before, logs.timeout, logs.max_lines)
        return ContextGatherer(
            self.predictor_client(),
            self.prometheus_client(),
            managed_service=analysis.managed_service,
            timeout=analysis.context_timeout,
            logs=reading,
        )

    @cached_property
    def action_runner(self) -> ActionRunner:
        """The guarded remediation pipeline (`[actions]`, `[notifiers]`), built once."""
        from market_agent.actions.factory import build_runner

        return build_runner(
            self.settings,
            self.audit_log,
            predictor=self.predictor_client(),
            prometheus=self.prometheus_client(),
            alertmanager=self.alertmanager_client(),
        )

    def remediator(self) -> Remediator:
        """What `listen` calls after each analysis (`Remediator.handle`)."""
        from market_agent.actions.factory import build_remediator

        return build_remediator(self.action_runner)

    def close(self) -> None:
        """Close what was opened (HTTP connection pools); safe to call twice."""
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
