"""The read-only tools an investigating LLM may call, and nothing else.

Each tool reads through a client built from the configuration (Prometheus, the
predictor, Alertmanager), the configured log source or the audit log's action
figures: none can write, act, or reach a host that is not configured. The model's
arguments are validated here (pydantic, unknown keys refused) and passed as data:
PromQL as the `query` parameter of Prometheus's HTTP API, a log search as a plain
substring. Every result is a bounded JSON summary, redacted before anyone sees it.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from market_agent.clients.prometheus import finite
from market_agent.logs.base import LogQuery, LogSourceError
from market_agent.models import TRUNCATED
from market_agent.redact import redact_payload, redact_text
from market_agent.settings import parse_duration

if TYPE_CHECKING:
    from market_agent.clients import AlertmanagerClient, PredictorClient, PrometheusClient
    from market_agent.logs.base import LogLine, LogSource

#: Most series, alerts or log lines a summary lists (the counts are always given).
MAX_ITEMS = 20
MAX_LINE_CHARS = 300
#: Points a range query asks for per series (the step follows from the range).
RANGE_POINTS = 60
MAX_RANGE_SECONDS = 7 * 86400
MAX_LOG_LINES = 2000
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

History = Callable[[str], Mapping[str, Any]]


class ToolArgumentsError(Exception):
    """The model's arguments do not fit the tool; the message says which field."""


class ToolError(Exception):
    """The tool ran and failed (a PromQL error, a timeout); the model is told so."""


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _duration(value: str | None, default: str | None = None) -> str | None:
    if value is None:
        return default
    seconds = parse_duration(value)
    if not 0 < seconds <= MAX_RANGE_SECONDS:
        raise ValueError("must be between 1s and 7d")
    return value


class PrometheusArgs(_Args):
    promql: str = Field(min_length=1, max_length=2000, description="A PromQL expression.")
    range_: str | None = Field(
        default=None,
        alias="range",
        description="Look back this long (e.g. '30m', '6h') for a range query; "
        "omit for an instant query.",
    )

    @field_validator("range_")
    @classmethod
    def _range_ok(cls, value: str | None) -> str | None:
        return _duration(value)


class LogsArgs(_Args):
    query: str | None = Field(
        default=None, max_length=200, description="Plain text the lines contain (any case)."
    )
    since: str | None = Field(
        default=None, description="How far back, e.g. '15m' (the default), '2h'; at most 7d."
    )
    level: Literal["critical", "error", "warning", "info", "debug"] | None = Field(
        default=None, description="The lowest level wanted ('error': errors and critical)."
    )

    @field_validator("since")
    @classmethod
    def _since_ok(cls, value: str | None) -> str | None:
        return _duration(value, "15m")


class NoArgs(_Args):
    pass


class AlertsArgs(_Args):
    matchers: dict[str, str] | None = Field(
        default=None,
        max_length=10,
        description='Label equality matchers, e.g. {"alertname": "PredictorDown"}.',
    )

    @field_validator("matchers")
    @classmethod
    def _label_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, text in (value or {}).items():
            if not _LABEL_NAME.match(name) or len(text) > 200:
                raise ValueError(f"not a label matcher: {name[:50]!r}")
        return value


class HistoryArgs(_Args):
    alertname: str = Field(min_length=1, max_length=200, description="The alert's name.")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[_Args]
    run: Callable[[Any, float], Any]

    def spec(self) -> dict[str, Any]:
        """The OpenAI function definition (JSON schema from the arguments model)."""
        schema = self.args.model_json_schema(by_alias=True)
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        schema.setdefault("properties", {})
        function = {"name": self.name, "description": self.description, "parameters": schema}
        return {"type": "function", "function": function}

    def parse(self, arguments: Any) -> Any:
        if not isinstance(arguments, dict):
            raise ToolArgumentsError(f"arguments are a JSON {type(arguments).__name__}")
        try:
            return self.args.model_validate(arguments)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "(arguments)"
            raise ToolArgumentsError(f"{where}: {first['msg']}") from None


