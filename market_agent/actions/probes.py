"""What the pipeline asks the outside world: is the service healthy, does a PromQL
condition hold, is the alert still firing. Small Protocols, so tests need no HTTP;
the adapters at the bottom wrap `market_agent.clients`.
"""

from __future__ import annotations

import copy
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
    def holds(self, expr: str, timeout: float, since: float | None = None) -> tuple[bool, str]:
        """(the PromQL condition returns a sample, what was seen); never raises.

        `since` (Unix time): only a sample scraped at or after it counts, so that a
        value from before an action cannot verify it.
        """
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


@dataclass(frozen=True, slots=True)
class PollSchedule:
    """When to try a check again: every `fast` seconds for the first `fast_for` seconds
    (a restarted service is usually back within them, and each try is one loopback
    request), then `factor` times the previous wait, up to `cap`."""

    fast: float = 0.05
    fast_for: float = 3.0
    factor: float = 1.5
    cap: float = 1.0

    def delay(self, elapsed: float, previous: float | None) -> float:
        """Seconds to wait after a failed try, `elapsed` seconds into the polling."""
        if elapsed < self.fast_for or previous is None:
            return self.fast
        return min(self.cap, max(self.fast, previous * self.factor))


class Verifier:
    """Polls until the action's checks pass or its `verify_timeout` is spent.

    `interval`, if given, replaces the schedule with a fixed wait (tests).
    """

    def __init__(
        self,
        health: HealthCheck | None,
        condition: ConditionCheck | None,
        *,
        schedule: PollSchedule | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.health = health
        self.condition = condition
        self.schedule = schedule or PollSchedule()
        if interval is not None:
            self.interval = interval
        self.clock = clock
        self.sleep = sleep

    @property
    def interval(self) -> float:
        """The first wait between tries; setting it makes every wait that long."""
        return self.schedule.fast

    @interval.setter
    def interval(self, seconds: float) -> None:
        self.schedule = PollSchedule(fast=seconds, fast_for=float("inf"))

    def plan(self, spec: ActionSpec) -> dict[str, Any]:
        """What verification will check, for previews and records."""
        return {
            "health": spec.verify_health and self.health is not None,
            "query": spec.verify_query if self.condition is not None else None,
            "timeout_s": spec.verify_timeout,
        }

    def verify(self, spec: ActionSpec, since: float | None = None) -> Verification:
        """Run the checks; `since` (Unix time the action started): the query must hold
        on samples scraped after it."""
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
            ok, seen = self._poll(lambda t: condition.holds(expr, t, since), deadline)
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
        started, wait = self.clock(), None
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return False, seen
            ok, seen = probe(min(remaining, 5.0))
            if ok:
                return True, seen
            wait = self.schedule.delay(self.clock() - started, wait)
            self.sleep(min(wait, max(0.0, deadline - self.clock())))

    def _done(
        self, ok: bool, detail: str, started: float, checks: list[dict[str, Any]]
    ) -> Verification:
        return Verification(ok, detail, round((self.clock() - started) * 1000, 1), checks)


# Adapters over market_agent.clients -------------------------------------------------


class PredictorHealth:
    """`/health` for the verifier, whose schedule is the retry: the client's own retries
    (up to 0.15 s while a restarted service still refuses) would only delay a try."""

    def __init__(self, client: Any) -> None:
        self.client = without_retries(client)

    def check(self, timeout: float) -> tuple[bool, str]:
        try:
            health = self.client.health(timeout=timeout)
        except MarketAgentError as exc:
            return False, exc.message
        if health.healthy:
            return True, "healthy"
        reasons = ", ".join(health.reasons) or health.status
        return False, f"unhealthy ({reasons})"


def without_retries(client: Any) -> Any:
    """The same client (and connection pool), one attempt per call."""
    if not hasattr(client, "retry"):
        return client
    from market_agent.clients.base import NO_RETRY

    single = copy.copy(client)
    single.retry = NO_RETRY
    return single


class PrometheusCondition:
    """A PromQL condition; with `since`, it holds only on samples scraped after then.

    Prometheus answers an instant query from the newest sample of each series within
    its look-back (5 min), so right after a restart `up == 1` can still be the old
    process's answer. With `since`, it first asks when each target was last scraped
    (`timestamp(up)`: the start of its newest completed scrape), then the condition:
    each series of the answer must come from a target (its `job` and `instance`
    labels; every target when it has neither) scraped at or after `since`. `since` is
    moved onto Prometheus' clock by the evaluation time of that first answer, so the
    two clocks need not agree.
    """

    SCRAPES = "timestamp(up)"

    def __init__(self, client: Any, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock

    def holds(self, expr: str, timeout: float, since: float | None = None) -> tuple[bool, str]:
        try:
            scrapes = self._scrapes(since, timeout) if since is not None else None
            samples = self.client.query(expr, timeout=timeout)
        except MarketAgentError as exc:
            return False, exc.message
        if not samples:
            return False, "no sample"
        if scrapes is not None:
            stale = stale_target(samples, *scrapes)
            if stale is not None:
                return False, f"no scrape of {stale} since the action started yet"
        return True, f"{len(samples)} sample(s)"

    def _scrapes(self, since: float, timeout: float) -> tuple[dict[tuple[str, str], float], float]:
        """(target -> start of its newest scrape, `since` on Prometheus' clock)."""
        samples = self.client.query(self.SCRAPES, timeout=timeout)
        here = self.clock()
        there = samples[0].timestamp if samples else here
        scrapes = {
            (s.labels.get("job", ""), s.labels.get("instance", "")): s.value for s in samples
        }
        return scrapes, since + (there - here)


def stale_target(
    samples: Sequence[Any], scrapes: dict[tuple[str, str], float], since: float
) -> str | None:
    """A target behind `samples` not scraped at or after `since` ("job/instance"), if any."""
    if not scrapes:
        return "any target"
    for sample in samples:
        key = (sample.labels.get("job", ""), sample.labels.get("instance", ""))
        for target in [key] if key in scrapes else list(scrapes):
            if scrapes[target] < since:
                return "/".join(target)
    return None


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
