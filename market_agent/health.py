"""`status` as a library call: probe the predictor, Prometheus and Alertmanager at the
same time and sum it all up in one typed `StatusReport`.

Every probe runs in its own thread with its endpoint's timeout, so the whole check
takes about as long as the slowest endpoint's timeout, never the sum of them. The
`--json` form is `StatusReport.to_json_dict()` (schema version `SCHEMA_VERSION`,
documented in the README).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from market_agent import __version__
from market_agent.clients import (
    AlertmanagerClient,
    ClientError,
    DeadlineExceeded,
    FailureKind,
    Health,
    PredictorClient,
    PrometheusClient,
    RuleAlert,
    Silence,
    Target,
    finite,
    predictor_query,
    run_concurrently,
    scrape_labels,
)
from market_agent.errors import ExitCode
from market_agent.labels import is_managed
from market_agent.models import ApiAlert, utc_now
from market_agent.settings import Settings

SCHEMA_VERSION = 1
#: Grace beyond an endpoint's own timeout before its probe is abandoned; the client's
#: timeout normally fires first and says precisely what went wrong.
BACKSTOP_SECONDS = 0.25
#: Window of the request rate, error ratio and p95 latency.
RATE_WINDOW = "5m"
#: How far back from the end of the audit log to look for the last analysis.
AUDIT_TAIL_BYTES = 4 * 1024 * 1024

Overall = Literal["healthy", "degraded", "unhealthy"]
PredictorState = Literal["healthy", "unhealthy", "unreachable"]


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a probe failed: `kind` is a `FailureKind` value."""

    kind: str
    message: str
    status_code: int | None = None

    @classmethod
    def of(cls, exc: Exception) -> Failure:
        if isinstance(exc, ClientError):
            return cls(exc.kind.value, exc.detail, exc.status_code)
        if isinstance(exc, DeadlineExceeded):
            return cls(FailureKind.TIMEOUT.value, str(exc))
        raise exc  # a bug, not a service failure: let it surface

    @property
    def unreachable(self) -> bool:
        return FailureKind(self.kind).unreachable


@dataclass(slots=True)
class PredictorStatus:
    url: str
    state: PredictorState
    healthy: bool | None = None
    version: str | None = None
    uptime_seconds: float | None = None
    response_time_ms: float | None = None
    reasons: list[str] = field(default_factory=list)
    error: Failure | None = None


@dataclass(slots=True)
class TargetStatus:
    #: "up", "down", "unknown" (not scraped yet) or "missing" (not a target at all).
    health: str
    instance: str | None = None
    scrape_url: str | None = None
    last_error: str | None = None
    last_scrape: str | None = None


@dataclass(slots=True)
class AlertBrief:
    alertname: str
    #: Prometheus: "pending" or "firing"; Alertmanager: "active" or "suppressed".
    state: str
    severity: str | None
    summary: str
    starts_at: str | None
    silenced_by: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SilenceBrief:
    id: str
    matchers: list[str]
    created_by: str
    comment: str
    ends_at: str | None


@dataclass(slots=True)
class PrometheusStatus:
    url: str
    state: Literal["healthy", "degraded", "unreachable"]
    ready: bool | None = None
    target: TargetStatus | None = None
    request_rate: float | None = None
    error_ratio: float | None = None
    p95_latency_seconds: float | None = None
    alerts: list[AlertBrief] = field(default_factory=list)
    error: Failure | None = None


@dataclass(slots=True)
class AlertmanagerStatus:
    url: str
    state: Literal["healthy", "degraded", "unreachable"]
    version: str | None = None
    alerts: list[AlertBrief] = field(default_factory=list)
    silences: list[SilenceBrief] = field(default_factory=list)
    error: Failure | None = None


@dataclass(slots=True)
class AuditInfo:
    enabled: bool
    path: str
    exists: bool
    size_bytes: int | None
    error: str | None = None


@dataclass(slots=True)
class LastAnalysis:
    id: str | None
    created_at: str | None
    severity: str | None
    issue_type: str | None
    proposed_action: str | None
    analyzer: str | None
    alertnames: list[str]


@dataclass(slots=True)
class AgentStatus:
    version: str
    config_file: str | None
    audit: AuditInfo
    last_analysis: LastAnalysis | None