@dataclass
class Toolbox:
    """The tools available with this configuration (a tool without its source is left out)."""

    prometheus: PrometheusClient
    predictor: PredictorClient
    alertmanager: AlertmanagerClient
    logs: LogSource | None = None
    history: History | None = None
    max_result_chars: int = 3000
    tools: dict[str, Tool] = field(init=False)

    def __post_init__(self) -> None:
        tools = [
            Tool(
                "query_prometheus",
                "Run a PromQL query on Prometheus: an instant query, or a range query over "
                "`range`. Returns the series (labels) with their value, or first/last/min/max.",
                PrometheusArgs,
                self._query_prometheus,
            ),
            Tool(
                "predictor_status",
                "The Market Predictor's /health (healthy, reasons) and /status documents.",
                NoArgs,
                self._predictor_status,
            ),
            Tool(
                "alertmanager_alerts",
                "Active alerts in Alertmanager (with silenced/inhibited state), optionally "
                "only those whose labels equal `matchers`.",
                AlertsArgs,
                self._alertmanager_alerts,
            ),
        ]
        if self.logs is not None:
            tools.append(
                Tool(
                    "search_logs",
                    "Search the Market Predictor's recent log lines: counts per level and "
                    "the last matching lines.",
                    LogsArgs,
                    self._search_logs,
                )
            )
        if self.history is not None:
            tools.append(
                Tool(
                    "action_history",
                    "What market-agent's past actions did for this alert: attempts, verified "
                    "successes, success rate, median time to recover, recent outcomes.",
                    HistoryArgs,
                    self._action_history,
                )
            )
        self.tools = {tool.name: tool for tool in tools}

    def specs(self) -> list[dict[str, Any]]:
        return [tool.spec() for tool in self.tools.values()]

    def call(self, name: str, arguments: Any, *, timeout: float) -> str:
        """The tool's bounded, redacted summary as JSON text; `KeyError` for an unknown
        tool, `ToolArgumentsError` for bad arguments, `ToolError` when it fails."""
        tool = self.tools[name]
        parsed = tool.parse(arguments)
        try:
            result = tool.run(parsed, timeout)
        except (ToolError, ToolArgumentsError):
            raise
        except LogSourceError as exc:
            raise ToolError(f"logs ({exc.kind}): {exc}") from None
        except Exception as exc:  # a client's failure is the tool's answer
            raise ToolError(redact_text(str(exc).strip() or type(exc).__name__)) from None
        return bounded_json(redact_payload(result), self.max_result_chars)

    # The tools -----------------------------------------------------------------------

    def _query_prometheus(self, args: PrometheusArgs, timeout: float) -> Any:
        if args.range_ is None:
            samples = self.prometheus.query(args.promql, timeout=timeout)
            return {
                "type": "instant",
                "series": len(samples),
                "samples": [
                    {"labels": s.labels, "value": finite(s.value)} for s in samples[:MAX_ITEMS]
                ],
            }
        seconds = parse_duration(args.range_)
        end = datetime.now(UTC)
        step = max(1.0, math.ceil(seconds / RANGE_POINTS))
        series = self.prometheus.query_range(
            args.promql, start=end - timedelta(seconds=seconds), end=end, step=step, timeout=timeout
        )
        return {
            "type": "range",
            "range": args.range_,
            "step_seconds": step,
            "series": len(series),
            "summaries": [_series_summary(s.labels, s.points) for s in series[:MAX_ITEMS]],
        }

    def _predictor_status(self, args: NoArgs, timeout: float) -> Any:
        health = self.predictor.health(timeout=timeout)
        result: dict[str, Any] = {
            "health": {
                "healthy": health.healthy,
                "http_status": health.status_code,
                "status": health.status,
                "reasons": list(health.reasons),
                "version": health.version,
                "uptime_seconds": health.uptime_seconds,
            }
        }
        try:
            result["status"] = self.predictor.status(timeout=timeout)
        except Exception as exc:  # /health answered: its answer is worth giving alone
            result["status_error"] = str(exc)
        return result

    def _alertmanager_alerts(self, args: AlertsArgs, timeout: float) -> Any:
        alerts = self.alertmanager.alerts(args.matchers, timeout=timeout)
        return {
            "alerts": len(alerts),
            "listed": [
                {
                    "alertname": a.labels.get("alertname", ""),
                    "severity": a.labels.get("severity"),
                    "state": a.status.state,
                    "starts_at": a.starts_at.isoformat() if a.starts_at else None,
                    "summary": a.annotations.get("summary", "")[:MAX_LINE_CHARS],
                }
                for a in alerts[:MAX_ITEMS]
            ],
        }

    def _search_logs(self, args: LogsArgs, timeout: float) -> Any:
        assert self.logs is not None  # the tool is offered only with a log source
        window = args.since or "15m"
        since = datetime.now(UTC) - timedelta(seconds=parse_duration(window))
        query = LogQuery(since=since, contains=args.query, level=args.level, limit=MAX_LOG_LINES)
        lines = self.logs.read(query, timeout=timeout)
        return {
            "source": self.logs.name,
            "since": window,
            "lines": len(lines),
            "by_level": dict(Counter(line.level for line in lines)),
            "last": [_log_line(line) for line in lines[-MAX_ITEMS:]],
        }

    def _action_history(self, args: HistoryArgs, timeout: float) -> Any:
        assert self.history is not None  # the tool is offered only with an audit log
        figures = self.history(args.alertname).get(args.alertname)
        return {"alertname": args.alertname, "actions": figures or {}}


def _series_summary(labels: Mapping[str, str], points: Sequence[tuple[float, float]]) -> Any:
    values = [v for _, v in points if math.isfinite(v)]
    return {
        "labels": dict(labels),
        "points": len(points),
        "first": finite(points[0][1]) if points else None,
        "last": finite(points[-1][1]) if points else None,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }


def _log_line(line: LogLine) -> str:
    when = line.timestamp.isoformat(timespec="seconds") if line.timestamp else "-"
    message = line.message if len(line.message) <= MAX_LINE_CHARS else line.message[:MAX_LINE_CHARS]
    return f"{when} {line.level} {message}"


def bounded_json(value: Any, limit: int) -> str:
    """Compact JSON of `value`, cut to `limit` characters (marked) when longer."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED
