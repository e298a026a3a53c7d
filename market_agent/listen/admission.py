"""The durable webhook pipeline: journal, acknowledge, then analyse in the background.

Guarantees, matching Alertmanager's retry semantics (it retries only on 5xx and
transport errors, and re-sends a group until one send succeeds):

- A notification is acknowledged only once its record is in the audit log and
  fsync'd. Concurrent requests share one write and one fsync (group commit).
- Analysis runs on a bounded queue served by worker threads (`listen.workers`),
  here or in an analysis process of its own (`listen.child`); the
  queue is bounded *before* journaling, so a full queue answers 503 and writes
  nothing. Past half full, answers are held back (up to half a second) while
  analysis catches up.
- At start, every listen notification in the audit log without an analysis is
  queued again: an acknowledged notification is never lost, even to SIGKILL.
- A notification is attempted at most MAX_ATTEMPTS times, restarts included: every
  attempt after the first is announced by an `analysis_attempt` record, journaled
  before the job is handed to analysis, and at start a notification whose last
  announced attempt was the last allowed is parked (`analysis_failed`, error
  `AttemptsExhausted`) instead of queued. A first attempt writes nothing more.
- A notification whose alerts, keyed by (fingerprint, status, startsAt), were all
  seen before is a duplicate (an Alertmanager re-send): acknowledged, counted,
  logged, not journaled and not analysed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from market_agent.analysis.run import ContextProvider, notification_record
from market_agent.audit import AuditLog, lock_for_listener, prepare
from market_agent.listen.journal import Journal, JournalClosed
from market_agent.listen.logs import clip
from market_agent.listen.metrics import ListenMetrics
from market_agent.listen.workers import (
    SOURCE,
    Batch,
    Job,
    Remediator,
    Service,
    Workers,
    failure_record,
)
from market_agent.models import Notification, new_id

if TYPE_CHECKING:
    from market_agent.listen.child import ProcessAnalysis
    from market_agent.listen.messages import EngineSpec

__all__ = [
    "SOURCE",
    "Admission",
    "DedupIndex",
    "Listener",
    "QueueFull",
    "Remediator",
    "Service",
    "alert_keys",
]

log = logging.getLogger("market_agent.listen")

#: Alert keys remembered for duplicate detection (oldest forgotten first).
DEDUP_MAX_KEYS = 100_000
#: Seconds before analyses whose records could not be journaled are tried again.
RETRY_SECONDS = 1.0
#: With this share of the queue waiting, a new notification is answered only once the
#: backlog is below it again (or after BACKPRESSURE_SECONDS): senders slow down to what
#: analysis keeps up with, instead of spinning on quick 503s that starve the analysis.
BACKPRESSURE_SHARE = 0.5
BACKPRESSURE_SECONDS = 0.5
BACKPRESSURE_POLL_SECONDS = 0.005
#: Attempts at analysing one notification, restarts included (then it is parked).
MAX_ATTEMPTS = 3
#: Longest wait for an `analysis_attempt` record to be on disk before the attempt
#: goes ahead anyway (the journal may be failing: analysis must not stop for that).
ATTEMPT_MARK_TIMEOUT = 5.0
#: /readyz: queued work with no analysis journaled for this long is a stalled pipeline.
STALL_SECONDS = 120.0
#: Alert names quoted in one log line, at most.
MAX_LOGGED_NAMES = 5

T = TypeVar("T")


class QueueFull(Exception):
    """The analysis queue is full; nothing was journaled."""


def alert_keys(notification: Notification) -> list[str]:
    """One `fingerprint|status|startsAt` key per alert, the identity Alertmanager re-sends."""
    return [alert.identity(with_status=True) for alert in notification.alerts]


def webhook_record(
    notification: Notification,
    notification_id: str,
    keys: list[str],
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The journaled notification: `notification_record`'s shape plus the alert keys.

    With the decoded request body at hand, that is the payload journaled (as
    received), saving a dump of the model it was validated into.
    """
    if payload is None:
        record = notification_record(notification, notification_id)
    else:
        record = {
            "id": notification_id,
            "source": SOURCE,
            "group_key": notification.group_key,
            "status": notification.status,
            "alertnames": sorted({alert.name for alert in notification.alerts}),
            "payload": payload,
        }
    record["alert_keys"] = keys
    return record


