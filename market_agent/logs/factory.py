"""One `LogSource` from `[logs]`, or None when no log backend is configured.

Placeholder on this branch: the logs backends land separately (issue 14, section 1).
"""

from __future__ import annotations

from market_agent.logs.base import LogSource
from market_agent.settings import Settings


def build_log_source(settings: Settings) -> LogSource | None:
    """The configured backend; none yet on this branch."""
    del settings
    return None
