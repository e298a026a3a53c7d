"""Fault injection: the disk fills up, or the audit log becomes unwritable, while listening.

Expected outcome: a notification that cannot be journaled gets a 503 (Alertmanager
retries it), a write torn by a full disk leaves no partial record once the next
append succeeds, the hash chain still verifies, and notifications are accepted again
as soon as the audit log can be written.

The full disk is simulated where the kernel shows it: `os.write` as `market_agent.audit.log`
sees it writes part of the bytes, then fails with ENOSPC. Root ignores permission bits,
so the unwritable audit log is a directory that became a file.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import market_agent.audit.log
from market_agent.audit import AuditLog
from market_agent.errors import AuditError
from market_agent.listen.admission import Listener
from tests.helpers import wait_until
from tests.test_fuzz_listen import LiveListener
from tests.test_listen_pipeline import FakeService
from tests.test_listen_process import notification

pytestmark = pytest.mark.slow


class FullDisk:
    """`market_agent.audit.log`'s view of `os`: while full, a write whose bytes contain
    `when` writes the first half of them, then fails with ENOSPC."""

    def __init__(self) -> None:
        self.full = False
        self.when = b""
        self.torn = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fill(self, when: bytes = b"") -> None:
        self.when, self.full = when, True

    def free(self) -> None:
        self.full = False

    def write(self, fd: int, data: Any) -> int:
        data = bytes(data)
        with self._lock:
            failing = self.full and self.when in data
            if failing:
                self.torn += 1
        if not failing:
            return os.write(fd, data)
        os.write(fd, data[: len(data) // 2])  # the disk fills up part-way through
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    fake = FullDisk()
    monkeypatch.setattr(market_agent.audit.log, "os", fake)
    return fake


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveListener]:
    (tmp_path / "state").mkdir()
    running = LiveListener(tmp_path / "state")
    yield running
    running.close()


def lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the audit log, each of which must be one whole JSON record."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), "the log ends with a torn record"
    return [json.loads(line) for line in data.splitlines()]


def analysed(path: Path) -> Counter[str]:
    every = AuditLog(path).records()  # a torn last line is skipped
    return Counter(r["notification_id"] for r in every if r["kind"] == "analysis")


def assert_each_notification_analysed_once(path: Path, count: int) -> None:
    every = lines(path)
    notifications = [r for r in every if r["kind"] == "notification"]
    assert len(notifications) == count
    assert len({str(r["alert_keys"]) for r in notifications}) == count  # none journaled twice
    assert analysed(path) == Counter(r["id"] for r in notifications)
    report = AuditLog(path).verify()
    assert report.ok, report


def assert_journal_error(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["reason"] == "journal_error"
    assert response.headers["retry-after"]


def test_disk_full_mid_write_is_503_leaves_no_partial_record_and_recovers(live, disk):
    path = live.audit.path
    assert live.post(notification(0)).status_code == 200
    wait_until(lambda: analysed(path).total() == 1, 10, message="first analysis")

    disk.fill(when=b'"kind":"notification"')
    assert_journal_error(live.post(notification(1)))
    assert disk.torn == 1
    # The torn write was cut back at once: no partial line, no record of the refused one.
    assert path.read_bytes().endswith(b"\n")
    assert AuditLog(path).verify().ok

    disk.free()  # space returns: Alertmanager's retry and new alerts go through
    for n in (1, 2):
        assert live.post(notification(n)).json()["status"] == "accepted"
    wait_until(lambda: analysed(path).total() == 3, 10, message="analyses after recovery")
    live.close()
    assert_each_notification_analysed_once(path, 3)


def test_unwritable_audit_log_while_listening_is_503_until_writable_again(live):
    directory = live.audit.path.parent
    assert live.post(notification(0)).status_code == 200
    wait_until(lambda: analysed(live.audit.path).total() == 1, 10, message="first analysis")

    directory.rename(directory.with_name("moved"))
    directory.write_text("the audit log's directory is now a file\n")
    for _ in range(2):  # Alertmanager retries: still refused, nothing half-done
        assert_journal_error(live.post(notification(1)))

    directory.unlink()
    directory.with_name("moved").rename(directory)
    assert live.post(notification(1)).json()["status"] == "accepted"
    wait_until(lambda: analysed(live.audit.path).total() == 2, 10, message="second analysis")
    live.close()
    assert_each_notification_analysed_once(live.audit.path, 2)


def test_disk_full_for_an_analysis_keeps_the_notification_for_the_next_start(live, disk):
    path = live.audit.path
    disk.fill(when=b'"kind":"analysis"')
    response = live.post(notification(0))
    assert response.status_code == 200  # journaled before the disk was needed again
    wait_until(lambda: disk.torn, 10, message="the analysis commit to fail")
    disk.free()
    live.close()
    assert analysed(path).total() == 0

    restarted = Listener(AuditLog(path, fsync=False), FakeService())
    assert restarted.start().requeued == 1
    assert restarted.stop(10) == 0
    assert analysed(path) == Counter([response.json()["id"]])
    assert AuditLog(path).verify().ok


def test_disk_full_for_an_analysis_is_redone_once_space_returns(live, disk):
    path = live.audit.path
    disk.fill(when=b'"kind":"analysis"')
    first = live.post(notification(0)).json()["id"]
    wait_until(lambda: disk.torn, 10, message="the analysis commit to fail")
    disk.free()
    assert live.post(notification(1)).status_code == 200
    wait_until(lambda: analysed(path).total() == 2, 3, message="both analysed")
    assert analysed(path)[first] == 1


def test_disk_full_mid_batch_keeps_no_record_of_the_failed_batch(tmp_path, disk):
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    log.append("notification", {"id": "acknowledged"})
    disk.fill()
    # Half of the batch's bytes: all of its first, short, line and part of the second.
    batch = [("notification", {"id": "first"}), ("notification", {"id": "torn" + "x" * 500})]
    with pytest.raises(AuditError, match="No space left on device"):
        log.append_many(batch)
    disk.free()
    log.append("notification", {"id": "after"})
    assert [r["id"] for r in lines(log.path)] == ["acknowledged", "after"]
    assert log.verify().ok


def readyz(live: LiveListener) -> tuple[int, str | None]:
    response = live.client.get("/readyz")
    return response.status_code, response.json().get("reason")


def test_readyz_is_503_while_the_disk_is_full_and_ready_once_it_can_write(live, disk):
    path = live.audit.path
    assert readyz(live) == (200, None)
    disk.fill()
    assert_journal_error(live.post(notification(0)))
    # Nothing is pending now: /readyz tries the journal itself, and still cannot write.
    assert readyz(live) == (503, "journal_unwritable")
    assert readyz(live) == (503, "journal_unwritable")
    assert live.client.get("/healthz").status_code == 200  # alive all along
    disk.free()
    assert readyz(live) == (200, None)
    [resumed] = [r for r in lines(path) if r["kind"] == "journal_resumed"]
    assert "No space left on device" in resumed["after"]
    assert live.post(notification(0)).json()["status"] == "accepted"
    live.close()
    assert AuditLog(path).verify().ok


def test_readyz_is_503_while_the_audit_log_ends_in_a_damaged_record(live):
    path = live.audit.path
    assert live.post(notification(0)).status_code == 200
    intact = path.read_bytes()
    path.write_bytes(intact + b'{"hash": "not a record"}\n')
    assert_journal_error(live.post(notification(1)))
    assert readyz(live) == (503, "journal_unwritable")
    path.write_bytes(intact)  # the operator moves the damage aside
    assert readyz(live) == (200, None)
