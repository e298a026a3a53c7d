"""`listen`'s analysis workers: threads that analyse queued jobs in batches.

A worker takes a job and, while its batch is quick, more queued jobs (rule analyses
then share one journal commit instead of each waiting for an fsync; a slow LLM
analysis closes its batch at once). The batch's records go to `commit`, which
journals them: in the listener's own process, or one pipe away when analysis runs
in a process of its own (`market_agent.listen.child`). Once committed, each
analysis is logged and handed to the remediator.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from market_agent.analysis.run import ContextProvider
from market_agent.audit import Prepared, prepare
from market_agent.models import Analysis, Notification, new_id

if TYPE_CHECKING:
    from market_agent.actions.runner import ActionResult

log = logging.getLogger("market_agent.listen")

#: The `source` of the notification and analysis records that `listen` writes.
SOURCE = "webhook"
#: A worker takes more queued jobs into one batch (one commit) up to this many, or
#: while its batch has taken less than this long to analyse.
WORKER_BATCH = 32
WORKER_BATCH_SECONDS = 0.05


class Remediator(Protocol):
    """Called after an analysis is journaled (guarded auto-remediation plugs in here:
    `market_agent.actions.remediator.Remediator`). It returns the result of the action
    it attempted, if any; the workers ignore it (the audit log has it)."""

    def handle(self, analysis: Analysis, notification: Notification) -> ActionResult | None: ...


class Service(Protocol):
    """What the workers need of `AnalysisService`."""

    def analyze(
        self,
        notification: Notification,
        *,
        source: str,
        context: Mapping[str, Any] | None = None,
        notification_id: str | None = None,
    ) -> Analysis: ...


@dataclass(frozen=True, slots=True)
class Job:
    notification_id: str
    notification: Notification
    #: Admitted through the bounded queue (recovered and retried jobs are not).
    holds_slot: bool
    #: The decoded JSON the notification was validated from, when at hand.
    payload: Mapping[str, Any] | None = field(default=None, compare=False)
    #: Times an analysis process died with this job in hand (in this run).
    crashes: int = 0
    #: Which attempt at analysing the notification this is, across restarts: every
    #: attempt after the first is announced in the journal (`analysis_attempt`).
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Observation:
    """What the listener's metrics count of one journaled analysis."""

    analyzer: str
    severity: str
    llm_latency_s: float | None

    @classmethod
    def of(cls, analysis: Analysis) -> Observation:
        latency = None
        if analysis.analyzer == "llm" and analysis.usage is not None:
            latency = analysis.usage.latency_ms / 1000
        return cls(analysis.analyzer, analysis.severity.value, latency)


@dataclass(slots=True)
class Batch:
    """One worker batch: the jobs taken, their records, and what went right."""

    jobs: list[Job] = field(default_factory=list)
    entries: list[Prepared] = field(default_factory=list)
    done: list[tuple[Job, Analysis]] = field(default_factory=list)
    failures: int = 0
    #: The observations of `done`, for a batch whose analyses are elsewhere (in the
    #: analysis process).
    observed: list[Observation] | None = None

    @property
    def observations(self) -> list[Observation]:
        if self.observed is not None:
            return self.observed
        return [Observation.of(analysis) for _, analysis in self.done]


#: Journals a batch's records; True once they are on disk, False if they could not be
#: (the jobs are then retried by whoever owns them).
Commit = Callable[[Batch], bool]


class Workers:
    """`count` threads analysing the jobs of `jobs` (None is a stop sentinel, one each)."""

    def __init__(
        self,
        jobs: queue.Queue[Job | None],
        service: Service,
        commit: Commit,
        *,
        count: int,
        stopping: threading.Event,
        context_for: ContextProvider | None = None,
        remediator: Remediator | None = None,
        on_take: Callable[[Job], None] = lambda job: None,
    ) -> None:
        self.jobs = jobs
        self.service = service
        self.commit = commit
        self.stopping = stopping
        self.context_for = context_for
        self.remediator = remediator
        self.on_take = on_take
        self.threads = [
            threading.Thread(target=self._work, name=f"analysis-{n}", daemon=True)
            for n in range(count)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Send one sentinel per thread and wait for them (the queue is empty after this)."""
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            if thread.is_alive():
                thread.join(timeout)

    def problem(self) -> str | None:
        """Why analysis is not running (None: it is)."""
        if any(not thread.is_alive() for thread in self.threads) and not self.stopping.is_set():
            return "analysis_down"
        return None

    def _work(self) -> None:
        running = True
        while running:
            first = self.jobs.get()
            batch = Batch()
            try:
                running = self._run_batch(first, batch)
            except Exception:  # a bug: this batch is lost until the next start, not the thread
                log.exception("analysis batch failed (error id %s)", new_id()[:12])
                running = first is not None
            finally:
                for _ in range(len(batch.jobs) + (not running)):
                    self.jobs.task_done()

    def _run_batch(self, item: Job | None, batch: Batch) -> bool:
        """Analyse `item`, and more queued jobs while the batch is quick; one commit for all.

        False once told to stop.
        """
        started = time.monotonic()
        while item is not None:
            batch.jobs.append(item)
            self.on_take(item)
            if not self.stopping.is_set():
                self._analyse(item, batch)
            if len(batch.jobs) >= WORKER_BATCH or time.monotonic() - started > WORKER_BATCH_SECONDS:
                break
            try:
                item = self.jobs.get_nowait()
            except queue.Empty:
                break
        if batch.entries and self.commit(batch):
            self._after_commit(batch.done)
        return item is not None

    def _analyse(self, job: Job, batch: Batch) -> None:
        """Analyse one job; its record is prepared here, in parallel with journal commits."""
        try:
            analysis = self.service.analyze(
                job.notification,
                source=SOURCE,
                context=self._context(job.notification),
                notification_id=job.notification_id,
            )
            entry = prepare("analysis", analysis.to_json_dict())
        except Exception as exc:
            record = failure_record(job.notification_id, type(exc).__name__, exc=exc)
            batch.entries.append(prepare("analysis_failed", record))
            batch.failures += 1
            return
        batch.entries.append(entry)
        batch.done.append((job, analysis))

    def _context(self, notification: Notification) -> Mapping[str, Any]:
        if self.context_for is None:
            return {}
        try:
            return self.context_for(notification)
        except Exception as exc:  # context is a help, never a reason not to analyse
            log.warning("context gathering failed: %s", type(exc).__name__)
            return {}

    def _after_commit(self, done: Sequence[tuple[Job, Analysis]]) -> None:
        for job, analysis in done:
            log_analysis(analysis)
            if self.remediator is not None:
                try:
                    self.remediator.handle(analysis, job.notification)
                except Exception:
                    log.exception("remediation of %s failed", job.notification_id)


def failure_record(
    notification_id: str, error: str, *, exc: BaseException | None = None, why: str = ""
) -> dict[str, Any]:
    """The `analysis_failed` record: journaled so a restart does not retry forever."""
    error_id = new_id()[:12]
    log.error(
        "analysis of %s failed (error id %s)%s",
        notification_id,
        error_id,
        f": {why}" if why else "",
        exc_info=exc,
    )
    return {"notification_id": notification_id, "error": error, "error_id": error_id}


def log_analysis(analysis: Analysis) -> None:
    log.info(
        "analysed %s: %s %s, proposed action %s (%s%s)",
        analysis.notification_id,
        analysis.severity.value,
        analysis.issue_type.value,
        analysis.proposed_action,
        analysis.analyzer,
        f", fallback: {analysis.fallback_reason}" if analysis.fallback_reason else "",
    )
