"""Fault injection: the LLM endpoint fails during a burst of alerts.

Each test sends a burst of distinct notifications through the real `Listener` and the
real analysis service (langchain-openai `LLMAnalyzer` in front of the rule analyzer)
pointed at a loopback endpoint that misbehaves in one way. Expected outcome, for every
fault: every notification gets exactly one rule analysis whose `fallback_reason` says
why, within a bound set by the LLM timeout; the endpoint never sees more calls than
the per-minute budget allows (plus one retry each), nor more at once than
`llm.max_concurrency`.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from market_agent.listen.admission import Listener
from market_agent.state import AppState
from tests.helpers import free_port
from tests.test_listen_pipeline import admit, make_notification, records
from tests.test_llm import completion

pytestmark = pytest.mark.slow

BURST = 20
TIMEOUT = 1.0
MAX_CONCURRENCY = 2
PER_MINUTE = 5
WORKERS = 4
#: Start-up, rule analyses and journal commits: generous, the bound is functional.
SLACK = 5.0
#: Why the LLM was not asked at all: these fall back at once, without a request.
#: Or the breaker opened by repeated failures skipped it.
BOUNDED = (
    r"LLM budget of 5 requests/minute spent$|LLM concurrency limit reached;"
    r"|LLM endpoint failed 3 times: LLM skipped for \d+ s more$"
)


class FakeLLM:
    """A loopback OpenAI-compatible endpoint that fails every request in one way.

    `silent`: reads the request and never answers (until the client hangs up);
    `429`: rate-limited; `garbage-body`: 200 with a body that is not JSON;
    `garbage-output`: a well-formed completion whose content is not the verdict JSON.
    Counts the requests and the most it had in progress at once.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                fake._enter()
                try:
                    fake._answer(self)
                finally:
                    fake._leave()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _enter(self) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        if self.mode == "silent":
            handler.connection.settimeout(30)
            try:
                while handler.connection.recv(1024):  # b"" once the client gives up
                    pass
            except OSError:
                pass
            return
        status, body = {
            "429": (429, json.dumps({"error": {"message": "slow down", "type": "rate_limit"}})),
            "garbage-body": (200, "<html>502 Bad Gateway</html> {{{"),
            "garbage-output": (200, json.dumps(completion("Sure! Restart everything. {oops"))),
        }[self.mode]
        data = body.encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def app_state(base_url: str) -> AppState:
    return AppState(
        overrides={
            "llm.base_url": base_url,
            "llm.api_key": "sk-fault-test-0123456789",
            "llm.timeout": TIMEOUT,
            "llm.max_retries": 1,
            "llm.max_concurrency": MAX_CONCURRENCY,
            "llm.requests_per_minute": PER_MINUTE,
        }
    )


def burst(state: AppState) -> tuple[list[str], float]:
    """Admit BURST distinct notifications at once and wait until all are analysed:
    (the acknowledged notification ids, seconds from the burst to the last analysis)."""
    import langchain_openai  # noqa: F401 - its import time is not the LLM's fault

    assert state.audit_log is not None
    listener = Listener(state.audit_log, state.analysis_service(), workers=WORKERS)
    listener.start()
    started = time.monotonic()
    try:
        admissions = admit(listener, *(make_notification(f"fp{n:03d}") for n in range(BURST)))
    finally:
        left = listener.stop(120)
    elapsed = time.monotonic() - started
    assert left == 0
    return [a.notification_id for a in admissions], elapsed


def assert_rule_fallback_for_each(state: AppState, ids: list[str], reason: str) -> None:
    """Exactly one rule analysis per notification, each with a fallback reason: the
    fault's (`reason`, a regular expression) when the LLM was asked, else the bounds'."""
    assert state.audit_log is not None
    analyses = [r for r in records(state.audit_log.path) if r["kind"] == "analysis"]
    assert Counter(a["notification_id"] for a in analyses) == Counter(ids)
    assert {a["analyzer"] for a in analyses} == {"rules"}
    reasons = Counter(a["fallback_reason"] for a in analyses)
    for text in reasons:
        assert re.match(f"(?:{reason})|(?:{BOUNDED})", text or ""), text
    faulty = sum(n for text, n in reasons.items() if re.match(reason, text))
    assert 1 <= faulty <= PER_MINUTE, reasons  # the LLM was tried, within the budget
    assert state.audit_log.verify().ok


def within_timeout_bound(elapsed: float) -> bool:
    return elapsed <= TIMEOUT * math.ceil(BURST / MAX_CONCURRENCY) + SLACK


@pytest.fixture
def make_state() -> Iterator[Callable[[str], AppState]]:
    created: list[AppState] = []

    def make(base_url: str) -> AppState:
        created.append(app_state(base_url))
        return created[-1]

    yield make
    for state in created:
        state.close()


def test_llm_endpoint_down_every_alert_gets_a_rule_analysis(make_state):
    state = make_state(f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    ids, elapsed = burst(state)
    unreachable = re.escape("LLM endpoint unreachable (connection failed)")
    assert_rule_fallback_for_each(state, ids, unreachable)
    assert within_timeout_bound(elapsed), elapsed


def test_llm_endpoint_slow_beyond_the_timeout_is_bounded_and_falls_back(make_state):
    with FakeLLM("silent") as llm:
        state = make_state(llm.url)
        ids, elapsed = burst(state)
    assert_rule_fallback_for_each(state, ids, f"LLM timed out after {TIMEOUT:g} s$")
    assert within_timeout_bound(elapsed), elapsed
    assert 1 <= llm.requests <= PER_MINUTE  # a timed-out call leaves no time to retry
    assert llm.max_in_flight <= MAX_CONCURRENCY


def test_llm_rate_limited_retries_once_within_budget_and_falls_back(make_state):
    with FakeLLM("429") as llm:
        state = make_state(llm.url)
        ids, elapsed = burst(state)
    assert_rule_fallback_for_each(state, ids, re.escape("LLM rate-limited (HTTP 429)"))
    assert within_timeout_bound(elapsed), elapsed
    # One retry per call; 3 failures in a row open the breaker: only the calls already
    # in flight then (at most max_concurrency) reach the endpoint.
    assert 2 <= llm.requests <= 2 * MAX_CONCURRENCY
    assert llm.max_in_flight <= MAX_CONCURRENCY


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("garbage-body", "LLM (answer could not be read|call failed)"),
        ("garbage-output", "LLM output is not JSON"),
    ],
)
def test_llm_returning_garbage_is_not_retried_and_falls_back(make_state, mode, reason):
    with FakeLLM(mode) as llm:
        state = make_state(llm.url)
        ids, elapsed = burst(state)
    assert_rule_fallback_for_each(state, ids, reason)
    assert within_timeout_bound(elapsed), elapsed
    assert 1 <= llm.requests <= PER_MINUTE
    assert llm.max_in_flight <= MAX_CONCURRENCY
