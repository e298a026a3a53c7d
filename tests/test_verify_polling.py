"""Verification after an action: the polling schedule (fast first, then backing off, no
fixed 0.5 s sleep) and `verify_query` holding only on samples scraped after the action
started. HTTP is mocked (pytest-httpx) around the real PrometheusClient."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from market_agent.actions.probes import PollSchedule, PrometheusCondition, Verifier
from market_agent.clients import PrometheusClient, RetryPolicy
from market_agent.settings import ActionSpec, EndpointSettings

URL = "http://prometheus.test:9090"
QUERY = re.compile(re.escape(f"{URL}/api/v1/query?") + ".*")
#: Prometheus' clock when it answers; the agent's clock runs AHEAD by SKEW seconds.
PROM_NOW = 1_700_000_100.0
SKEW = 40.0
PREDICTOR = {"job": "market-predictor", "instance": "127.0.0.1:8000"}
AGENT = {"job": "market-agent", "instance": "127.0.0.1:9095"}


class FakeClock:
    """time.monotonic and time.sleep in one: sleeping moves the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 4))
        self.now += seconds


class HealthyAfter:
    """A health probe that fails until the clock reaches `at` seconds."""

    def __init__(self, clock: FakeClock, at: float) -> None:
        self.clock = clock
        self.at = at
        self.tries: list[float] = []

    def check(self, timeout: float) -> tuple[bool, str]:
        self.tries.append(self.clock.now)
        return (True, "healthy") if self.clock.now >= self.at else (False, "refused")


def spec(**fields: object) -> ActionSpec:
    return ActionSpec.model_validate({"argv": ["true"], "verify_timeout": 30, **fields})


# The schedule ---------------------------------------------------------------------------


def test_the_schedule_polls_every_50_ms_for_3_s_then_backs_off_to_1_s() -> None:
    schedule = PollSchedule()
    assert schedule.delay(0.0, None) == 0.05
    assert schedule.delay(2.99, 0.05) == 0.05
    waits, previous = [], 0.05
    for _ in range(8):
        previous = schedule.delay(3.5, previous)
        waits.append(round(previous, 4))
    assert waits == [0.075, 0.1125, 0.1688, 0.2531, 0.3797, 0.5695, 0.8543, 1.0]


def test_a_service_healthy_after_0_8_s_is_seen_within_one_fast_poll() -> None:
    clock = FakeClock()
    health = HealthyAfter(clock, at=0.8)
    verifier = Verifier(health, None, clock=clock, sleep=clock.sleep)
    outcome = verifier.verify(spec())
    assert outcome.ok
    assert 0.8 <= health.tries[-1] < 0.8 + 0.05 + 1e-9  # the old code: up to 0.5 s late
    assert set(clock.sleeps) == {0.05}


def test_a_slow_service_is_polled_less_and_less_often() -> None:
    clock = FakeClock()
    health = HealthyAfter(clock, at=20.0)
    Verifier(health, None, clock=clock, sleep=clock.sleep).verify(spec())
    gaps = [b - a for a, b in zip(health.tries, health.tries[1:], strict=False)]
    assert len(health.tries) < 60 + 30  # 60 fast tries in the first 3 s, then ~1 a second
    assert max(gaps) == pytest.approx(1.0)
    assert gaps == sorted(gaps, key=lambda gap: round(gap, 6))  # never faster again


def test_the_last_wait_is_cut_to_the_deadline() -> None:
    clock = FakeClock()
    health = HealthyAfter(clock, at=999.0)
    outcome = Verifier(health, None, clock=clock, sleep=clock.sleep).verify(spec(verify_timeout=4))
    assert not outcome.ok
    assert clock.now == pytest.approx(4.0)


def test_a_fixed_interval_still_works_for_callers_that_give_one() -> None:
    clock = FakeClock()
    health = HealthyAfter(clock, at=10.0)
    Verifier(health, None, interval=0.25, clock=clock, sleep=clock.sleep).verify(spec())
    assert set(clock.sleeps) == {0.25}


# The newer-sample logic ------------------------------------------------------------------


@pytest.fixture
def prometheus() -> PrometheusClient:
    retry = RetryPolicy(initial_wait=0.01, max_wait=0.02, jitter=0)
    return PrometheusClient(EndpointSettings(url=URL, timeout=2.0), retry=retry)


def vector(*samples: tuple[dict[str, str], float]) -> dict[str, object]:
    result = [{"metric": labels, "value": [PROM_NOW, str(value)]} for labels, value in samples]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def answer(httpx_mock, scrapes: list[tuple[dict[str, str], float]], result: list) -> None:
    """Prometheus answering `timestamp(up)` with `scrapes` and anything else with `result`."""

    def respond(request):
        import httpx

        expr = parse_qs(urlsplit(str(request.url)).query)["query"][0]
        body = vector(*scrapes) if expr == "timestamp(up)" else vector(*result)
        return httpx.Response(200, json=body)

    httpx_mock.add_callback(respond, url=QUERY, is_reusable=True)