class DedupIndex:
    """Alert keys seen, oldest first, bounded; a key maps to its in-flight commit until done.

    Not thread-safe by itself: the listener holds its lock around every call.
    """

    def __init__(self, max_keys: int = DEDUP_MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._keys: OrderedDict[str, Future[Any] | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, keys: Sequence[str]) -> list[Future[Any]] | None:
        """None when any key is new; else the commits still in flight for these keys."""
        if not all(key in self._keys for key in keys):
            return None
        for key in keys:
            self._keys.move_to_end(key)
        return list({id(f): f for key in keys if (f := self._keys[key]) is not None}.values())

    def reserve(self, keys: Sequence[str], future: Future[Any] | None) -> None:
        """Remember keys; new ones belong to `future` until it settles (None: on disk)."""
        for key in keys:
            self._keys.setdefault(key, future)
            self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)

    def settle(self, keys: Sequence[str], future: Future[Any], committed: bool) -> None:
        for key in keys:
            if self._keys.get(key) is future:
                if committed:
                    self._keys[key] = None
                else:
                    del self._keys[key]


class _Handoff:
    """Settles asyncio futures from commits, with one wake-up of the loop per commit.

    (`asyncio.wrap_future` wakes the loop, and takes the GIL from the journal thread,
    once per future.) Cancelling a waiter leaves its commit alone, as `shield` would.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread = threading.get_ident()
        self._lock = threading.Lock()
        self._settled: list[tuple[asyncio.Future[Any], Future[Any]]] = []

    def wait(self, future: Future[T]) -> asyncio.Future[T]:
        """An asyncio future (of the loop) with the outcome of `future`."""
        waiter: asyncio.Future[T] = self.loop.create_future()
        future.add_done_callback(lambda done: self._done(waiter, done))
        return waiter

    def _done(self, waiter: asyncio.Future[Any], done: Future[Any]) -> None:  # any thread
        if threading.get_ident() == self._thread:  # committed in the loop: no wake-up
            self._settle(waiter, done)
            return
        with self._lock:
            self._settled.append((waiter, done))
            if len(self._settled) > 1:
                return  # a wake-up is already on its way
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:  # the loop's thread
        with self._lock:
            settled, self._settled = self._settled, []
        for waiter, done in settled:
            self._settle(waiter, done)

    @staticmethod
    def _settle(waiter: asyncio.Future[Any], done: Future[Any]) -> None:
        if waiter.cancelled():
            return
        if done.cancelled():
            waiter.cancel()
        elif (exc := done.exception()) is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(done.result())


@dataclass(frozen=True, slots=True)
class Admission:
    status: Literal["accepted", "duplicate"]
    #: The notification record's id (None for a duplicate).
    notification_id: str | None = None


@dataclass(frozen=True, slots=True)
class Recovery:
    """What the start-up scan of the audit log found."""

    requeued: int
    dedup_keys: int
    records: int
    #: Unanalysed notifications not re-queued: attempted MAX_ATTEMPTS times already.
    parked: int = 0

    def __str__(self) -> str:
        parked = f", {self.parked} parked after {MAX_ATTEMPTS} attempts" if self.parked else ""
        return (
            f"{self.records} records, {self.dedup_keys} alert keys remembered, "
            f"{self.requeued} notifications re-queued{parked}"
        )


class Listener:
    """Admission, group-commit journal, analysis and crash recovery.

    Analysis runs on `workers` threads of this process with `service`, `context_for`
    and `remediator`; or, given an `engine`, in a process of its own that builds all
    three from the engine's settings (`listen.child`).
    """

    def __init__(
        self,
        audit: AuditLog,
        service: Service | None,
        *,
        metrics: ListenMetrics | None = None,
        queue_size: int = 1000,
        workers: int = 2,
        context_for: ContextProvider | None = None,
        remediator: Remediator | None = None,
        dedup_max_keys: int = DEDUP_MAX_KEYS,
        engine: EngineSpec | None = None,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        self.audit = audit
        self.metrics = metrics or ListenMetrics()
        self.journal = Journal(audit, self.metrics)
        self._dedup = DedupIndex(dedup_max_keys)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(queue_size)
        self._backlog_limit = max(1, int(queue_size * BACKPRESSURE_SHARE))
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._stopping = threading.Event()
        self._analysis = self._analysis_for(engine, service, workers, context_for, remediator)
        self._started = False
        self._lock_fd: int | None = None
        self._handoffs: _Handoff | None = None
        self.stall_seconds = stall_seconds
        #: When analysis last made progress (a record journaled), or the queue last
        #: went from empty to not: /readyz's measure of a stalled pipeline.
        self._progress_at = time.monotonic()
        self._probe: Future[list[dict[str, Any]]] | None = None
        self.metrics.queue_depth.set_function(lambda: self.depth)
        self.metrics.watch_audit(audit)

    def _analysis_for(
        self,
        engine: EngineSpec | None,
        service: Service | None,
        workers: int,
        context_for: ContextProvider | None,
        remediator: Remediator | None,
    ) -> Workers | ProcessAnalysis:
        if engine is not None:
            from market_agent.listen.child import ProcessAnalysis

            return ProcessAnalysis(
                engine,
                self._queue,
                self._commit,
                stopping=self._stopping,
                on_take=self._take,
                on_failed=self._give_up,
                on_restart=self.metrics.analysis_restarts.inc,
            )
        if service is None:
            raise ValueError("a Listener needs an analysis service or an engine")
        return Workers(
            self._queue,
            service,
            self._commit_and_wait,
            count=workers,
            stopping=self._stopping,
            context_for=context_for,
            remediator=remediator,
            on_take=self._taken,
        )

    @property
    def analysis_pid(self) -> int | None:
        """The analysis process's pid (None when analysis runs in threads here)."""
        return getattr(self._analysis, "pid", None)

    # Life cycle ----------------------------------------------------------------

    def start(self) -> Recovery:
        """Lock the audit log for this listener, re-queue what a crash left, start threads."""
        self.audit.check_writable()
        # One listener per audit log file: two would each re-queue the other's work.
        self._lock_fd = lock_for_listener(self.audit.path)
        try:
            recovery = self._recover()
            self.journal.start()
            self._analysis.start()
        except BaseException:  # e.g. an analysis process that cannot start: let go
            self.journal.close()
            self._unlock()
            raise
        self._started = True
        return recovery

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def ready(self) -> bool:
        return self.readiness() is None

    def readiness(self) -> str | None:
        """Why this listener is not ready (None: it is). README, "listen", lists them."""
        if not self._started:
            return "starting"
        if self._stopping.is_set():
            return "draining"
        if not self.journal.alive or self.journal.failing is not None:
            return "journal_unwritable"
        problem = self._analysis.problem()
        if problem is not None:
            return problem
        if self.depth and time.monotonic() - self._progress_at > self.stall_seconds:
            return "analysis_stalled"
        return None

    def probe_journal(self) -> Future[list[dict[str, Any]]] | None:
        """While the journal is failing, try it with a `journal_resumed` record (one try
        at a time): once it is written, the audit log shows the outage's end and
        /readyz is ready again even if no notification or analysis is pending."""
        failing = self.journal.failing
        if failing is None or not self.journal.alive:
            return None
        if self._probe is None or self._probe.done():
            record = {"after": clip(failing, 300)}
            with contextlib.suppress(JournalClosed):
                self._probe = self.journal.submit([prepare("journal_resumed", record)])
        return self._probe

    @property
    def depth(self) -> int:
        """Acknowledged notifications not analysed yet (queued or in progress)."""
        return self._queue.unfinished_tasks

    def stop(self, grace: float, abort: threading.Event | None = None) -> int:
        """Analyse what is queued for up to `grace` seconds; returns how many were left.

        Whatever is left stays journaled and is analysed on the next start.
        """
        deadline = time.monotonic() + grace
        # Notifications still being committed (their request may be gone) join the queue.
        self.journal.flush(grace)
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (abort is not None and abort.is_set()):
                    break
                self._queue.all_tasks_done.wait(min(remaining, 0.1))
            left = self._queue.unfinished_tasks
        self._stopping.set()
        self._analysis.stop()
        self.journal.close()
        self._unlock()
        return left

    # Admission (event loop) -----------------------------------------------------

    async def admit(
        self, notification: Notification, payload: Mapping[str, Any] | None = None
    ) -> Admission:
        """Journal a notification and queue it for analysis, or recognise a duplicate.

        `payload` is the decoded JSON `notification` was validated from: journaled as
        received (else the model's dump is). Raises QueueFull (nothing written),
        AuditError or JournalClosed (not acknowledged: the caller answers 5xx so
        Alertmanager retries).
        """
        keys = alert_keys(notification)
        if self._queue.qsize() >= self._backlog_limit:
            await self._backpressure()
        with self._lock:
            in_flight = self._dedup.lookup(keys)
            claim = self._claim(notification, keys, payload) if in_flight is None else None
        if claim is not None:
            job, future = claim
            waiter = self._handoff().wait(future)
            self._journal_new(job, keys, payload, future)
            records = await waiter
            return Admission("accepted", records[0]["id"])
        # The first copy may still be on its way to disk: share its outcome.
        for pending in in_flight or ():
            await asyncio.shield(asyncio.wrap_future(pending))
        self.metrics.duplicate.inc()
        log.info("duplicate notification: %s", _describe(notification))
        return Admission("duplicate")

    async def _backpressure(self) -> None:
        """Hold the answer while the backlog is deep (a full queue still answers 503)."""
        deadline = time.monotonic() + BACKPRESSURE_SECONDS
        while self._queue.qsize() >= self._backlog_limit and time.monotonic() < deadline:
            await asyncio.sleep(BACKPRESSURE_POLL_SECONDS)

    def _handoff(self) -> _Handoff:
        loop = asyncio.get_running_loop()
        handoff = self._handoffs
        if handoff is None or handoff.loop is not loop:
            handoff = self._handoffs = _Handoff(loop)
        return handoff

    def _claim(
        self, notification: Notification, keys: list[str], payload: Mapping[str, Any] | None
    ) -> tuple[Job, Future[list[dict[str, Any]]]]:
        """A queue slot, an id, and the alert keys reserved for the commit to come.

        Under the listener's lock; the future settles even if the request goes away.
        """
        if self._stopping.is_set():
            raise JournalClosed("the listener is shutting down")
        if not self._slots.acquire(blocking=False):
            raise QueueFull(f"the analysis queue is full ({self.depth} waiting)")
        job = Job(new_id(), notification, holds_slot=True, payload=payload)
        future: Future[list[dict[str, Any]]] = Future()
        self._dedup.reserve(keys, future)
        future.add_done_callback(lambda done: self._committed(done, job, keys))
        return job, future

    def _journal_new(
        self,
        job: Job,
        keys: list[str],
        payload: Mapping[str, Any] | None,
        future: Future[list[dict[str, Any]]],
    ) -> None:
        """Redact and serialise the record here, not in the journal's commit, then submit it."""
        try:
            record = webhook_record(job.notification, job.notification_id, keys, payload)
            self.journal.submit([prepare("notification", record)], urgent=True, future=future)
        except Exception as exc:  # JournalClosed, or a bug: the claim is given back
            future.set_exception(exc)

    def _committed(self, future: Future[Any], job: Job, keys: list[str]) -> None:
        ok = not future.cancelled() and future.exception() is None
        with self._lock:
            self._dedup.settle(keys, future, committed=ok)
        if not ok:
            self._slots.release()
            return
        self.metrics.received.labels(job.notification.status).inc()
        self.metrics.last_notification.set(time.time())
        if not self.depth:
            self._progress_at = time.monotonic()
        self._queue.put(job)
        if log.isEnabledFor(logging.INFO):  # _describe is not free: only when logged
            described = _describe(job.notification)
            log.info("accepted notification %s: %s", job.notification_id, described)

    # Analysis (workers here, or the analysis process) -----------------------------

    def _taken(self, job: Job) -> None:
        self._take([job])

    def _take(self, jobs: list[Job]) -> None:
        """Jobs leave the queue for analysis: their slots are free, and every attempt
        after the first is on disk before it starts (so that a crash counts it)."""
        markers = []
        for job in jobs:
            if job.holds_slot:
                self._slots.release()
            if job.attempt > 1:
                fields = {"notification_id": job.notification_id, "attempt": job.attempt}
                markers.append(prepare("analysis_attempt", fields))
        if markers:
            with contextlib.suppress(Exception):  # a failing journal must not stop analysis
                self.journal.submit(markers).result(ATTEMPT_MARK_TIMEOUT)

    def _commit(self, batch: Batch, on_done: Callable[[bool], None]) -> None:
        """Journal a batch of analysis records; `on_done(committed)` once settled."""

        def settled(future: Future[list[dict[str, Any]]]) -> None:
            exc = future.exception()
            if exc is None:
                self._progress_at = time.monotonic()
                self._count(batch)
            else:
                self._not_journaled(batch, exc)
            on_done(exc is None)

        try:
            self.journal.submit(batch.entries).add_done_callback(settled)
        except JournalClosed as exc:
            self._not_journaled(batch, exc)
            on_done(False)

    def _commit_and_wait(self, batch: Batch) -> bool:
        outcome: Future[bool] = Future()
        self._commit(batch, outcome.set_result)
        return outcome.result()

    def _count(self, batch: Batch) -> None:
        metrics = self.metrics
        for seen in batch.observations:
            metrics.analyses.labels(seen.analyzer, seen.severity).inc()
            if seen.llm_latency_s is not None:
                metrics.llm_latency.observe(seen.llm_latency_s)
        if batch.failures:
            metrics.analysis_failures.inc(batch.failures)

    def _not_journaled(self, batch: Batch, exc: BaseException) -> None:
        self.metrics.analysis_failures.inc(len(batch.entries))
        log.error(
            "%d analyses not journaled (%s); retrying in %g s",
            len(batch.entries),
            exc,
            RETRY_SECONDS,
        )
        self._retry_later(batch.jobs)

    def _retry_later(self, jobs: list[Job]) -> None:
        """Analyse again once the journal may work again (disk space back); whatever is
        still unanalysed at a stop is redone at the next start anyway."""
        retry = [dataclasses.replace(job, holds_slot=False) for job in jobs]

        def requeue() -> None:
            if not self._stopping.is_set():
                for job in retry:
                    self._queue.put(job)

        timer = threading.Timer(RETRY_SECONDS, requeue)
        timer.daemon = True
        timer.start()

    def _give_up(self, job: Job, error: str, why: str) -> None:
        """Record a job the analysis cannot take, or kept dying on (it is not retried)."""
        record = failure_record(job.notification_id, error, why=why)
        self.metrics.analysis_failures.inc()
        self._progress_at = time.monotonic()
        with contextlib.suppress(JournalClosed):
            self.journal.submit([prepare("analysis_failed", record)])

    # Recovery ----------------------------------------------------------------------

    def _recover(self) -> Recovery:
        pending: dict[str, dict[str, Any]] = {}
        #: The last attempt announced for each notification (absent: the first).
        attempts: dict[str, int] = {}
        count = 0
        for record in self.audit.recent_records():
            count += 1
            kind = record.get("kind")
            if kind == "notification" and record.get("source") == SOURCE:
                keys = record.get("alert_keys")
                if isinstance(keys, list):
                    self._dedup.reserve([str(key) for key in keys], None)
                pending[str(record.get("id"))] = record
            elif kind in ("analysis", "analysis_failed"):
                pending.pop(str(record.get("notification_id")), None)
            elif kind == "analysis_attempt":
                attempts[str(record.get("notification_id"))] = _int(record.get("attempt"))
        failures: list[dict[str, Any]] = []
        for notification_id, record in pending.items():
            attempt = attempts.get(notification_id, 1)
            if attempt >= MAX_ATTEMPTS:
                why = f"still unanalysed after {attempt} attempts; parked, not retried"
                failures.append(failure_record(notification_id, "AttemptsExhausted", why=why))
            else:
                failures.extend(self._requeue(notification_id, record, attempt + 1))
        self._record_failures_at_start(failures)
        parked = sum(f["error"] == "AttemptsExhausted" for f in failures)
        requeued = len(pending) - len(failures)
        if requeued:
            log.warning("re-queued %d acknowledged, unanalysed notifications", requeued)
        return Recovery(requeued, len(self._dedup), count, parked)

    def _requeue(
        self, notification_id: str, record: Mapping[str, Any], attempt: int
    ) -> list[dict[str, Any]]:
        """Queue a journaled notification again; else the failure record to write."""
        try:
            notification = Notification.model_validate(record.get("payload"))
        except ValueError as exc:
            why = "the journaled notification cannot be read back"
            return [failure_record(notification_id, type(exc).__name__, why=why)]
        self.metrics.recovered.inc()
        payload = record.get("payload")
        job = Job(notification_id, notification, False, payload=payload, attempt=attempt)
        self._queue.put(job)
        return []

    def _record_failures_at_start(self, failures: list[dict[str, Any]]) -> None:
        if failures:
            self.metrics.analysis_failures.inc(len(failures))
            self.audit.append_many([("analysis_failed", record) for record in failures])


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 1


def _describe(notification: Notification) -> str:
    names = sorted({alert.name for alert in notification.alerts})
    shown = [clip(name) for name in names[:MAX_LOGGED_NAMES]]
    more = f" and {len(names) - len(shown)} more names" if len(names) > len(shown) else ""
    # Alert text is untrusted: JSON-quote it so it cannot forge log lines.
    described = json.dumps(shown)
    return f"{notification.status} {described}{more} ({len(notification.alerts)} alerts)"
