"""Alertmanager API v2: status, active alerts (filtered by label matchers), silences."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from market_agent.clients.base import ServiceClient
from market_agent.clients.prometheus import label_selector, promql_string
from market_agent.inputs import describe_validation_error
from market_agent.models import ApiAlert

_OPERATORS = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.is_regex:
            try:
                found = re.fullmatch(self.value, actual) is not None
            except re.error:
                found = False
        else:
            found = actual == self.value
        return found == self.is_equal

    def __str__(self) -> str:
        op = _OPERATORS[self.is_regex, self.is_equal]
        return f"{self.name}{op}{promql_string(self.value)}"


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    #: "active", "pending" or "expired".
    state: str
    matchers: tuple[Matcher, ...]
    created_by: str
    comment: str
    starts_at: str | None
    ends_at: str | None

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when this silence would silence an alert with these labels."""
        return bool(self.matchers) and all(m.matches(labels) for m in self.matchers)


class AlertmanagerClient(ServiceClient):
    service = "alertmanager"

    def status(self, *, timeout: float | None = None) -> dict[str, Any]:
        """`/api/v2/status`: cluster, versionInfo, config, uptime."""
        return self.get_object("/api/v2/status", timeout=timeout)

    def alerts(
        self,
        matchers: Mapping[str, str] | None = None,
        *,
        silenced: bool = True,
        inhibited: bool = True,
        timeout: float | None = None,
    ) -> list[ApiAlert]:
        """Active alerts whose labels equal `matchers`; suppressed ones unless excluded."""
        params = {
            "active": "true",
            "silenced": _flag(silenced),
            "inhibited": _flag(inhibited),
            "filter": _filters(matchers),
        }
        response = self.get("/api/v2/alerts", params=params, timeout=timeout)
        body = self.decode_json(response)
        if not isinstance(body, list):
            raise self.invalid_body(response, "expected a JSON array of alerts")
        try:
            return [ApiAlert.model_validate(item) for item in body]
        except ValidationError as exc:
            raise self.invalid_body(response, describe_validation_error(exc)) from None

    def is_firing(
        self,
        alertname: str,
        labels: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> bool:
        """Is `alertname` (with these labels) still firing, neither silenced nor inhibited?"""
        matchers = {"alertname": alertname, **(labels or {})}
        return bool(self.alerts(matchers, silenced=False, inhibited=False, timeout=timeout))

    def silences(
        self,
        matchers: Mapping[str, str] | None = None,
        *,
        active_only: bool = True,
        timeout: float | None = None,
    ) -> list[Silence]:
        """Silences (active ones by default) with an equality matcher for each label."""
        params = {"filter": _filters(matchers)}
        response = self.get("/api/v2/silences", params=params, timeout=timeout)
        body = self.decode_json(response)
        if not isinstance(body, list):
            raise self.invalid_body(response, "expected a JSON array of silences")
        try:
            silences = [_silence(item) for item in body]
        except (KeyError, TypeError, AttributeError) as exc:
            raise self.invalid_body(response, f"not a silence: {exc}") from None
        return [s for s in silences if s.state == "active" or not active_only]


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _filters(matchers: Mapping[str, str] | None) -> list[str]:
    """`name="value"` matchers; values are quoted so alert text cannot break out."""
    return [label_selector({name: value}) for name, value in (matchers or {}).items()]


def _silence(item: dict[str, Any]) -> Silence:
    return Silence(
        id=str(item["id"]),
        state=str(item.get("status", {}).get("state", "")),
        matchers=tuple(
            Matcher(
                name=str(m["name"]),
                value=str(m.get("value", "")),
                is_regex=bool(m.get("isRegex", False)),
                is_equal=bool(m.get("isEqual", True)),
            )
            for m in item.get("matchers", [])
        ),
        created_by=str(item.get("createdBy", "")),
        comment=str(item.get("comment", "")),
        starts_at=item.get("startsAt"),
        ends_at=item.get("endsAt"),
    )
