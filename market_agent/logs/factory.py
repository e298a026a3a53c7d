"""One `LogSource` from `[logs]`, or None when no log backend is configured."""

from __future__ import annotations

from market_agent.logs.base import LogSource
from market_agent.settings import Settings


def build_log_source(settings: Settings) -> LogSource | None:
    """The configured backend (built lazily: only the chosen one is imported)."""
    logs = settings.logs
    if logs is None:
        return None
    if logs.backend == "file":
        from market_agent.logs.file import FileLogSource

        assert logs.path is not None  # the settings check it
        return FileLogSource(logs.path, format=logs.format, max_bytes=logs.max_bytes)
    if logs.backend == "journald":
        from market_agent.logs.journald import JournaldLogSource

        return JournaldLogSource(
            unit=logs.unit, directory=logs.directory, file=logs.file, max_bytes=logs.max_bytes
        )
    if logs.backend == "docker":
        from market_agent.logs.containers import DockerLogSource

        return DockerLogSource(logs.container or "", max_bytes=logs.max_bytes)
    if logs.backend == "kubernetes":
        from market_agent.logs.containers import KubernetesLogSource

        return KubernetesLogSource(
            logs.deployment or "",
            namespace=logs.namespace,
            context=logs.context,
            max_bytes=logs.max_bytes,
        )
    from market_agent.logs.loki import LokiLogSource

    return LokiLogSource(logs)
