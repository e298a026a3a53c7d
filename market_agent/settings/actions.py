"""Typed settings for the `[actions]` and `[notifiers]` TOML sections.

    [actions]                      # global switches and guard limits
    enabled = true                 # the kill switch (a pause file works too)
    auto_remediate = false         # safety mode: `listen` only proposes
    min_confidence = 0.8
    max_executions = 3             # circuit breaker: per action, per window
    window = "1h"
    cooldown = "10m"

    [actions.restart]              # any other table is an action, by name
    backend = "command"            # command | systemd | docker | kubernetes | http
    argv = ["/usr/local/bin/restart-predictor", "{instance}"]
    alerts = ["PredictorDown"]     # allowlist for automatic runs (or `matchers`)
    verify_query = 'up{job="market-predictor"} == 1'

    [actions.restart.rollback]     # optional, same backend forms
    backend = "systemd"
    unit = "market-predictor-previous.service"

    [notifiers.oncall]
    type = "webhook"               # webhook (generic JSON) | slack
    url = "https://hooks.example/escalate"

Durations are seconds or strings such as "90s", "10m", "1h", "2d".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)

from market_agent.errors import closest
from market_agent.settings.base import Section as _Section
from market_agent.settings.base import default_state_dir

#: Placeholders an action's argv (and unit, container, ...) may use; nothing else.
PLACEHOLDERS = frozenset(
    {"service", "instance", "job", "alertname", "namespace", "pod", "container", "action_id"}
)
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
#: The names of the global keys of `[actions]`; every other key is an action table.
GLOBAL_KEYS = frozenset(
    {
        "enabled",
        "auto_remediate",
        "min_confidence",
        "max_executions",
        "window",
        "cooldown",
        "pause_file",
        "lock_dir",
        "recheck_alertmanager",
    }
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as "90s", "10m", "1h", "2d"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, '90s', '10m' or '1h'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 30, '90s', '10m' or '1h'")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class BackendSpec(_Section):
    """How an action (or its rollback) is carried out."""

    backend: Literal["command", "systemd", "docker", "kubernetes", "http"] = "command"
    #: command: the argv, run without a shell.
    argv: list[str] = Field(default_factory=list)
    cwd: Path | None = None
    #: Extra environment for command-like backends (the rest is a minimal, safe set).
    env: dict[str, str] = Field(default_factory=dict)
    #: systemd: `systemctl [--user] restart UNIT`.
    unit: str | None = None
    user: bool = False
    #: docker: `docker restart CONTAINER`.
    container: str | None = None
    #: kubernetes: `kubectl rollout restart deployment/DEPLOYMENT -n NAMESPACE`, then status.
    deployment: str | None = None
    namespace: str = "default"
    kube_context: str | None = None
    #: http: a POST to URL (JSON body: action, action_id, params).
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token: SecretStr | None = None
    verify_tls: bool = True
    #: The whole step (all its commands) must finish within this many seconds.
    timeout: Duration = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> BackendSpec:
        needed = {
            "command": ("argv", self.argv),
            "systemd": ("unit", self.unit),
            "docker": ("container", self.container),
            "kubernetes": ("deployment", self.deployment),
            "http": ("url", self.url),
        }[self.backend]
        if not needed[1]:
            raise ValueError(f"backend {self.backend!r} needs `{needed[0]}`")
        for text in self.templated():
            for name in PLACEHOLDER.findall(text):
                if name not in PLACEHOLDERS:
                    allowed = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
                    raise ValueError(f"unknown placeholder {{{name}}} (allowed: {allowed})")
        if self.url is not None and PLACEHOLDER.search(self.url):
            raise ValueError("placeholders are not allowed in `url`")
        return self

    def templated(self) -> list[str]:
        """The strings placeholders are substituted into."""
        values = [*self.argv, self.unit, self.container, self.deployment, self.namespace]
        return [value for value in values if value]


class ActionSpec(BackendSpec):
    """One named action: a backend, guards' allowlist, verification, rollback."""

    description: str = ""
    #: Allowlist for automatic runs: alert names, or label matchers (all labels of one).
    alerts: list[str] = Field(default_factory=list)
    matchers: list[dict[str, str]] = Field(default_factory=list)
    #: Placeholder values used when the alert has no such label (and for `restart`).
    params: dict[str, str] = Field(default_factory=dict)
    #: Verification: the predictor's /health must become healthy within this time...
    verify_health: bool = True
    verify_timeout: Duration = Field(default=60.0, gt=0)
    #: ...and, when set, this PromQL expression must return a non-empty result.
    verify_query: str | None = None
    rollback: BackendSpec | None = None
    #: Per-action overrides of the global guard limits.
    max_executions: int | None = Field(default=None, ge=1)
    window: Duration | None = None
    cooldown: Duration | None = None

    @model_validator(mode="after")
    def _known_params(self) -> ActionSpec:
        unknown = sorted(set(self.params) - PLACEHOLDERS)
        if unknown:
            raise ValueError(f"params: unknown placeholder {unknown[0]!r}")
        return self


class ActionsSettings(BaseModel):
    """`[actions]`: global switches and guard limits, plus one table per action."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    #: The global kill switch; `false` blocks every action.
    enabled: bool = True
    #: Safety mode is on unless this is true: automatic runs only propose.
    auto_remediate: bool = False
    min_confidence: float = Field(default=0.8, ge=0, le=1)
    #: Circuit breaker: at most this many executions per action per window.
    max_executions: int = Field(default=3, ge=1)
    window: Duration = 3600.0
    #: No automatic run of an action within this time after its last one.
    cooldown: Duration = 600.0
    #: While this file exists, every action is blocked (`touch` it to pause).
    pause_file: Path = Field(default_factory=lambda: default_state_dir() / "actions.paused")
    #: Single-flight lock files; default: `locks/` beside the audit log.
    lock_dir: Path | None = None
    #: Re-check with Alertmanager that the alert still fires, right before acting.
    recheck_alertmanager: bool = True

    __pydantic_extra__: dict[str, ActionSpec] = Field(init=False)

    @model_validator(mode="before")
    @classmethod
    def _tables_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if key not in GLOBAL_KEYS and not isinstance(value, dict | ActionSpec):
                    near = closest(key, GLOBAL_KEYS)
                    hint = (
                        f"did you mean {near!r}?"
                        if near
                        else f"an action is a table: [actions.{key}]"
                    )
                    raise ValueError(f"unknown key {key!r} ({hint})")
        return data

    @property
    def definitions(self) -> dict[str, ActionSpec]:
        """The configured actions by name."""
        return dict(self.__pydantic_extra__ or {})

    def limits(self, spec: ActionSpec) -> tuple[int, float, float]:
        """(max executions, window seconds, cooldown seconds) for one action."""
        return (
            spec.max_executions or self.max_executions,
            self.window if spec.window is None else spec.window,
            self.cooldown if spec.cooldown is None else spec.cooldown,
        )


class NotifierSettings(_Section):
    """`[notifiers.NAME]`: where escalations go."""

    #: webhook: a generic JSON POST; slack: a Slack-compatible incoming webhook.
    type: Literal["webhook", "slack"] = "webhook"
    #: A secret for Slack (the URL carries the token): never printed or logged.
    url: SecretStr
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token: SecretStr | None = None
    timeout: Duration = Field(default=5.0, gt=0)
    #: Attempts in all (retries on connection errors, 429 and 5xx).
    attempts: int = Field(default=3, ge=1, le=10)
    backoff: Duration = 0.5
    verify_tls: bool = True