@dataclass(slots=True)
class StatusReport:
    overall: Overall
    checked_at: str
    duration_ms: float
    #: One line per reason the overall state is not healthy.
    problems: list[str]
    predictor: PredictorStatus
    prometheus: PrometheusStatus
    alertmanager: AlertmanagerStatus
    agent: AgentStatus
    schema_version: int = SCHEMA_VERSION

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.overall == "healthy" else ExitCode.ALERT

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_status(
    settings: Settings,
    *,
    predictor: PredictorClient,
    prometheus: PrometheusClient,
    alertmanager: AlertmanagerClient,
) -> StatusReport:
    """Probe all three services concurrently; never raises for a failing service."""
    started = time.monotonic()
    checked_at = utc_now()
    managed = settings.analysis.managed_service
    labels = scrape_labels(managed)
    calls = _probe_calls(predictor, prometheus, alertmanager, labels)
    agent = agent_status(settings)
    results = run_concurrently(calls)
    predictor_status = _predictor_status(predictor, results)
    prometheus_status = _prometheus_status(prometheus, results, labels, predictor.base_url, managed)
    alertmanager_status = _alertmanager_status(alertmanager, results, managed)
    overall, problems = _verdict(predictor_status, prometheus_status, alertmanager_status)
    return StatusReport(
        overall=overall,
        checked_at=checked_at.isoformat().replace("+00:00", "Z"),
        duration_ms=round((time.monotonic() - started) * 1000, 1),
        problems=problems,
        predictor=predictor_status,
        prometheus=prometheus_status,
        alertmanager=alertmanager_status,
        agent=agent,
    )


def _probe_calls(
    predictor: PredictorClient,
    prometheus: PrometheusClient,
    alertmanager: AlertmanagerClient,
    labels: Mapping[str, str],
) -> dict[str, tuple[Callable[[], Any], float]]:
    def query(name: str) -> Callable[[], float | None]:
        return partial(prometheus.query_value, predictor_query(name, labels, RATE_WINDOW))

    plan: dict[str, tuple[Any, Callable[[], Any]]] = {
        "predictor.health": (predictor, predictor.health),
        "predictor.status": (predictor, predictor.status),
        "prometheus.ready": (prometheus, prometheus.ready),
        "prometheus.targets": (prometheus, prometheus.targets),
        "prometheus.alerts": (prometheus, prometheus.alerts),
        "alertmanager.status": (alertmanager, alertmanager.status),
        "alertmanager.alerts": (alertmanager, alertmanager.alerts),
        "alertmanager.silences": (alertmanager, alertmanager.silences),
    }
    for name in ("request_rate", "error_ratio", "p95_latency_seconds"):
        plan[f"prometheus.{name}"] = (prometheus, query(name))
    return {
        name: (call, client.timeout + BACKSTOP_SECONDS) for name, (client, call) in plan.items()
    }


def _predictor_status(client: PredictorClient, results: Mapping[str, Any]) -> PredictorStatus:
    health = results["predictor.health"]
    status = results["predictor.status"]
    status = status if isinstance(status, dict) else {}
    if isinstance(health, Exception):
        failure = Failure.of(health)
        state: PredictorState = "unreachable" if failure.unreachable else "unhealthy"
        return PredictorStatus(client.display_url, state, error=failure, **_from_status(status))
    assert isinstance(health, Health)
    extra = _from_status(status)
    return PredictorStatus(
        url=client.display_url,
        state="healthy" if health.healthy else "unhealthy",
        healthy=health.healthy,
        version=_first(health.version, extra["version"]),
        uptime_seconds=_first(health.uptime_seconds, extra["uptime_seconds"]),
        response_time_ms=round(health.response_time_seconds * 1000, 1),
        reasons=list(health.reasons),
    )


