"""What the pipeline asks the outside world: is the service healthy, does a PromQL
condition hold, is the alert still firing. Small Protocols, so tests need no HTTP;
the adapters at the bottom wrap `market_agent.clients`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from market_agent.errors import MarketAgentError

if TYPE_CHECKING:
    from market_agent.models import Alert
    from market_agent.settings import ActionSpec


class HealthCheck(Protocol):
    def check(self, timeout: float) -> tuple[bool, str]:
        """(healthy, what was seen); never raises for an unreachable service."""
        ...


class ConditionCheck(Protocol):
    def holds(self, expr: str, timeout: float) -> tuple[bool, str]:
        """(the PromQL condition returns a sample, what was seen); never raises."""
        ...


AlertState = Literal["firing", "silenced", "not_firing"]


class AlertCheckUnavailable(Exception):
    """Alertmanager could not be asked; the message says why."""


class AlertChecker(Protocol):
    def state(self, alerts: Sequence[Alert], timeout: float) -> tuple[AlertState, str]:
        """Whether any of these alerts still fires unsilenced; raises AlertCheckUnavailable."""
        ...


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    detail: str
    duration_ms: float
    checks: list[dict[str, Any]] = field(default_factory=list)


class Verifier:
    """Polls until the action's checks pass or its `verify_timeout` is spent."""

    def __init__(
        self,
        health: HealthCheck | None,
        condition: ConditionCheck | None,
        *,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.health = health
        self.condition = condition
        self.interval = interval
        self.clock = clock
        self.sleep = sleep

    def plan(self, spec: ActionSpec) -> dict[str, Any]:
        """What verification will check, for previews and records."""
        return {
            "health": spec.verify_health and self.health is not None,
            "query": spec.verify_query if self.condition is not None else None,
            "timeout_s": spec.verify_timeout,
        }

    def verify(self, spec: ActionSpec) -> Verification:
        started = self.clock()
        deadline = started + spec.verify_timeout
        checks: list[dict[str, Any]] = []
        health, condition = self.health, self.condition
        if spec.verify_health and health is not None:
            ok, seen = self._poll(health.check, deadline)
            checks.append({"check": "health", "ok": ok, "detail": seen})
            if not ok:
                return self._done(
                    False,
                    f"/health not healthy within {spec.verify_timeout:g} s: {seen}",
                    started,
                    checks,
                )
        if spec.verify_query and condition is not None:
            expr = spec.verify_query
            ok, seen = self._poll(lambda t: condition.holds(expr, t), deadline)
            checks.append({"check": "query", "ok": ok, "detail": seen, "expr": expr})
            if not ok:
                return self._done(
                    False,
                    f"{expr} did not hold within {spec.verify_timeout:g} s: {seen}",
                    started,
                    checks,
                )
        if not checks:
            return self._done(True, "nothing to verify (no checks configured)", started, checks)
        return self._done(
            True, "verified: " + ", ".join(c["check"] for c in checks), started, checks
        )

    def _poll(
        self, probe: Callable[[float], tuple[bool, str]], deadline: float
    ) -> tuple[bool, str]:
        seen = "not checked"
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return False, seen
            ok, seen = probe(min(remaining, 5.0))
            if ok:
                return True, seen
            self.sleep(min(self.interval, max(0.0, deadline - self.clock())))

    def _done(
        self, ok: bool, detail: str, started: float, checks: list[dict[str, Any]]
    ) -> Verification:
        return Verification(ok, detail, round((self.clock() - started) * 1000, 1), checks)


# Adapters over market_agent.clients -------------------------------------------------


class PredictorHealth:
    def __init__(self, client: Any) -> None:
        self.client = client

    def check(self, timeout: float) -> tuple[bool, str]:
        try:
            health = self.client.health(timeout=timeout)
        except MarketAgentError as exc:
            return False, exc.message
        if health.healthy:
            return True, "healthy"
        reasons = ", ".join(health.reasons) or health.status
        return False, f"unhealthy ({reasons})"


class PrometheusCondition:
    def __init__(self, client: Any) -> None:
        self.client = client

    def holds(self, expr: str, timeout: float) -> tuple[bool, str]:
        try:
            samples = self.client.query(expr, timeout=timeout)
        except MarketAgentError as exc:
            return False, exc.message
        return (True, f"{len(samples)} sample(s)") if samples else (False, "no sample")


class AlertmanagerRecheck:
    """Asks Alertmanager (`AlertmanagerClient.alerts`) for each alert name, then matches
    the notification's alerts by fingerprint, or by labels when there is none."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def state(self, alerts: Sequence[Alert], timeout: float) -> tuple[AlertState, str]:
        silenced = False
        for name in dict.fromkeys(alert.name for alert in alerts):
            try:
                found = self.client.alerts({"alertname": name}, timeout=timeout)
            except MarketAgentError as exc:
                raise AlertCheckUnavailable(exc.message) from None
            for alert in alerts:
                for item in found:
                    if not _same_alert(alert, item):
                        continue
                    if item.status.silenced_by:
                        silenced = True
                        continue
                    return "firing", f"{alert.name} is still firing"
        if silenced:
            return "silenced", "the alert is silenced in Alertmanager"
        return "not_firing", "the alert is no longer firing in Alertmanager"


def _same_alert(alert: Alert, item: Any) -> bool:
    if alert.fingerprint and item.fingerprint:
        return bool(alert.fingerprint == item.fingerprint)
    return bool(item.labels == alert.labels)
