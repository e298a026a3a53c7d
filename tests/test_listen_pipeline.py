"""The durable pipeline behind `listen`: group commit, duplicates, queue bound, recovery."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from market_agent.audit import AuditLog
from market_agent.errors import AuditError, ConfigError
from market_agent.listen.admission import DedupIndex, Listener, QueueFull, alert_keys
from market_agent.listen.metrics import ListenMetrics
from market_agent.models import (
    AlertSummary,
    Analysis,
    IssueType,
    Notification,
    Severity,
)


def make_notification(
    fingerprint: str = "fp1", status: str = "firing", **extra: Any
) -> Notification:
    alert = {
        "status": status,
        "labels": {"alertname": "PredictorDown", "service": "market-predictor"},
        "startsAt": "2026-11-25T10:00:00Z",
        "fingerprint": fingerprint,
    }
    return Notification.model_validate(
        {"status": status, "alerts": [alert, *extra.get("more", [])]}
    )


class FakeService:
    """Records calls; can be held (gate) or made to fail."""

    def __init__(self) -> None:
        self.calls: list[str | None] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Semaphore(0)
        self.fail = False
        self.contexts: list[Mapping[str, Any]] = []

    def analyze(
        self,
        notification: Notification,
        *,
        source: str,
        context: Mapping[str, Any] | None = None,
        notification_id: str | None = None,
    ) -> Analysis:
        self.started.release()
        self.gate.wait(10)
        self.calls.append(notification_id)
        self.contexts.append(dict(context or {}))
        if self.fail:
            raise RuntimeError("boom with secret details")
        return Analysis(
            issue_detected=True,
            severity=Severity.CRITICAL,
            issue_type=IssueType.AVAILABILITY,
            description="down",
            proposed_action="restart",
            confidence=0.9,
            source=source,
            group_key=notification.group_key,
            status=notification.status,
            alerts=[AlertSummary.of(a) for a in notification.alerts],
            analyzer="rules",
            context=dict(context or {}),
            notification_id=notification_id,
        )


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def kinds(path: Path) -> Counter[str]:
    return Counter(r["kind"] for r in records(path))


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit.jsonl")


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def make_listener(audit: AuditLog, service: FakeService) -> Iterator[Any]:
    started: list[Listener] = []

    def make(**kwargs: Any) -> Listener:
        listener = Listener(kwargs.pop("audit", audit), kwargs.pop("service", service), **kwargs)
        listener.start()
        started.append(listener)
        return listener

    yield make
    service.gate.set()
    for listener in started:
        listener.stop(5)


def admit(listener: Listener, *notifications: Notification) -> list[Any]:
    async def all_of() -> list[Any]:
        return await asyncio.gather(
            *(listener.admit(n) for n in notifications), return_exceptions=True
        )

    return asyncio.run(all_of())


def drain(listener: Listener) -> None:
    assert listener.stop(10) == 0


def test_notification_is_on_disk_before_admit_returns(make_listener, audit, service):
    service.gate.clear()  # analysis cannot have written anything yet
    listener = make_listener()
    [admission] = admit(listener, make_notification())
    assert admission.status == "accepted"
    [record] = records(audit.path)
    assert record["kind"] == "notification"
    assert record["id"] == admission.notification_id
    assert record["source"] == "webhook"
    assert record["alert_keys"] == ["fp1|firing|2026-11-25T10:00:00+00:00"]


def test_concurrent_notifications_share_group_commits(make_listener, audit):
    listener = make_listener()
    notifications = [make_notification(f"fp{i}") for i in range(200)]
    admissions = admit(listener, *notifications)
    drain(listener)
    assert {a.status for a in admissions} == {"accepted"}
    counts = kinds(audit.path)
    assert counts == {"notification": 200, "analysis": 200}
    commits = listener.metrics.journal_commits._value.get()
    assert commits < 400  # fewer fsyncs than records: batched
    assert audit.verify().ok


def test_each_notification_is_analysed_and_linked(make_listener, audit, service):
    listener = make_listener()
    admissions = admit(listener, make_notification("a"), make_notification("b"))
    drain(listener)
    ids = {a.notification_id for a in admissions}
    analyses = [r for r in records(audit.path) if r["kind"] == "analysis"]
    assert {r["notification_id"] for r in analyses} == ids
    assert sorted(service.calls) == sorted(ids)
    assert all(r["source"] == "webhook" for r in analyses)


def test_resend_is_a_duplicate_not_analysed_again(make_listener, audit, service):
    listener = make_listener()
    [first] = admit(listener, make_notification())
    [again] = admit(listener, make_notification())
    drain(listener)
    assert first.status == "accepted"
    assert again.status == "duplicate" and again.notification_id is None
    assert kinds(audit.path) == {"notification": 1, "analysis": 1}
    assert len(service.calls) == 1
    assert listener.metrics.duplicate._value.get() == 1


def test_concurrent_copies_are_journaled_once(make_listener, audit):
    listener = make_listener()
    admissions = admit(listener, *[make_notification() for _ in range(5)])
    drain(listener)
    assert Counter(a.status for a in admissions) == {"accepted": 1, "duplicate": 4}
    assert kinds(audit.path)["notification"] == 1


def test_new_alert_in_group_or_resolution_is_not_a_duplicate(make_listener, audit):
    listener = make_listener()
    extra = {
        "status": "firing",
        "labels": {"alertname": "PredictorDown", "instance": "b"},
        "startsAt": "2026-11-25T10:00:00Z",
        "fingerprint": "fp2",
    }
    results = [
        admit(listener, make_notification())[0],
        admit(listener, make_notification(more=[extra]))[0],
        admit(listener, make_notification(status="resolved"))[0],
    ]
    assert [r.status for r in results] == ["accepted", "accepted", "accepted"]


def test_failed_commit_forgets_only_its_new_alerts(make_listener, audit):
    listener = make_listener()
    admit(listener, make_notification("old"))
    original = audit.append_many

    def fail(entries):
        raise AuditError("disk full")

    audit.append_many = fail  # type: ignore[method-assign]
    both = make_notification("old", more=[{"labels": {"a": "b"}, "fingerprint": "new"}])
    assert isinstance(admit(listener, both)[0], AuditError)
    audit.append_many = original  # type: ignore[method-assign]
    assert admit(listener, make_notification("old"))[0].status == "duplicate"
    assert admit(listener, both)[0].status == "accepted"


def test_alert_without_fingerprint_is_keyed_by_labels():
    one = Notification.model_validate({"status": "firing", "alerts": [{"labels": {"a": "1"}}]})
    two = Notification.model_validate({"status": "firing", "alerts": [{"labels": {"a": "2"}}]})
    assert alert_keys(one) != alert_keys(two)
    assert alert_keys(one)[0].startswith("labels:")


def test_dedup_index_is_bounded_and_forgets_oldest():
    index = DedupIndex(max_keys=2)
    for key in ("a", "b", "c"):
        index.reserve([key], None)
    assert len(index) == 2
    assert index.lookup(["a"]) is None
    assert index.lookup(["b", "c"]) == []


def test_full_queue_refuses_without_journaling(make_listener, audit, service):
    service.gate.clear()
    listener = make_listener(queue_size=1, workers=1)
    admit(listener, make_notification("busy"))  # taken by the worker
    assert service.started.acquire(timeout=5)
    [queued] = admit(listener, make_notification("queued"))
    [refused] = admit(listener, make_notification("refused"))
    assert queued.status == "accepted"
    assert isinstance(refused, QueueFull)
    assert kinds(audit.path)["notification"] == 2
    service.gate.set()
    drain(listener)
    # The refused one was not remembered as seen: its retry is accepted.
    listener2 = make_listener()
    assert admit(listener2, make_notification("refused"))[0].status == "accepted"


def test_journal_failure_is_not_acknowledged_and_retry_works(make_listener, audit, tmp_path):
    listener = make_listener()
    original = audit.append_many
    failing = True

    def flaky(entries):
        if failing:
            raise AuditError("audit log: cannot write: No space left on device")
        return original(entries)

    audit.append_many = flaky  # type: ignore[method-assign]
    [result] = admit(listener, make_notification())
    assert isinstance(result, AuditError)
    assert records(audit.path) == []
    failing = False
    [retry] = admit(listener, make_notification())
    assert retry.status == "accepted"
    drain(listener)
    assert kinds(audit.path) == {"notification": 1, "analysis": 1}


def test_copy_waiting_on_a_failed_commit_fails_too(make_listener, audit):
    """A re-send arriving while the first copy's commit is still on its way waits for
    that commit and shares its failure (both get a 5xx; Alertmanager retries)."""
    listener = make_listener()
    committing, release = threading.Event(), threading.Event()
    commits: list[int] = []
    original = audit.append_many

    def slow_failure(entries):
        commits.append(len(entries))
        committing.set()
        release.wait(5)
        raise AuditError("disk gone")

    audit.append_many = slow_failure  # type: ignore[method-assign]
    # The first copy is committed in its own event loop's thread, which the slow
    # failure holds; the copy arrives meanwhile in another loop.
    first: list[Any] = []
    thread = threading.Thread(target=lambda: first.extend(admit(listener, make_notification())))
    thread.start()
    assert committing.wait(5)

    async def copy() -> Any:
        task = asyncio.ensure_future(listener.admit(make_notification()))
        await asyncio.sleep(0.05)
        waiting = not task.done()
        release.set()
        [outcome] = await asyncio.gather(task, return_exceptions=True)
        return waiting, outcome

    waiting, second = asyncio.run(copy())
    thread.join(5)
    audit.append_many = original  # type: ignore[method-assign]
    assert waiting  # the copy neither answered at once nor committed a record of its own
    assert isinstance(first[0], AuditError)
    assert isinstance(second, AuditError)
    assert commits == [1]


def test_crash_leftovers_are_analysed_once_at_start(audit, service, make_listener):
    # What a SIGKILL leaves: three acknowledged notifications, one already analysed.
    first = make_listener()
    service.gate.clear()
    admissions = admit(first, *[make_notification(f"fp{i}") for i in range(3)])
    assert service.started.acquire(timeout=5)
    first.stop(0)  # abandon: nothing analysed yet
    analysed_before = {r.get("notification_id") for r in records(audit.path)}
    service.gate.set()

    restarted_service = FakeService()
    second = make_listener(service=restarted_service)
    drain(second)
    ids = [a.notification_id for a in admissions]
    per_id = Counter(r["notification_id"] for r in records(audit.path) if r["kind"] == "analysis")
    assert all(per_id[i] == 1 for i in ids), per_id
    assert set(restarted_service.calls) == set(ids) - analysed_before
    assert second.metrics.recovered._value.get() == len(set(ids) - analysed_before)


def test_restart_remembers_seen_alerts(make_listener, audit):
    first = make_listener()
    admit(first, make_notification())
    drain(first)
    second = make_listener()
    assert admit(second, make_notification())[0].status == "duplicate"
    drain(second)
    assert kinds(audit.path) == {"notification": 1, "analysis": 1}


def test_recovery_skips_analysed_and_failed_and_other_sources(audit, service, make_listener):
    payload = make_notification().model_dump(mode="json", by_alias=True)
    audit.append_many(
        [
            ("notification", {"id": "n1", "source": "webhook", "payload": payload}),
            ("analysis", {"notification_id": "n1"}),
            ("notification", {"id": "n2", "source": "webhook", "payload": payload}),
            ("analysis_failed", {"notification_id": "n2"}),
            ("notification", {"id": "n3", "source": "alerts.json", "payload": payload}),
            ("notification", {"id": "n4", "source": "webhook", "payload": payload}),
        ]
    )
    listener = make_listener()
    drain(listener)
    assert service.calls == ["n4"]


def test_recovery_finds_a_notification_the_last_rotation_moved(tmp_path, service, make_listener):
    payload = make_notification().model_dump(mode="json", by_alias=True)
    rotating = AuditLog(tmp_path / "rotating.jsonl", max_bytes=4096)
    rotating.append("notification", {"id": "n1", "source": "webhook", "payload": payload})
    while not (tmp_path / "rotating.jsonl.1").exists():
        rotating.append("status", {"filler": "x" * 200})
    assert all(r.get("id") != "n1" for r in rotating.records())  # only in the rotated file
    listener = make_listener(audit=rotating)
    drain(listener)
    assert service.calls == ["n1"]


def test_unreadable_journaled_payload_is_marked_failed_not_retried(audit, service, make_listener):
    audit.append("notification", {"id": "bad", "source": "webhook", "payload": {"nope": 1}})
    drain(make_listener())
    assert service.calls == []
    failed = [r for r in records(audit.path) if r["kind"] == "analysis_failed"]
    assert [r["notification_id"] for r in failed] == ["bad"]
    drain(make_listener())  # and not again at the next start
    assert kinds(audit.path)["analysis_failed"] == 1


def test_failed_analysis_is_journaled_without_exception_text(make_listener, audit, service):
    service.fail = True
    listener = make_listener()
    admit(listener, make_notification())
    drain(listener)
    [failed] = [r for r in records(audit.path) if r["kind"] == "analysis_failed"]
    assert failed["error"] == "RuntimeError"
    assert "secret" not in json.dumps(failed)
    assert listener.metrics.analysis_failures._value.get() == 1


def test_remediator_sees_each_journaled_analysis_and_its_errors_are_contained(make_listener, audit):
    seen: list[tuple[str, str]] = []

    class Remediator:
        def handle(self, analysis: Analysis, notification: Notification) -> None:
            # The analysis is already in the audit log when the remediator runs.
            assert analysis.id in {r["id"] for r in records(audit.path)}
            seen.append((analysis.proposed_action, notification.alerts[0].fingerprint))
            raise RuntimeError("remediation bug")

    listener = make_listener(remediator=Remediator())
    admit(listener, make_notification("x"), make_notification("y"))
    drain(listener)
    assert sorted(seen) == [("restart", "x"), ("restart", "y")]


def test_context_provider_feeds_the_analysis_and_its_failure_is_tolerated(make_listener, service):
    calls = iter([{"up": 1}, RuntimeError("unreachable")])

    def context_for(notification: Notification) -> Mapping[str, Any]:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    listener = make_listener(context_for=context_for, workers=1)
    admit(listener, make_notification("a"))
    admit(listener, make_notification("b"))
    drain(listener)
    assert service.contexts == [{"up": 1}, {}]


def test_stop_drains_then_leaves_the_rest_for_next_start(make_listener, audit, service):
    service.gate.clear()
    listener = make_listener(workers=1)
    admit(listener, *[make_notification(f"fp{i}") for i in range(3)])
    assert listener.depth == 3
    assert listener.stop(0.2) == 3
    assert not listener.ready


def test_metrics_count_received_and_analyses(make_listener):
    listener = make_listener()
    admit(listener, make_notification("a"), make_notification("b", status="resolved"))
    drain(listener)
    text = listener.metrics.exposition().decode()
    assert 'market_agent_notifications_received_total{status="firing"} 1.0' in text
    assert 'market_agent_notifications_received_total{status="resolved"} 1.0' in text
    assert 'market_agent_analyses_total{analyzer="rules",severity="critical"} 2.0' in text
    assert "market_agent_analysis_queue_depth 0.0" in text
    assert "market_agent_last_notification_timestamp_seconds" in text


def test_metrics_registry_is_not_the_global_one():
    from prometheus_client import REGISTRY

    assert ListenMetrics().registry is not REGISTRY
    ListenMetrics()  # a second instance does not clash


def test_one_listener_per_audit_log(make_listener, audit, service):
    make_listener()
    with pytest.raises(ConfigError, match="another `market-agent listen`"):
        Listener(audit, service).start()


def test_unwritable_audit_log_fails_at_start(tmp_path, service):
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(AuditError):
        Listener(AuditLog(blocked / "audit.jsonl"), service).start()
