"""Per-invocation state: settings loaded once, shared things built once, on demand.

The CLI's root callback stores one `AppState` on ``ctx.obj``; commands ask it for
the settings, the audit log and the analysis service instead of building their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from market_agent.analysis.analyzer import AnalysisService
    from market_agent.audit import AuditLog
    from market_agent.config import Settings


@dataclass
class AppState:
    config_path: Path | None = None
    debug: bool = False
    #: Dotted-key settings overrides from command-line flags.
    overrides: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def settings(self) -> Settings:
        from market_agent.config import load_settings

        return load_settings(self.config_path, self.overrides)

    def override(self, values: Mapping[str, Any]) -> None:
        """Apply command-level flags; only before the settings are first used."""
        if "settings" in self.__dict__:
            raise RuntimeError("settings already loaded")
        self.overrides.update({k: v for k, v in values.items() if v is not None})

    @cached_property
    def audit_log(self) -> AuditLog | None:
        """The audit log, or None with `--no-audit` / `audit.enabled = false`."""
        from market_agent.audit import AuditLog

        audit = self.settings.audit
        if not audit.enabled:
            return None
        return AuditLog(audit.path.expanduser(), fsync=audit.fsync)

    def analysis_service(self, *, use_llm: bool = True) -> AnalysisService:
        from market_agent.analysis.factory import build_analysis_service

        return build_analysis_service(self.settings, use_llm=use_llm)
