"""Prometheus HTTP API: instant and range queries, alerts, targets and readiness.

PromQL errors carry Prometheus's own message (`PromQLError`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from market_agent.clients.base import ClientError, FailureKind, ServiceClient
from market_agent.errors import ConfigError

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class PromQLError(ClientError):
    """Prometheus rejected or failed a query; the message is Prometheus's own."""


@dataclass(frozen=True, slots=True)
class Sample:
    labels: dict[str, str]
    value: float
    timestamp: float


@dataclass(frozen=True, slots=True)
class Series:
    labels: dict[str, str]
    #: (unix time, value) pairs, oldest first.
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Target:
    labels: dict[str, str]
    scrape_pool: str
    scrape_url: str
    #: "up", "down" or "unknown" (not scraped yet).
    health: str
    last_error: str
    last_scrape: str | None


@dataclass(frozen=True, slots=True)
class RuleAlert:
    """An alert as Prometheus's rules see it: pending or firing."""

    labels: dict[str, str]
    annotations: dict[str, str]
    state: str
    active_at: str | None
    value: float | None


Instant = float | datetime


class PrometheusClient(ServiceClient):
    """Thin, typed access to `/api/v1/*` and `/-/ready`."""

    service = "prometheus"

    def query(
        self, expr: str, *, at: Instant | None = None, timeout: float | None = None
    ) -> list[Sample]:
        """Instant query; a scalar result comes back as one sample without labels."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = _instant(at)
        data = self._api("/api/v1/query", params, timeout)
        kind, result = data.get("resultType"), data.get("result")
        try:
            if kind == "scalar":
                timestamp, value = _point(result)
                return [Sample({}, value, timestamp)]
            if kind == "vector" and isinstance(result, list):
                return [_sample(item) for item in result]
        except ValueError as exc:
            raise self._bad_result(expr, str(exc)) from None
        raise self._bad_result(expr, f"expected an instant vector, got {kind}")

    def query_value(
        self, expr: str, *, at: Instant | None = None, timeout: float | None = None
    ) -> float | None:
        """The single number an expression gives, or None when it gives no sample."""
        samples = self.query(expr, at=at, timeout=timeout)
        if len(samples) > 1:
            raise ConfigError(
                f"PromQL {expr!r} returned {len(samples)} series where one number was "
                "expected; aggregate it, e.g. max(...)"
            )
        return samples[0].value if samples else None

    def holds(self, expr: str, *, timeout: float | None = None) -> bool:
        """True when a condition such as `up{job="x"} == 1` returns any sample now."""
        return bool(self.query(expr, timeout=timeout))

    def query_range(
        self,
        expr: str,
        *,
        start: Instant,
        end: Instant,
        step: float,
        timeout: float | None = None,
    ) -> list[Series]:
        params = {"query": expr, "start": _instant(start), "end": _instant(end), "step": step}
        data = self._api("/api/v1/query_range", params, timeout)
        if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise self._bad_result(expr, f"expected a range vector, got {data.get('resultType')}")
        try:
            return [
                Series(_labels(item.get("metric")), tuple(_point(p) for p in item["values"]))
                for item in _list(data["result"])
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise self._bad_result(expr, f"malformed series: {exc}") from None

    def alerts(self, *, timeout: float | None = None) -> list[RuleAlert]:
        """Pending and firing alerts of Prometheus's alerting rules."""
        data = self._api("/api/v1/alerts", None, timeout)
        return [
            RuleAlert(
                labels=_labels(item.get("labels")),
                annotations=_labels(item.get("annotations")),
                state=str(item.get("state", "")),
                active_at=item.get("activeAt"),
                value=_float_or_none(item.get("value")),
            )
            for item in _list(data.get("alerts"))
        ]

    def targets(self, *, state: str = "active", timeout: float | None = None) -> list[Target]:
        data = self._api("/api/v1/targets", {"state": state}, timeout)
        return [
            Target(
                labels=_labels(item.get("labels")),
                scrape_pool=str(item.get("scrapePool", "")),
                scrape_url=str(item.get("scrapeUrl", "")),
                health=str(item.get("health", "unknown")),
                last_error=str(item.get("lastError", "")),
                last_scrape=item.get("lastScrape"),
            )
            for item in _list(data.get("activeTargets"))
        ]

    def ready(self, *, timeout: float | None = None) -> bool:
        """`/-/ready`: False while Prometheus starts up (e.g. replays its WAL)."""
        return self.get("/-/ready", ok=(200, 503), timeout=timeout).status_code == 200

    # Internals ---------------------------------------------------------------

    def _api(self, path: str, params: Mapping[str, Any] | None, timeout: float | None) -> Any:
        try:
            response = self.get(path, params=params, timeout=timeout)
        except ClientError as exc:
            if exc.status_code in (400, 422):  # bad_data / execution: the query is wrong
                raise PromQLError(
                    exc.service, exc.url, exc.kind, exc.detail, status_code=exc.status_code
                ) from None
            raise
        body = self.decode_json(response)
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            raise self.invalid_body(response, "no `data` object")
        if body.get("status") != "success":
            raise self.error(FailureKind.HTTP_STATUS, self.error_detail(response))
        return body["data"]

    def _bad_result(self, expr: str, what: str) -> PromQLError:
        return PromQLError(
            self.service, self.display_url, FailureKind.INVALID_BODY, f"{expr}: {what}"
        )


def label_selector(labels: Mapping[str, str]) -> str:
    """`job="a",instance="b"`: label values quoted safely (they may come from alerts)."""
    parts = []
    for name, value in labels.items():
        if not _LABEL_NAME.match(name):
            raise ValueError(f"not a Prometheus label name: {name!r}")
        parts.append(f"{name}={promql_string(value)}")
    return ",".join(parts)


def promql_string(value: str) -> str:
    """A double-quoted PromQL string literal (Go escapes; JSON's are a subset)."""
    return json.dumps(value, ensure_ascii=False)


def finite(value: float | None) -> float | None:
    """None for NaN and infinities (no traffic, 0/0): they have no JSON form."""
    return value if value is not None and math.isfinite(value) else None


def _instant(value: Instant) -> str:
    return value.isoformat() if isinstance(value, datetime) else f"{value:.3f}"


def _sample(item: Any) -> Sample:
    if not isinstance(item, dict):
        raise ValueError(f"not a sample: {item!r}")
    timestamp, value = _point(item.get("value"))
    return Sample(_labels(item.get("metric")), value, timestamp)


def _point(pair: Any) -> tuple[float, float]:
    try:
        timestamp, value = pair
        return float(timestamp), float(value)
    except (TypeError, ValueError):
        raise ValueError(f"not a [time, value] pair: {pair!r}") from None


def _labels(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _list(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
