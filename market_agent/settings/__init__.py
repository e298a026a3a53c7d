"""Typed settings, loaded once per invocation: the leaf every other package imports.

`core` holds the service, LLM, audit and listen sections and the loader; `actions`
the `[actions]` and `[notifiers]` tables. Imports nothing of market_agent but
`errors` (for `ConfigError`).
"""

from market_agent.settings.actions import (
    PLACEHOLDER,
    PLACEHOLDERS,
    ActionSpec,
    ActionsSettings,
    BackendSpec,
    NotifierSettings,
    parse_duration,
)
from market_agent.settings.base import default_config_dir, default_state_dir
from market_agent.settings.core import (
    AnalysisSettings,
    AuditSettings,
    EndpointSettings,
    InvestigationSettings,
    ListenSettings,
    LLMSettings,
    Settings,
    find_config_file,
    load_settings,
    read_secret_file,
)
from market_agent.settings.logs import LogsSettings

__all__ = [
    "PLACEHOLDER",
    "PLACEHOLDERS",
    "ActionSpec",
    "ActionsSettings",
    "AnalysisSettings",
    "AuditSettings",
    "BackendSpec",
    "EndpointSettings",
    "InvestigationSettings",
    "LLMSettings",
    "ListenSettings",
    "LogsSettings",
    "NotifierSettings",
    "Settings",
    "default_config_dir",
    "default_state_dir",
    "find_config_file",
    "load_settings",
    "parse_duration",
    "read_secret_file",
]
