"""Issue 10: hostile input never stops analysis, never gets a 5xx; /readyz tells the truth;
log lines stay bounded."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from market_agent.audit import AuditLog
from market_agent.listen.admission import Listener, _describe, webhook_record
from market_agent.listen.logs import MAX_LOG_MESSAGE, configure_logging
from market_agent.listen.workers import Job
from tests.helpers import wait_until
from tests.hostile_inputs import hostile_inputs, valid_body
from tests.test_analysis_process import spec_for
from tests.test_fuzz_listen import LiveListener
from tests.test_listen_pipeline import FakeService, admit, make_notification
from tests.test_listen_process import Agent

HOSTILE = hostile_inputs()


def records(path: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in AuditLog(path).records() if r["kind"] == kind]


def analysed(path: Path, notification_id: str) -> bool:
    return any(r["notification_id"] == notification_id for r in records(path, "analysis"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveListener]:
    running = LiveListener(tmp_path_factory.mktemp("hostile"))
    yield running
    running.close()


# Intake (item 1 and 2) ------------------------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.name for h in HOSTILE])
def test_intake_answers_each_hostile_input_as_documented(live, hostile):
    response = live.post(hostile.body)
    assert response.status_code == hostile.status, response.text
    if hostile.reason is not None:
        assert response.json()["reason"] == hostile.reason
    assert live.client.get("/readyz").status_code == 200


# Defence in depth: no single job stops the pipeline ---------------------------------------


@pytest.fixture
def started() -> Iterator[list[Listener]]:
    listeners: list[Listener] = []
    yield listeners
    for listener in listeners:
        listener.stop(5)


@pytest.mark.slow
def test_a_job_that_cannot_be_handed_over_is_recorded_and_the_next_one_is_analysed(
    tmp_path, started
):
    """Past intake (a bug, or a payload from an older version's journal): the dispatcher
    records the failure and goes on."""
    path = tmp_path / "audit.jsonl"
    listener = Listener(AuditLog(path), None, engine=spec_for(path))
    listener.start()
    started.append(listener)
    poison = {"alerts": [], "x": "\ud800", "deep": json.loads(json.dumps([[[[1]]]]))}
    for n, payload in enumerate([poison, {"alerts": [], "deep": _deep(300)}]):
        listener._queue.put(Job(f"poison-{n}", make_notification(), False, payload=payload))
    [admission] = admit(listener, make_notification("after-the-poison"))
    wait_until(lambda: analysed(path, admission.notification_id), 30, message="next analysis")
    failed = {r["notification_id"]: r for r in records(path, "analysis_failed")}
    assert set(failed) == {"poison-0", "poison-1"}
    assert all(r["error_id"] for r in failed.values())
    assert listener.readiness() is None


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _journal_unanalysed(path: Path, fingerprint: str, attempts: int) -> str:
    notification = make_notification(fingerprint)
    audit = AuditLog(path)
    [record] = audit.append_many(
        [("notification", webhook_record(notification, f"n-{fingerprint}", [fingerprint]))]
    )
    for attempt in range(2, attempts + 1):
        audit.append("analysis_attempt", {"notification_id": record["id"], "attempt": attempt})
    return record["id"]


def test_a_notification_attempted_three_times_is_parked_at_start_not_requeued(tmp_path):
    path = tmp_path / "audit.jsonl"
    parked = _journal_unanalysed(path, "poison", attempts=3)
    retried = _journal_unanalysed(path, "unlucky", attempts=2)
    service = FakeService()
    listener = Listener(AuditLog(path), service, workers=1)
    recovery = listener.start()
    assert listener.stop(10) == 0
    assert recovery.requeued == 1 and recovery.parked == 1
    assert service.calls == [retried]
    [failed] = records(path, "analysis_failed")
    assert failed["notification_id"] == parked
    assert failed["error"] == "AttemptsExhausted" and failed["error_id"]
    # The retry was announced before it ran: a crash now would count it.
    markers = [(r["notification_id"], r["attempt"]) for r in records(path, "analysis_attempt")]
    assert markers[-1] == (retried, 3)
    # A second start finds nothing to do.
    again = Listener(AuditLog(path), service, workers=1)
    assert again.start().requeued == 0
    again.stop(5)
    assert service.calls == [retried]


def test_a_notification_left_unanalysed_without_a_crash_is_not_announced_as_retried(tmp_path):
    """A first attempt costs no marker (the hot path writes nothing more)."""
    path = tmp_path / "audit.jsonl"
    service = FakeService()
    listener = Listener(AuditLog(path), service, workers=1)
    listener.start()
    admit(listener, make_notification("fresh"))
    assert listener.stop(10) == 0
    assert records(path, "analysis_attempt") == []


# Readiness (item 3) --------------------------------------------------------------------------


def test_readyz_reports_a_stalled_analysis_and_recovers(tmp_path):
    service = FakeService()
    service.gate.clear()
    listener = Listener(AuditLog(tmp_path / "a.jsonl"), service, workers=1, stall_seconds=0.2)
    listener.start()
    try:
        assert listener.readiness() is None
        admit(listener, make_notification("stuck"))
        wait_until(lambda: listener.readiness() == "analysis_stalled", 10)
        service.gate.set()
        wait_until(lambda: listener.readiness() is None, 10)
    finally:
        service.gate.set()
        listener.stop(5)
    assert listener.readiness() == "draining"


def test_readyz_reports_starting_before_start(tmp_path):
    listener = Listener(AuditLog(tmp_path / "a.jsonl"), FakeService())
    assert listener.readiness() == "starting"


@pytest.mark.slow
def test_readyz_reports_a_dead_analysis_process(tmp_path, started, monkeypatch):
    from market_agent.listen import child as analysis_process

    monkeypatch.setattr(analysis_process, "RESTART_DELAYS", (3.0,))
    path = tmp_path / "audit.jsonl"
    listener = Listener(AuditLog(path), None, engine=spec_for(path))
    listener.start()
    started.append(listener)
    assert listener.readiness() is None
    os.kill(listener.analysis_pid, signal.SIGKILL)
    wait_until(lambda: listener.readiness() == "analysis_down", 10)
    wait_until(lambda: listener.readiness() is None, 30, message="a new analysis process")


def test_readyz_answers_503_with_the_reason(live):
    live.listener._stopping.set()
    try:
        response = live.client.get("/readyz")
    finally:
        live.listener._stopping.clear()
    assert response.status_code == 503
    assert response.json()["reason"] == "draining"
    assert live.client.get("/healthz").status_code == 200


# Bounded log lines (item 11) -----------------------------------------------------------------


def test_a_huge_alertname_gives_a_short_description():
    notification = make_notification("huge")
    body = notification.model_dump(mode="json", by_alias=True)
    body["alerts"][0]["labels"]["alertname"] = "A" * 100_000
    described = _describe(type(notification).model_validate(body))
    assert len(described) < 400 and "AAAA" in described


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_every_log_line_is_bounded(log_format, capsys):
    loggers = [logging.getLogger(name) for name in ("market_agent", "uvicorn")]
    saved = [(lg, lg.handlers[:], lg.level) for lg in loggers]
    try:
        configure_logging(log_format)
        logging.getLogger("market_agent.test").warning("label %s", "x" * 200_000)
    finally:
        for logger, handlers, level in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
    line = capsys.readouterr().err.strip()
    assert len(line) < MAX_LOG_MESSAGE + 300
    assert "more characters" in line


# End to end, through the real `market-agent listen` (analysis process) --------------------


@pytest.mark.slow
def test_after_each_hostile_input_the_next_valid_notification_is_analysed(tmp_path):
    agent = Agent(tmp_path, "--no-llm")
    agent.start()
    try:
        for n, hostile in enumerate(HOSTILE):
            answer = agent.post(hostile.body)
            assert answer.status_code == hostile.status, (hostile.name, answer.text)
            valid = agent.post(valid_body(f"valid-after-{n}"))
            assert valid.status_code == 200, (hostile.name, valid.text)
            notification_id = valid.json()["id"]
            wait_until(
                lambda i=notification_id: analysed(agent.audit, i),
                30,
                message=f"no analysis after {hostile.name}",
            )
        ready = httpx.get(f"{agent.url}/readyz")
        assert ready.status_code == 200, ready.text
    finally:
        agent.stop()
    log = agent.log.read_text()
    assert "Traceback" not in log
    assert max(len(line) for line in log.splitlines()) < MAX_LOG_MESSAGE + 300


@pytest.mark.parametrize(("depth", "deeper"), [(0, False), (63, False), (64, False), (65, True)])
def test_depth_is_counted_in_objects_and_arrays(depth, deeper):
    from market_agent.inputs import MAX_DEPTH, deeper_than

    value: Any = "leaf"
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    assert deeper_than(value, MAX_DEPTH) is deeper
