"""Live context for alerts about the managed service (`analyze --context`, `listen`).

For a notification with at least one alert on the managed service, gather at the same
time, within one time budget: the predictor's `/health`, and from Prometheus the
predictor's `up`, error ratio, p95 latency, feed lag and accuracy over the last 15
minutes. A source that cannot be reached is recorded as such; nothing here raises
for a failing service, and the whole gathering takes at most `timeout` seconds.

Shape of the dict (the rule analyzer reads `predictor` and `metrics`; it also goes
to the LLM, fenced as data, and into `--json` output and the audit log)::

    {"gathered_at": "...Z", "elapsed_ms": 12.5, "timeout_seconds": 3.0,
     "predictor": {"reachable": bool, "healthy": bool | None, "error": str | None,
                   "error_kind": str | None, "status_code": int | None,
                   "version": str | None, "uptime_seconds": float | None,
                   "reasons": [str], "response_time_ms": float | None, "url": str},
     "metrics": {"up", "error_ratio", "p95_latency_seconds", "feed_lag_seconds",
                 "accuracy": float | None (now),
                 "over_window": {name: {"min": float, "max": float} | None},
                 "labels": {"job": ..., "instance"?: ...},
                 "window": {"start": "...Z", "end": "...Z", "step_seconds": 15.0},
                 "errors": {name: str} (queries that failed when others did not)},
     "logs": {...} | None (`[logs]` configured: `market_agent.logs.summary`'s shape,
              None when the read failed),
     "sources": {"predictor" | "prometheus" | "logs": {"ok": bool, "error": str | None,
                                                       "kind": str | None}}}
                (`logs` also has `lines` and `empty`)

Logs are read for a window from `window_before` before the earliest alert's start
to now, at the same time as the rest and within the same budget.

A notification with no alert on the managed service gets `{"skipped": reason}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from market_agent.clients import (
    ClientError,
    DeadlineExceeded,
    FailureKind,
    Health,
    PredictorClient,
    PrometheusClient,
    Series,
    finite,
    predictor_query,
    run_concurrently,
    scrape_labels,
)
from market_agent.labels import is_managed
from market_agent.logs.base import LogQuery, LogSource, LogSourceError
from market_agent.logs.summary import summarize
from market_agent.models import Alert, Notification, utc_now

WINDOW = timedelta(minutes=15)
#: Prometheus's default scrape interval: a finer step only repeats samples.
STEP_SECONDS = 15.0
#: Rates (error ratio, p95) are computed over this range at each step.
RATE_WINDOW = "5m"
METRICS = ("up", "error_ratio", "p95_latency_seconds", "feed_lag_seconds", "accuracy")


@dataclass(frozen=True, slots=True)
class LogReading:
    """How to read the predictor's logs for an alert (`[logs]`)."""

    source: LogSource
    #: Seconds before the earliest alert's start the window opens.
    window_before: float = 600.0
    #: Seconds one read may take (the context's own budget caps it too).
    timeout: float = 2.0
    max_lines: int = 5000


class ContextGatherer:
    """A `ContextProvider` bound to the clients and settings of one invocation."""

    def __init__(
        self,
        predictor: PredictorClient,
        prometheus: PrometheusClient,
        *,
        managed_service: Sequence[Mapping[str, str]],
        timeout: float,
        logs: LogReading | None = None,
    ) -> None:
        self.predictor = predictor
        self.prometheus = prometheus
        self.managed_service = managed_service
        self.timeout = timeout
        self.logs = logs

    def __call__(self, notification: Notification) -> dict[str, Any]:
        return gather_context(
            notification,
            predictor=self.predictor,
            prometheus=self.prometheus,
            managed_service=self.managed_service,
            timeout=self.timeout,
            logs=self.logs,
        )