def _first(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _from_status(status: Mapping[str, Any]) -> dict[str, Any]:
    version, uptime = status.get("version"), status.get("uptime_seconds")
    return {
        "version": version if isinstance(version, str) else None,
        "uptime_seconds": float(uptime) if isinstance(uptime, int | float) else None,
    }


def _prometheus_status(
    client: PrometheusClient,
    results: Mapping[str, Any],
    labels: Mapping[str, str],
    predictor_url: str,
    managed: Sequence[Mapping[str, str]],
) -> PrometheusStatus:
    names = [name for name in results if name.startswith("prometheus.")]
    failures = {name: Failure.of(results[name]) for name in names if _failed(results[name])}
    ready = results["prometheus.ready"]
    if "prometheus.ready" in failures and failures["prometheus.ready"].unreachable:
        return PrometheusStatus(
            client.display_url, "unreachable", error=failures["prometheus.ready"]
        )

    def value(name: str) -> Any:
        return None if f"prometheus.{name}" in failures else results[f"prometheus.{name}"]

    targets, alerts = value("targets"), value("alerts")
    return PrometheusStatus(
        url=client.display_url,
        state="healthy" if ready is True and not failures else "degraded",
        ready=ready if isinstance(ready, bool) else None,
        target=None if targets is None else _target(targets, labels, predictor_url),
        request_rate=finite(value("request_rate")),
        error_ratio=finite(value("error_ratio")),
        p95_latency_seconds=finite(value("p95_latency_seconds")),
        alerts=[] if alerts is None else _rule_alerts(alerts, managed),
        error=next(iter(failures.values()), None),
    )


def _target(
    targets: Sequence[Target], labels: Mapping[str, str], predictor_url: str
) -> TargetStatus:
    """The predictor's scrape target: the job's target at the predictor's address if any."""
    mine = [t for t in targets if all(t.labels.get(k) == v for k, v in labels.items())]
    if not mine:
        return TargetStatus(health="missing")
    address = urlsplit(predictor_url).netloc
    target = next((t for t in mine if urlsplit(t.scrape_url).netloc == address), mine[0])
    return TargetStatus(
        health=target.health,
        instance=target.labels.get("instance"),
        scrape_url=target.scrape_url,
        last_error=target.last_error or None,
        last_scrape=target.last_scrape,
    )


def _rule_alerts(
    alerts: Sequence[RuleAlert], managed: Sequence[Mapping[str, str]]
) -> list[AlertBrief]:
    return [
        AlertBrief(
            alertname=a.labels.get("alertname", ""),
            state=a.state,
            severity=a.labels.get("severity"),
            summary=a.annotations.get("summary", ""),
            starts_at=a.active_at,
        )
        for a in alerts
        if is_managed(a.labels, managed)
    ]


def _alertmanager_status(
    client: AlertmanagerClient, results: Mapping[str, Any], managed: Sequence[Mapping[str, str]]
) -> AlertmanagerStatus:
    names = [name for name in results if name.startswith("alertmanager.")]
    failures = {name: Failure.of(results[name]) for name in names if _failed(results[name])}
    if "alertmanager.status" in failures and failures["alertmanager.status"].unreachable:
        return AlertmanagerStatus(
            client.display_url, "unreachable", error=failures["alertmanager.status"]
        )
    status, alerts, silences = (
        None if name in failures else results[name]
        for name in ("alertmanager.status", "alertmanager.alerts", "alertmanager.silences")
    )
    mine = [a for a in alerts or [] if is_managed(a.labels, managed)]
    return AlertmanagerStatus(
        url=client.display_url,
        state="degraded" if failures else "healthy",
        version=_am_version(status),
        alerts=[_api_alert(a) for a in mine],
        silences=[_silence(s) for s in silences or [] if _concerns(s, managed, mine)],
        error=next(iter(failures.values()), None),
    )


def _am_version(status: Any) -> str | None:
    if not isinstance(status, dict):
        return None
    version = (status.get("versionInfo") or {}).get("version")
    return version if isinstance(version, str) else None


def _api_alert(alert: ApiAlert) -> AlertBrief:
    return AlertBrief(
        alertname=alert.labels.get("alertname", ""),
        state=alert.status.state,
        severity=alert.labels.get("severity"),
        summary=alert.annotations.get("summary", ""),
        starts_at=alert.starts_at.isoformat() if alert.starts_at else None,
        silenced_by=list(alert.status.silenced_by),
    )


def _concerns(
    silence: Silence, managed: Sequence[Mapping[str, str]], alerts: Sequence[ApiAlert]
) -> bool:
    """A silence of one of the predictor's alerts, or one that selects its labels."""
    if any(silence.id in alert.status.silenced_by for alert in alerts):
        return True
    for matcher in managed:
        relevant = [m for m in silence.matchers if m.name in matcher]
        if relevant and all(m.matches(matcher) for m in relevant):
            return True
    return False


def _silence(silence: Silence) -> SilenceBrief:
    return SilenceBrief(
        id=silence.id,
        matchers=[str(m) for m in silence.matchers],
        created_by=silence.created_by,
        comment=silence.comment,
        ends_at=silence.ends_at,
    )


def _failed(result: Any) -> bool:
    return isinstance(result, Exception)


def _verdict(
    predictor: PredictorStatus, prometheus: PrometheusStatus, alertmanager: AlertmanagerStatus
) -> tuple[Overall, list[str]]:
    problems: list[str] = []
    if predictor.state == "unreachable":
        problems.append(f"predictor unreachable: {_message(predictor.error)}")
    elif predictor.state == "unhealthy":
        why = "; ".join(predictor.reasons) or _message(predictor.error)
        problems.append(f"predictor unhealthy: {why}")
    overall: Overall = "unhealthy" if problems else "healthy"
    problems += _monitoring_problems(prometheus, alertmanager)
    if problems and overall == "healthy":
        overall = "degraded"
    return overall, problems


def _monitoring_problems(
    prometheus: PrometheusStatus, alertmanager: AlertmanagerStatus
) -> list[str]:
    problems = []
    if prometheus.state == "unreachable":
        problems.append(f"prometheus unreachable: {_message(prometheus.error)}")
    elif prometheus.ready is False:
        problems.append("prometheus is not ready yet")
    elif prometheus.error is not None:
        problems.append(f"prometheus: {prometheus.error.message}")
    target = prometheus.target
    if target is not None and target.health != "up":
        detail = f": {target.last_error}" if target.last_error else ""
        problems.append(f"prometheus scrape target of the predictor is {target.health}{detail}")
    if alertmanager.state == "unreachable":
        problems.append(f"alertmanager unreachable: {_message(alertmanager.error)}")
    elif alertmanager.error is not None:
        problems.append(f"alertmanager: {alertmanager.error.message}")
    firing = (
        [a for a in alertmanager.alerts if a.state == "active"]
        if alertmanager.state != "unreachable"
        else [a for a in prometheus.alerts if a.state == "firing"]
    )
    problems += [f"alert {a.alertname} is firing ({a.severity or 'no severity'})" for a in firing]
    return problems


def _message(failure: Failure | None) -> str:
    return failure.message if failure is not None else "unknown error"


# The agent's own state ------------------------------------------------------------


def agent_status(settings: Settings) -> AgentStatus:
    """Config in use, audit log path and size, and the last analysis it recorded."""
    audit = settings.audit
    path = audit.path.expanduser()
    info = AuditInfo(enabled=audit.enabled, path=str(path), exists=False, size_bytes=None)
    last = None
    try:
        info.size_bytes = path.stat().st_size
        info.exists = True
        last = last_analysis(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        info.error = f"cannot read: {exc.strerror or exc}"
    source = settings.source
    return AgentStatus(__version__, str(source) if source else None, info, last)


def last_analysis(path: Path, limit: int = AUDIT_TAIL_BYTES) -> LastAnalysis | None:
    """The newest `analysis` record within the last `limit` bytes of the audit log."""
    record = _last_record(path, b'"kind":"analysis"', limit)
    if record is None:
        return None
    alerts = record.get("alerts")
    if not isinstance(alerts, list):
        alerts = []
    return LastAnalysis(
        id=record.get("id"),
        created_at=record.get("created_at") or record.get("ts"),
        severity=record.get("severity"),
        issue_type=record.get("issue_type"),
        proposed_action=record.get("proposed_action"),
        analyzer=record.get("analyzer"),
        alertnames=sorted({str(a.get("alertname")) for a in alerts if isinstance(a, dict)}),
    )


def _last_record(path: Path, marker: bytes, limit: int) -> dict[str, Any] | None:
    """Read backwards in chunks; the log is append-only, so the newest is last."""
    chunk = 64 * 1024
    with path.open("rb") as handle:
        position = handle.seek(0, 2)
        end = position
        carry = b""
        while position > 0 and end - position < limit:
            step = min(chunk, position)
            position -= step
            handle.seek(position)
            lines = (handle.read(step) + carry).split(b"\n")
            carry = lines.pop(0) if position > 0 else b""
            for line in reversed(lines):
                record = _record(line, marker)
                if record is not None:
                    return record
    return None


def _record(line: bytes, marker: bytes) -> dict[str, Any] | None:
    if marker not in line:
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
