"""The Market Predictor's own endpoints, and the PromQL for the metrics it exposes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from market_agent.clients.base import ServiceClient
from market_agent.clients.prometheus import label_selector

#: /health answers 503 with a JSON body listing reasons when the service is unhealthy.
_HEALTH_ANSWERS = (200, 503)
_HEALTHY_WORDS = frozenset({"healthy", "ok", "up", "pass", "green"})


@dataclass(frozen=True, slots=True)
class Health:
    """What `GET /health` said; an unhealthy answer is an answer, not a failure."""

    healthy: bool
    status_code: int
    status: str
    version: str | None
    uptime_seconds: float | None
    reasons: tuple[str, ...]
    response_time_seconds: float


class PredictorClient(ServiceClient):
    """`GET /health`, `/status` (JSON) and `/metrics` (Prometheus text)."""

    service = "predictor"

    def health(self, *, timeout: float | None = None) -> Health:
        """Healthy when `/health` answers 200; 503 with reasons means unhealthy."""
        response = self.get("/health", ok=_HEALTH_ANSWERS, timeout=timeout)
        body = _json_object(response)
        if response.status_code == 503 and body is None:
            # Not the predictor's own "unhealthy" answer: a proxy or load balancer error.
            raise self.invalid_body(response, "HTTP 503 without the predictor's JSON body")
        body = body or {}
        status = str(body.get("status") or ("healthy" if response.status_code == 200 else ""))
        reasons = body.get("reasons")
        return Health(
            healthy=response.status_code == 200 and status.lower() in _HEALTHY_WORDS,
            status_code=response.status_code,
            status=status or "unhealthy",
            version=_text(body.get("version")),
            uptime_seconds=_number(body.get("uptime")),
            reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
            response_time_seconds=response.elapsed.total_seconds(),
        )

    def status(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The `/status` document (version, uptime, model, market data, faults)."""
        return self.get_object("/status", timeout=timeout)

    def metrics(self, *, timeout: float | None = None) -> str:
        """The raw Prometheus exposition text of `/metrics`."""
        return self.get("/metrics", timeout=timeout).text


def _json_object(response: Any) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# PromQL for the predictor's metrics (names are the service's contract) -----------

#: name -> expression template; `{sel}` is a label selector body, `{window}` a range.
PREDICTOR_QUERIES: Mapping[str, str] = {
    "up": "min(up{{{sel}}})",
    "request_rate": "sum(rate(market_predictor_prediction_requests_total{{{sel}}}[{window}]))",
    "error_ratio": (
        'sum(rate(market_predictor_prediction_requests_total{{{sel},code=~"5.."}}[{window}]))'
        " / sum(rate(market_predictor_prediction_requests_total{{{sel}}}[{window}]))"
    ),
    "p95_latency_seconds": (
        "histogram_quantile(0.95, sum by (le) "
        "(rate(market_predictor_request_duration_seconds_bucket{{{sel}}}[{window}])))"
    ),
    "feed_lag_seconds": "max(market_predictor_feed_lag_seconds{{{sel}}})",
    "accuracy": "min(market_predictor_model_accuracy{{{sel}}})",
}


def predictor_query(name: str, labels: Mapping[str, str], window: str = "5m") -> str:
    """One of `PREDICTOR_QUERIES` for the series with exactly these label values."""
    if not labels:
        raise ValueError("a predictor query needs at least one label (e.g. job)")
    return PREDICTOR_QUERIES[name].format(sel=label_selector(labels), window=window)


def scrape_labels(managed_service: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """Labels selecting the predictor's own series: the `job` of the managed-service matchers."""
    for matcher in managed_service:
        if "job" in matcher:
            return {"job": matcher["job"]}
    return dict(managed_service[0]) if managed_service else {"job": "market-predictor"}