def gather_context(
    notification: Notification,
    *,
    predictor: PredictorClient,
    prometheus: PrometheusClient,
    managed_service: Sequence[Mapping[str, str]],
    timeout: float,
    logs: LogReading | None = None,
) -> dict[str, Any]:
    """Predictor health, key metrics and logs around the alert; see the module docstring."""
    alerts = [a for a in notification.alerts if is_managed(a.labels, managed_service)]
    if not alerts:
        return {"skipped": "no alert in this notification concerns the managed service"}
    started = time.monotonic()
    end = utc_now()  # not rounded down: the newest samples must be inside the window
    labels = metric_labels(alerts, managed_service)
    calls = _calls(predictor, prometheus, labels, end, timeout)
    if logs is not None:
        calls["logs"] = _log_call(logs, log_window_start(alerts, end, logs), end, timeout)
    results = run_concurrently(calls)
    sources = _sources(results)
    context: dict[str, Any] = {
        "gathered_at": _iso(end),
        "elapsed_ms": 0.0,
        "timeout_seconds": timeout,
        "predictor": _predictor(predictor, results["health"]),
        "metrics": _metrics(results, labels, end),
        "sources": sources,
    }
    if logs is not None:
        context["logs"], sources["logs"] = _logs(results["logs"])
    context["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
    return context


def log_window_start(alerts: Sequence[Alert], end: datetime, logs: LogReading) -> datetime:
    """`window_before` before the earliest alert's start (a start in the future, or
    none at all, counts as now)."""
    starts = [a.starts_at for a in alerts if a.starts_at and a.starts_at.tzinfo is not None]
    earliest = min([end, *(s for s in starts if s.year > 1)])
    return earliest - timedelta(seconds=logs.window_before)


def _log_call(
    logs: LogReading, start: datetime, end: datetime, timeout: float
) -> tuple[Callable[[], Any], float]:
    budget = min(timeout, logs.timeout)

    def read() -> dict[str, Any]:
        query = LogQuery(since=start, limit=logs.max_lines)
        try:
            lines = logs.source.read(query, timeout=budget)
        except LogSourceError:
            raise
        except Exception as exc:  # a log line that trips a parser must not stop the analysis
            raise LogSourceError(f"reading logs failed: {type(exc).__name__}") from exc
        return summarize(lines, source=logs.source.name, start=start, end=end, limit=query.limit)

    return read, budget


def _logs(result: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the summary or None, its `sources` entry)."""
    if isinstance(result, dict):
        lines = result["lines"]
        return result, {"ok": True, "error": None, "kind": None, "lines": lines, "empty": not lines}
    if isinstance(result, LogSourceError):
        error, kind = str(result), result.kind
    elif isinstance(result, DeadlineExceeded):
        error, kind = f"logs: {result}", "timeout"
    else:
        error, kind = f"reading logs failed: {type(result).__name__}", "error"
    return None, {"ok": False, "error": error, "kind": kind, "lines": 0, "empty": True}


def metric_labels(
    alerts: Sequence[Alert], managed_service: Sequence[Mapping[str, str]]
) -> dict[str, str]:
    """The alerts' common `job` and `instance`, else the managed service's job."""
    labels = scrape_labels(managed_service)
    for name in ("job", "instance"):
        values = {alert.labels.get(name) for alert in alerts}
        if len(values) == 1 and (value := values.pop()):  # not None, not ""
            labels[name] = value
    return labels


def _calls(
    predictor: PredictorClient,
    prometheus: PrometheusClient,
    labels: Mapping[str, str],
    end: datetime,
    timeout: float,
) -> dict[str, tuple[Callable[[], Any], float]]:
    calls: dict[str, tuple[Callable[[], Any], float]] = {
        "health": (partial(predictor.health, timeout=timeout), timeout)
    }
    for name in METRICS:
        query = partial(
            prometheus.query_range,
            predictor_query(name, labels, RATE_WINDOW),
            start=end - WINDOW,
            end=end,
            step=STEP_SECONDS,
            timeout=timeout,
        )
        calls[name] = (query, timeout)
    return calls


def _predictor(client: PredictorClient, result: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "reachable": True,
        "healthy": None,
        "error": None,
        "error_kind": None,
        "status_code": None,
        "version": None,
        "uptime_seconds": None,
        "reasons": [],
        "response_time_ms": None,
        "url": client.display_url,
    }
    if isinstance(result, Health):
        facts.update(
            healthy=result.healthy,
            status_code=result.status_code,
            version=result.version,
            uptime_seconds=result.uptime_seconds,
            reasons=list(result.reasons),
            response_time_ms=round(result.response_time_seconds * 1000, 1),
        )
        return facts
    kind, message, status_code = _failure(result)
    facts.update(error=message, error_kind=kind.value, status_code=status_code)
    if kind.unreachable:
        facts["reachable"] = False
    elif kind is FailureKind.INVALID_BODY or (status_code or 0) >= 500:
        facts["healthy"] = False
    return facts


def _metrics(
    results: Mapping[str, Any], labels: Mapping[str, str], end: datetime
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    over_window: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in METRICS:
        result = results[name]
        if isinstance(result, Exception):
            _, errors[name], _ = _failure(result)
            metrics[name], over_window[name] = None, None
            continue
        metrics[name], over_window[name] = _summarize(result, end)
    metrics.update(
        over_window=over_window,
        labels=dict(labels),
        window={
            "start": _iso(end - WINDOW),
            "end": _iso(end),
            "step_seconds": STEP_SECONDS,
        },
        # When nothing answered, `sources.prometheus` says why once.
        errors=errors if len(errors) < len(METRICS) else {},
    )
    return metrics


def _summarize(
    series: Sequence[Series], end: datetime
) -> tuple[float | None, dict[str, float] | None]:
    """(value now, {"min", "max"} over the window); the queries aggregate to one series."""
    points = [(t, v) for s in series for t, v in s.points if finite(v) is not None]
    if not points:
        return None, None
    values = [v for _, v in points]
    last_time, last_value = max(points)
    # A series that stopped (e.g. the predictor went away) has no value *now*.
    now = last_value if last_time >= end.timestamp() - STEP_SECONDS / 2 else None
    return now, {"min": min(values), "max": max(values)}


def _sources(results: Mapping[str, Any]) -> dict[str, Any]:
    """`ok`: the source answered (Prometheus: at least one query); `error`: the first failure."""
    failures = [results[name] for name in METRICS if isinstance(results[name], Exception)]
    prometheus = _source(failures[0] if failures else None)
    prometheus["ok"] = len(failures) < len(METRICS)
    return {"predictor": _source(results["health"]), "prometheus": prometheus}


def _source(result: Any) -> dict[str, Any]:
    if not isinstance(result, Exception):
        return {"ok": True, "error": None, "kind": None}
    kind, message, _ = _failure(result)
    return {"ok": False, "error": message, "kind": kind.value}


def _failure(exc: Exception) -> tuple[FailureKind, str, int | None]:
    if isinstance(exc, ClientError):
        return exc.kind, exc.detail, exc.status_code
    if isinstance(exc, DeadlineExceeded):
        return FailureKind.TIMEOUT, str(exc), None
    raise exc  # a bug, not a service failure


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
