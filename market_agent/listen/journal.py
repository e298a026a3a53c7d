"""The journal: group commit of audit records, one write and one fsync per commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from market_agent.audit import AuditLog, Prepared
from market_agent.listen.metrics import ListenMetrics

log = logging.getLogger("market_agent.listen")

#: Most notification records one group commit writes, and most analysis records added.
MAX_BATCH = 1024
BACKGROUND_BATCH = 32
#: How long the writer thread leaves analyses for a commit in the event loop to take.
BACKGROUND_LINGER_SECONDS = 0.002
Entries = Sequence[tuple[str, Mapping[str, Any]] | Prepared]


class JournalClosed(Exception):
    """The journal writer has stopped (the listener is shutting down)."""


class Journal:
    """Group commit: everything submitted since the last fsync is appended with one write.

    Each commit takes every urgent submission (notifications, whose HTTP answer waits
    on them) and up to `background_batch` records of the rest (analyses): one write
    and one fsync serve both, a stream of notifications cannot starve the analyses,
    and an acknowledgement shares its commit with at most that many analysis records.
    Records come prepared (`audit.prepare`): a commit only chains, writes and syncs.

    Urgent submissions made in an event loop's thread are committed in that thread,
    right after the callbacks that are ready (the requests read in the same pass):
    an acknowledgement then waits for no other thread. A writer thread commits the
    rest, lingering a moment over background records so that a commit in the loop
    can take them along.
    """

    def __init__(
        self,
        audit: AuditLog,
        metrics: ListenMetrics,
        *,
        max_batch: int = MAX_BATCH,
        background_batch: int = BACKGROUND_BATCH,
        background_linger: float = BACKGROUND_LINGER_SECONDS,
    ) -> None:
        self.audit = audit
        self.metrics = metrics
        self.max_batch = max_batch
        self.background_batch = background_batch
        self.background_linger = background_linger
        self._urgent: deque[tuple[Entries, Future[list[dict[str, Any]]]]] = deque()
        self._background: deque[tuple[Entries, Future[list[dict[str, Any]]]]] = deque()
        #: Urgent submissions of event loop threads, and whether a commit is scheduled.
        self._in_loop: deque[tuple[Entries, Future[list[dict[str, Any]]]]] = deque()
        self._loop_commit_due = False
        self._cond = threading.Condition()
        self._closed = False
        #: Why the last commit failed, while no commit has succeeded since.
        self.failing: str | None = None
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def submit(
        self,
        entries: Entries,
        *,
        urgent: bool = False,
        future: Future[list[dict[str, Any]]] | None = None,
    ) -> Future[list[dict[str, Any]]]:
        """Queue records for a coming commit; the future (new, or the one given) gets them
        once on disk."""
        if future is None:
            future = Future()
        loop = _running_loop() if urgent else None
        with self._cond:
            if self._closed:
                raise JournalClosed("the journal is closed")
            if loop is not None:
                self._in_loop.append((entries, future))
                due, self._loop_commit_due = self._loop_commit_due, True
                if not due:
                    loop.call_soon(self._commit_in_loop)
            else:
                (self._urgent if urgent else self._background).append((entries, future))
                self._cond.notify()
        return future

    def _commit_in_loop(self) -> None:
        with self._cond:
            self._loop_commit_due = False
            batch = self._take_batch(self._in_loop, self.max_batch)
            if self._in_loop:  # more than one commit holds: the rest in the next pass
                self._loop_commit_due = True
                asyncio.get_running_loop().call_soon(self._commit_in_loop)
            batch += self._take_batch(self._background, self.background_batch)
        if batch:
            self._commit(batch)

    def flush(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for what was submitted so far to be committed."""
        if not self.alive:
            return
        with contextlib.suppress(Exception):  # a failed commit is its submitter's business
            self.submit([], urgent=True).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what was submitted, then stop the writer."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._urgent or self._background or self._closed):
                    self._cond.wait()
                if not (self._urgent or self._background or self._in_loop):
                    return
                if not (self._urgent or self._closed):
                    # Only analyses: a commit in the loop may take them along.
                    self._cond.wait(self.background_linger)
                batch = self._take_batch(self._urgent, self.max_batch)
                if self._closed:  # a loop that ended before its scheduled commit
                    batch += self._take_batch(self._in_loop, self.max_batch)
                batch += self._take_batch(self._background, self.background_batch)
            if batch:
                self._commit(batch)

    @staticmethod
    def _take_batch(
        pending: deque[tuple[Entries, Future[list[dict[str, Any]]]]], limit: int
    ) -> list[tuple[Entries, Future[list[dict[str, Any]]]]]:
        batch: list[tuple[Entries, Future[list[dict[str, Any]]]]] = []
        size = 0
        while pending and (not batch or size + len(pending[0][0]) <= limit):
            entries, future = pending.popleft()
            # From here on the future cannot be cancelled: its records will be written.
            if future.set_running_or_notify_cancel():
                batch.append((entries, future))
                size += len(entries)
        return batch

    def _commit(self, batch: list[tuple[Entries, Future[list[dict[str, Any]]]]]) -> None:
        entries = [entry for group, _ in batch for entry in group]
        try:
            records = self.audit.append_many(entries)
        except Exception as exc:  # one write: nothing of the batch is acknowledged
            if entries:
                self.failing = f"{type(exc).__name__}: {exc}"
            for _, future in batch:
                future.set_exception(exc)
            return
        if records:  # not a `flush`
            self.failing = None
            self.metrics.journal_commits.inc()
            self.metrics.journal_records.inc(len(records))
        start = 0
        for group, future in batch:
            future.set_result(records[start : start + len(group)])
            start += len(group)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # not in an event loop's thread
        return None
