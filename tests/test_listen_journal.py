"""The journal's fast paths: shared commits, prepared records, hand-off to the event loop."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from market_agent.audit import RESERVED_FIELDS, AuditLog, prepare
from market_agent.listen.admission import Listener
from market_agent.listen.journal import Journal
from market_agent.listen.metrics import ListenMetrics
from market_agent.models import Notification
from tests.test_listen_pipeline import (
    FakeService,
    admit,
    kinds,
    make_notification,
    records,
)

# Fixtures, re-exported for pytest.
from tests.test_listen_pipeline import audit as audit
from tests.test_listen_pipeline import make_listener as make_listener
from tests.test_listen_pipeline import service as service


def test_analyses_share_the_commit_of_acknowledgements(tmp_path: Path) -> None:
    journal = Journal(AuditLog(tmp_path / "audit.jsonl"), ListenMetrics(), background_batch=2)
    analyses = [journal.submit([prepare("analysis", {"n": n})]) for n in range(3)]
    notification = journal.submit([prepare("notification", {"n": 9})], urgent=True)
    journal.start()
    try:
        assert notification.result(5)[0]["seq"] == 1  # acknowledgements first
        assert [f.result(5)[0]["seq"] for f in analyses] == [2, 3, 4]
    finally:
        journal.close()
    # Two analyses rode along with the notification; the third took a commit of its own.
    assert journal.metrics.journal_commits._value.get() == 2


_keys = st.text(min_size=1, max_size=8).filter(lambda key: key not in RESERVED_FIELDS)
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fields=st.lists(st.dictionaries(_keys, _values, max_size=4), min_size=1, max_size=3))
@example(fields=[{"text": "caf\u00e9 \x7f \ud800 \U0001f600", "big": 2**70, "n": [None, True]}])
def test_prepared_records_are_the_canonical_json_of_what_is_returned(
    tmp_path: Path, fields: list[dict[str, Any]]
) -> None:
    path = tmp_path / "audit.jsonl"
    path.unlink(missing_ok=True)
    log = AuditLog(path, fsync=False)
    returned = log.append_many([prepare("analysis", f) for f in fields])
    lines = path.read_bytes().splitlines()
    for line, record in zip(lines, returned, strict=True):
        assert json.loads(line) == record
        body = {k: v for k, v in record.items() if k not in ("hash", "prev_hash")}
        # As `json.dumps` writes it: sorted keys, compact, ASCII only.
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        assert b"{" + line.split(b",", 2)[2] == canonical
    assert log.verify().ok


def test_journaled_payload_is_the_request_as_received(make_listener, audit) -> None:
    payload: dict[str, Any] = {
        "status": "firing",
        "alerts": [{"labels": {"alertname": "A"}, "startsAt": "2026-11-25T10:00:00.000Z"}],
        "x-extra": {"kept": True},
    }
    listener = make_listener()
    admit_with_payload(listener, Notification.model_validate(payload), payload)
    [record] = [r for r in records(audit.path) if r["kind"] == "notification"]
    assert record["payload"] == payload
    assert record["alertnames"] == ["A"]


def admit_with_payload(listener: Any, notification: Notification, payload: Any) -> Any:
    return asyncio.run(listener.admit(notification, payload))


def test_a_request_gone_before_its_commit_is_still_journaled_and_analysed(
    make_listener, audit
) -> None:
    listener = make_listener()

    async def cancel_before_the_commit() -> None:
        task = asyncio.ensure_future(listener.admit(make_notification("gone")))
        await asyncio.sleep(0)  # the task submitted its record; the commit is due next
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()

    asyncio.run(cancel_before_the_commit())
    assert listener.stop(10) == 0
    assert kinds(audit.path) == {"notification": 1, "analysis": 1}


def test_acknowledgements_are_committed_in_the_event_loop_thread(tmp_path: Path) -> None:
    """No hand-off to the writer thread and back: the answer waits for no other thread."""
    audit = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    committers: list[str] = []
    original = audit.append_many

    def recording(entries: Any) -> Any:
        committers.append(threading.current_thread().name)
        return original(entries)

    audit.append_many = recording  # type: ignore[method-assign]
    journal = Journal(audit, ListenMetrics())
    journal.start()

    async def acknowledge() -> list[Any]:
        futures = [
            journal.submit([prepare("notification", {"n": n})], urgent=True) for n in range(5)
        ]
        return [await asyncio.wrap_future(f) for f in futures]

    try:
        results = asyncio.run(acknowledge())
    finally:
        journal.close()
    assert [r[0]["seq"] for r in results] == [1, 2, 3, 4, 5]
    assert committers == [threading.current_thread().name]  # one commit, in the loop's thread


def test_a_loop_that_ends_before_its_commit_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: Any
) -> None:
    class StoppedLoop:
        """A loop whose scheduled callbacks never run (it was closed meanwhile)."""

        def call_soon(self, callback: Any, *args: Any) -> None:
            pass

    journal = Journal(AuditLog(tmp_path / "audit.jsonl"), ListenMetrics())
    journal.start()
    monkeypatch.setattr(asyncio, "get_running_loop", StoppedLoop)
    stranded = journal.submit([prepare("notification", {"n": 1})], urgent=True)
    monkeypatch.undo()
    journal.close()
    assert stranded.result(5)[0]["seq"] == 1


def test_analyses_ride_along_with_a_commit_in_the_loop(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    journal = Journal(audit, ListenMetrics(), background_linger=5.0)
    journal.start()

    async def both() -> None:
        analysis = journal.submit([prepare("analysis", {"n": 1})])  # the writer lingers...
        notification = journal.submit([prepare("notification", {"n": 2})], urgent=True)
        await asyncio.wrap_future(notification)  # ...and the loop's commit takes it along
        assert analysis.done()

    try:
        asyncio.run(both())
    finally:
        journal.close()
    assert journal.metrics.journal_commits._value.get() == 1


def test_other_writers_between_commits_keep_one_chain(make_listener, audit) -> None:
    listener = make_listener()
    other = AuditLog(audit.path)  # e.g. `market-agent analyze` appending meanwhile
    for n in range(3):
        admit(listener, make_notification(f"fp{n}"))
        other.append("analysis", {"id": f"other-{n}"})
    assert listener.stop(10) == 0
    assert [r["seq"] for r in records(audit.path)] == list(range(1, 10))
    assert audit.verify().ok


def test_many_concurrent_notifications_are_all_acknowledged_and_analysed(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    listener = Listener(log, FakeService(), queue_size=2000)
    listener.start()
    admissions = admit(listener, *[make_notification(f"fp{n}") for n in range(1000)])
    assert {a.status for a in admissions} == {"accepted"}
    assert listener.stop(30) == 0
    assert kinds(log.path) == {"notification": 1000, "analysis": 1000}
    assert log.verify().ok


def test_bodies_orjson_refuses_are_still_read_except_invalid_unicode(tmp_path: Path) -> None:
    from tests.test_listen_server import GOOD, Running

    running = Running(tmp_path)
    try:
        with_bom = running.post(b"\xef\xbb\xbf" + GOOD.replace(b"67c2635bf40631ca", b"bom"))
        surrogate = GOOD.replace(b"is down", b"is down \\ud800", 1).replace(b"67c26", b"s")
        with_surrogate = running.post(surrogate)  # no UTF-8 encoder downstream can write it
        assert (with_bom.status_code, with_surrogate.status_code) == (200, 400)
        assert len([r for r in running.records() if r["kind"] == "notification"]) == 1
        assert running.audit.verify().ok
    finally:
        running.close()


def test_a_deep_backlog_slows_acknowledgements_instead_of_refusing(make_listener, service) -> None:
    service.gate.clear()
    listener = make_listener(queue_size=4, workers=1)
    admit(listener, make_notification("busy"))  # taken by the worker
    assert service.started.acquire(timeout=5)
    admit(listener, make_notification("a"), make_notification("b"))  # half the queue

    async def while_analysis_catches_up() -> Any:
        pending = asyncio.ensure_future(listener.admit(make_notification("held")))
        await asyncio.sleep(0.1)
        held_back = not pending.done()
        service.gate.set()
        return held_back, await pending

    held_back, admission = asyncio.run(while_analysis_catches_up())
    assert held_back
    assert admission.status == "accepted"
