"""One typed settings object, loaded once per invocation.

Precedence, lowest first: built-in defaults; a TOML file (``--config PATH``, else
``$MARKET_AGENT_CONFIG``, else ``./market-agent.toml``, else
``$XDG_CONFIG_HOME/market-agent/config.toml``); ``MARKET_AGENT_<SECTION>__<KEY>``
environment variables; command-line flags.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from market_agent.errors import ConfigError, closest, describe_problem
from market_agent.settings.actions import ActionSpec, ActionsSettings, NotifierSettings
from market_agent.settings.base import Section as _Section
from market_agent.settings.base import default_config_dir, default_state_dir
from market_agent.settings.logs import LogsSettings

ENV_PREFIX = "MARKET_AGENT_"
#: Environment variables with the prefix that are not settings.
_NON_SETTING_ENV = {"CONFIG", "DEBUG"}


class EndpointSettings(_Section):
    """An HTTP service the agent talks to."""

    url: str
    timeout: float = Field(default=5.0, gt=0)
    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    verify_tls: bool = True
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) < 8:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    def token(self) -> str | None:
        """The bearer token, read from the file when one is configured."""
        if self.bearer_token is not None:
            return self.bearer_token.get_secret_value()
        if self.bearer_token_file is not None:
            return read_secret_file(self.bearer_token_file, "bearer_token_file")
        return None


class PredictorSettings(EndpointSettings):
    url: str = "http://127.0.0.1:8000"


class PrometheusSettings(EndpointSettings):
    url: str = "http://127.0.0.1:9090"


class AlertmanagerSettings(EndpointSettings):
    url: str = "http://127.0.0.1:9093"


class LLMSettings(_Section):
    """An OpenAI-compatible chat endpoint (OpenAI, Ollama, vLLM, ...)."""

    #: None: on when an API key or a base URL is configured.
    enabled: bool | None = None
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=1, ge=0, le=1)
    max_tokens: int = Field(default=800, gt=0)
    temperature: float = Field(default=0.0, ge=0, le=2)
    #: How structured output is requested; `function_calling` suits older local servers.
    structured_output: Literal["json_schema", "function_calling", "json_mode"] = "json_schema"
    #: Bounds on LLM use during bursts (listen): parallel calls and calls per minute.
    max_concurrency: int = Field(default=2, ge=1)
    requests_per_minute: int = Field(default=60, ge=1)

    def resolved_api_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        return os.environ.get(self.api_key_env) or None

    @property
    def active(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        return bool(self.base_url or self.resolved_api_key())


class InvestigationSettings(_Section):
    """`[analysis.investigation]`: the limits of `analysis.mode = "investigate"`, enforced
    by market-agent (never by the model)."""

    #: Tool calls per investigation; a call beyond it is refused and a verdict asked for.
    max_tool_calls: int = Field(default=6, ge=0, le=50)
    #: Seconds for the whole investigation, model and tool time included.
    deadline: float = Field(default=60.0, gt=0, le=3600)
    #: Tokens the model reads and writes over the whole investigation (server's counts).
    max_input_tokens: int = Field(default=50_000, ge=1000)
    max_output_tokens: int = Field(default=5_000, ge=100)
    #: Characters of one tool result given to the model and kept in the audit log.
    max_result_chars: int = Field(default=3_000, ge=200, le=100_000)
    #: Seconds for one tool call (within the deadline).
    tool_timeout: float = Field(default=10.0, gt=0, le=600)


class AnalysisSettings(_Section):
    #: Label matchers for the managed service: any one matcher, all of its labels.
    managed_service: list[dict[str, str]] = Field(
        default_factory=lambda: [{"job": "market-predictor"}, {"service": "market-predictor"}]
    )
    #: Extra rules, same schema as the built-in table; they take precedence.
    rules: list[dict[str, Any]] = Field(default_factory=list)
    #: Gather live context (predictor health, key metrics) for managed-service alerts.
    context: bool = False
    context_timeout: float = Field(default=3.0, gt=0)
    #: `single`: one LLM request per notification; `investigate`: the LLM may call
    #: read-only tools first, within `[analysis.investigation]`'s limits.
    mode: Literal["single", "investigate"] = "single"
    investigation: InvestigationSettings = Field(default_factory=InvestigationSettings)


class AuditSettings(_Section):
    enabled: bool = True
    path: Path = Field(default_factory=lambda: default_state_dir() / "audit.jsonl")
    fsync: bool = True
    #: HMAC-SHA256 key for the hash chain (a file readable by its owner only).
    key_file: Path | None = None
    #: Rotate the log before a write would take it past this size.
    max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    #: Rotated files kept (audit.jsonl.1 ... .keep); unset keeps them all.
    keep: int | None = Field(default=None, ge=1)


class ListenSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=9095, ge=0, le=65535)
    token: SecretStr | None = None
    token_file: Path | None = None
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    queue_size: int = Field(default=1000, ge=1)
    workers: int = Field(default=2, ge=1)
    #: Where analysis runs: a process of its own (a second core), or threads beside
    #: the HTTP server.
    analysis: Literal["process", "threads"] = "process"
    grace_period: float = Field(default=10.0, ge=0)
    #: /readyz answers 503 (analysis_stalled) when queued work has waited this long
    #: with no analysis journaled; above the slowest analysis (LLM timeout x retries).
    stall_seconds: float = Field(default=120.0, gt=0)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    insecure_no_auth: bool = False
    #: Open connections; one more is answered 503 and closed at once.
    max_connections: int = Field(default=512, ge=1, le=100_000)
    #: Seconds for a request's headers to arrive, from its first byte (or the connection).
    header_timeout: float = Field(default=10.0, gt=0, le=3600)
    #: Seconds for a whole request (headers and body) to arrive, counted the same way.
    request_timeout: float = Field(default=30.0, gt=0, le=3600)
    #: Seconds an idle connection is kept open between requests.
    keepalive_timeout: float = Field(default=5.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _request_outlasts_headers(self) -> ListenSettings:
        if self.request_timeout < self.header_timeout:
            raise ValueError("listen.request_timeout must be at least listen.header_timeout")
        return self

    def resolved_token(self) -> str | None:
        """The webhook bearer token; a token file (e.g. `--token-file`) wins over `token`."""
        if self.token_file is not None:
            return read_secret_file(self.token_file, "listen.token_file")
        if self.token is not None:
            return self.token.get_secret_value()
        return None


class Settings(_Section):
    """Everything configurable. Sections mirror the TOML tables."""

    predictor: PredictorSettings = Field(default_factory=PredictorSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    analysis: AnalysisSettings = Field(default_factory=AnalysisSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    listen: ListenSettings = Field(default_factory=ListenSettings)
    #: Remediation actions and their guards (`market_agent.settings.actions`).
    actions: ActionsSettings = Field(default_factory=ActionsSettings)
    #: Escalation notifiers by name (`market_agent.settings.actions`).
    notifiers: dict[str, NotifierSettings] = Field(default_factory=dict)
    #: Where the predictor's logs are (`market_agent.settings.logs`); None: no logs.
    logs: LogsSettings | None = None

    #: The config file the settings came from, if any (not a setting itself).
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source


def read_secret_file(path: Path, key: str) -> str:
    try:
        return path.expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None


def find_config_file(explicit: Path | None) -> Path | None:
    """The config file to use, by precedence; None when there is none."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(ENV_PREFIX + "CONFIG")
    if from_env:
        return Path(from_env)
    for candidate in (Path("market-agent.toml"), default_config_dir() / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_settings(
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings from file, environment and flag overrides (dotted keys).

    `flags` names the command-line flag behind an override (`{"listen.port":
    "--port"}`), so that a problem with it is reported by the name the user typed.
    """
    path = find_config_file(config_path)
    data = _read_toml(path) if path is not None else {}
    env_data = _env_overrides(os.environ if environ is None else environ)
    for dotted, value in env_data.items():
        _set_dotted(data, dotted, value)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, value)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        from_env = {key: f"{_env_name(key)} (setting {key})" for key in env_data}
        names = {**from_env, **_given(overrides, flags)}
        raise ConfigError(_describe(exc, path, names)) from None
    settings._source = path
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None


def _env_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """`MARKET_AGENT_LLM__MODEL=x` -> {"llm.model": "x"}."""
    found: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :]
        if key in _NON_SETTING_ENV:
            continue
        found[key.lower().replace("__", ".")] = value
    return found


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"setting {dotted!r}: {part!r} is not a table")
        node = child
    node[leaf] = value


def _given(overrides: Mapping[str, Any] | None, flags: Mapping[str, str] | None) -> dict[str, str]:
    """The flag behind each override that was given."""
    given = {key for key, value in (overrides or {}).items() if value is not None}
    return {key: flag for key, flag in (flags or {}).items() if key in given}


def _env_name(key: str) -> str:
    return f"${ENV_PREFIX}{key.upper().replace('.', '__')}"


def _describe(exc: ValidationError, path: Path | None, names: Mapping[str, str]) -> str:
    """Every problem, each as a sentence naming what the user wrote: the flag, the
    environment variable or the config key (with a "did you mean" for a near miss)."""
    problems = [_problem(error, names) for error in exc.errors(include_url=False)]
    origin = f"config file {path}: " if path is not None else ""
    if len(problems) == 1:
        return origin + problems[0]
    listed = "\n".join(f"  {problem}" for problem in problems)
    return f"{origin or 'settings: '}{len(problems)} problems:\n{listed}"


def _problem(error: Mapping[str, Any], names: Mapping[str, str]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    key = ".".join(loc) or "(top level)"
    if error["type"] != "extra_forbidden":
        unit = "seconds" if _is_seconds(loc) else ""
        return describe_problem(error, names.get(key, f"key '{key}'"), unit=unit)
    parents = loc[:-1]
    near = closest(loc[-1], _known_keys(parents))
    guess = ".".join([*parents, near]) if near else ""
    if key in names:  # an environment variable
        hint = f" (did you mean {_env_name(guess)}?)" if guess else ""
        return f"{_env_name(key)} is not a setting{hint}"
    return f"unknown key '{key}'" + (f" (did you mean '{guess}'?)" if guess else "")


def _is_seconds(loc: tuple[str, ...]) -> bool:
    leaf = loc[-1] if loc else ""
    return leaf.endswith(("timeout", "_period", "_seconds")) or leaf in ("window", "cooldown")


def _known_keys(parents: tuple[str, ...]) -> list[str]:
    """The keys a table accepts, found by walking the models along `parents`."""
    model: Any = Settings
    for part in parents:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:  # a name of the user's: an action or a notifier
            model = ActionSpec if model is ActionsSettings else model
            continue
        model = _model_of(field.annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    """The settings model inside `X`, `X | None` or `dict[str, X]`, if any."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