def condition(prometheus: PrometheusClient) -> PrometheusCondition:
    return PrometheusCondition(prometheus, clock=lambda: PROM_NOW + SKEW)


#: The action started 2 s ago, on the agent's clock.
SINCE = PROM_NOW + SKEW - 2.0


def test_a_sample_scraped_before_the_action_does_not_verify_it(httpx_mock, prometheus) -> None:
    answer(httpx_mock, [(PREDICTOR, PROM_NOW - 2.5), (AGENT, PROM_NOW - 0.1)], [(PREDICTOR, 1)])
    ok, seen = condition(prometheus).holds('up{job="market-predictor"} == 1', 5.0, SINCE)
    assert not ok
    assert seen == "no scrape of market-predictor/127.0.0.1:8000 since the action started yet"


def test_a_sample_scraped_after_the_action_verifies_it(httpx_mock, prometheus) -> None:
    answer(httpx_mock, [(PREDICTOR, PROM_NOW - 1.0), (AGENT, PROM_NOW - 3.0)], [(PREDICTOR, 1)])
    ok, seen = condition(prometheus).holds('up{job="market-predictor"} == 1', 5.0, SINCE)
    assert (ok, seen) == (True, "1 sample(s)")  # the agent's own target does not matter


def test_the_clocks_need_not_agree(httpx_mock, prometheus) -> None:
    # Read on the agent's clock (40 s ahead), this scrape would look 42 s too old.
    answer(httpx_mock, [(PREDICTOR, PROM_NOW - 1.0)], [(PREDICTOR, 1)])
    assert condition(prometheus).holds("up == 1", 5.0, SINCE)[0]


def test_an_answer_without_target_labels_needs_every_target_scraped(httpx_mock, prometheus) -> None:
    answer(httpx_mock, [(PREDICTOR, PROM_NOW - 1.0), (AGENT, PROM_NOW - 2.5)], [({}, 1)])
    ok, seen = condition(prometheus).holds("sum(up) > 0", 5.0, SINCE)
    assert not ok
    assert "market-agent/127.0.0.1:9095" in seen


def test_no_sample_is_no_sample_whatever_the_scrapes(httpx_mock, prometheus) -> None:
    answer(httpx_mock, [(PREDICTOR, PROM_NOW)], [])
    assert condition(prometheus).holds("up == 1", 5.0, SINCE) == (False, "no sample")


def test_without_since_one_query_is_asked(httpx_mock, prometheus) -> None:
    answer(httpx_mock, [], [({}, 1)])
    assert condition(prometheus).holds("vector(1)", 5.0) == (True, "1 sample(s)")
    queries = [parse_qs(urlsplit(str(r.url)).query)["query"][0] for r in httpx_mock.get_requests()]
    assert queries == ["vector(1)"]


def test_an_unreachable_prometheus_is_a_failed_try_not_an_error(httpx_mock, prometheus) -> None:
    import httpx

    httpx_mock.add_exception(httpx.ConnectError("refused"), url=QUERY, is_reusable=True)
    ok, seen = condition(prometheus).holds("up == 1", 5.0, SINCE)
    assert not ok and "prometheus" in seen.lower()


# Against a real Prometheus ------------------------------------------------------------------


@pytest.mark.slow
def test_verify_query_waits_for_a_scrape_after_the_action_with_a_real_prometheus(
    tmp_path,
) -> None:
    import time

    from tests.helpers import (
        free_port,
        render_monitoring_configs,
        start_predictor,
        start_prometheus,
        wait_until,
    )

    ports = {name: free_port() for name in ("predictor", "agent", "alertmanager", "prometheus")}
    configs = render_monitoring_configs(
        tmp_path,
        predictor_port=ports["predictor"],
        agent_port=ports["agent"],
        alertmanager_port=ports["alertmanager"],
        token_file=tmp_path / "token",
    )
    url = f"http://127.0.0.1:{ports['prometheus']}"
    client = PrometheusClient(EndpointSettings(url=url, timeout=5.0))
    expr = 'up{job="market-predictor"} == 1'
    with (
        start_predictor(tmp_path, ports["predictor"], traffic_rps=0),
        start_prometheus(tmp_path, configs.prometheus, ports["prometheus"]),
    ):
        wait_until(lambda: client.query(expr), 30, message="first scrape of the predictor")
        real = PrometheusCondition(client)
        # Samples that hold, but none scraped after a start in the future (a clock far
        # ahead): never verified. (The old code checked only that the query held.)
        ok, seen = real.holds(expr, 5.0, since=time.time() + 3600)
        assert not ok and seen.startswith("no scrape of market-predictor/127.0.0.1:")
        since = time.time()
        verifier = Verifier(None, real)
        outcome = verifier.verify(spec(verify_health=False, verify_query=expr), since)
        assert outcome.ok, outcome.detail
        (scraped,) = client.query('timestamp(up{job="market-predictor"})')
        assert scraped.value >= since  # the sample that verified it is newer than the start
