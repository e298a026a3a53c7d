"""`listen`'s analysis in a process of its own, so that it runs on a second core.

One Python process is bound to one core by its GIL: analysing in threads beside the
HTTP server and the journal left both at half speed. Here the listener's process
keeps HTTP, validation and the journal; a child process (spawned, not forked: the
listener has threads and open files) builds its own analysis service, context
provider and remediator from the same settings and runs the same worker threads
(`market_agent.listen.workers`). The journal stays single-writer, in the parent: the
child sends each batch's records (`market_agent.listen.messages`, typed and versioned).

A batch's analyses are remediated in the child once the parent answers that their
records are on disk, exactly as in-process workers do after their commit. If the
child dies, the jobs it held are queued again for a new child (a job that was in
hand at three deaths is recorded as `analysis_failed` instead: it may be what kills
it); their notifications are journaled, so nothing acknowledged is lost even if the
listener dies too. The child ignores SIGINT and SIGTERM (a terminal or systemd sends
them to the whole group): it stops when the listener tells it to, or when the pipe
closes because the listener is gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import orjson

from market_agent.audit import Prepared, prepare
from market_agent.errors import ConfigError
from market_agent.listen.messages import (
    PROTOCOL_VERSION,
    Answer,
    BatchRecords,
    EngineSpec,
    Failed,
    Hello,
    Jobs,
    Message,
    ProtocolError,
    Ready,
    Stop,
    check_version,
    receive,
    send,
)
from market_agent.listen.workers import Batch, Job, Observation, Workers, failure_record
from market_agent.models import new_id

if TYPE_CHECKING:
    from market_agent.state import AppState

log = logging.getLogger("market_agent.listen")

#: Jobs handed to the child and not yet back in a batch: enough to keep its workers
#: busy, few enough that a death re-queues little.
IN_FLIGHT = 256
#: Jobs per message to the child.
SEND_BATCH = 64
#: A job is attempted at most this many times (across restarts too: `Job.attempt`); a
#: job in hand when the child dies on its last attempt is recorded as failed.
MAX_CRASHES = 3
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: What a terminal (Ctrl-C) or systemd (stop) sends to every process of the group.
GROUP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
STOP_TIMEOUT = 5.0
#: Longest wait for a new analysis process to say it is ready (or why it cannot be).
READY_TIMEOUT = 60.0
#: How the analysis process starts: `python -c CHILD_COMMAND FD`.
CHILD_COMMAND = (
    "import sys; from market_agent.listen.child import child_main; child_main(int(sys.argv[1]))"
)


class ProcessAnalysis:
    """The listener's side: feeds queued jobs to the child, journals its batches.

    `commit(batch, on_done)` journals a batch's records without blocking and calls
    `on_done(committed)` once they are on disk (or could not be written); `on_take`
    is called with the jobs that leave the queue, before they are handed over;
    `on_failed(job, error, why)` for a job given up on (already counted done), and
    `on_restart()` each time a dead child is replaced.
    """

    def __init__(
        self,
        spec: EngineSpec,
        jobs: queue.Queue[Job | None],
        commit: Callable[[Batch, Callable[[bool], None]], None],
        *,
        stopping: threading.Event,
        on_take: Callable[[list[Job]], None],
        on_failed: Callable[[Job, str, str], None],
        on_restart: Callable[[], None],
    ) -> None:
        self.spec = spec
        self.jobs = jobs
        self.commit = commit
        self.stopping = stopping
        self.on_take = on_take
        self.on_failed = on_failed
        self.on_restart = on_restart
        self._cond = threading.Condition()
        self._conn: Connection | None = None
        #: The current child said it is ready (jobs go to it only then).
        self._ready = False
        self._process: subprocess.Popen[bytes] | None = None
        self._generation = 0
        #: notification id -> job, for the jobs the current child holds.
        self._in_flight: dict[str, Job] = {}
        self._room = threading.Semaphore(IN_FLIGHT)
        self._outbox: queue.Queue[Jobs | Answer | Stop | None] = queue.Queue()
        self._closing = False
        #: Deaths since a child last delivered a batch (how long to wait before the next).
        self._deaths = 0
        self._threads = [
            threading.Thread(target=self._dispatch, name="analysis-dispatch", daemon=True),
            threading.Thread(target=self._write, name="analysis-write", daemon=True),
            threading.Thread(target=self._read, name="analysis-read", daemon=True),
        ]

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    @property
    def held(self) -> int:
        """Jobs the current child holds (handed over, not yet back in a batch)."""
        with self._cond:
            return len(self._in_flight)

    def problem(self) -> str | None:
        """Why analysis is not running (None: it is): a thread here died, or the child
        is dead (being replaced) or not ready yet."""
        if self._closing:
            return None
        if any(not thread.is_alive() for thread in self._threads):
            return "analysis_down"
        with self._cond:
            return None if self._ready else "analysis_down"

    def start(self) -> None:
        """Start the child and wait until it is ready; ConfigError if it cannot start."""
        self._spawn()
        self._await_ready()
        for thread in self._threads:
            thread.start()

    def _await_ready(self) -> None:
        conn = self._conn
        assert conn is not None
        if not conn.poll(READY_TIMEOUT):
            self._kill()
            raise ConfigError(
                f"the analysis process was not ready within {READY_TIMEOUT:g} s "
                "(see its log lines above; --analysis threads analyses without it)"
            )
        try:
            ready = _first_answer(conn)
        except ConfigError:
            self._kill()
            raise
        self._now_ready(ready.pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Tell the child to stop (what it holds stays journaled), wait, then end threads."""
        with self._cond:
            self._closing = True
            generation = self._generation
            self._cond.notify_all()
        self.jobs.put(None)  # the dispatcher's sentinel
        self._outbox.put(Stop(generation))
        process = self._process
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:  # it ignores SIGTERM
                log.warning("the analysis process did not stop in %g s: killing it", timeout)
                self._kill()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(1.0)

    # Child life cycle ------------------------------------------------------------

    def _spawn(self) -> None:
        """A new interpreter that imports only what analysis needs (not the CLI, not
        multiprocessing's machinery), one socket pair away."""
        ours, theirs = socket.socketpair()
        with ours, theirs:
            process = subprocess.Popen(
                [sys.executable, "-c", CHILD_COMMAND, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
            )
            parent = Connection(ours.detach())
        send(parent, Hello(PROTOCOL_VERSION, self.spec))
        with self._cond:
            self._conn, self._process, self._ready = parent, process, False
            self._generation += 1
            self._cond.notify_all()
        log.info("analysis process %d started", process.pid)

    def _now_ready(self, pid: int) -> None:
        with self._cond:
            self._ready = True
            self._cond.notify_all()
        log.info("analysis process %d ready", pid)

    def _child_died(self, conn: Connection) -> bool:
        """Re-queue what the dead child held and start another. False: stopping instead."""
        with self._cond:
            if conn is not self._conn:
                return True
            held = list(self._in_flight.values())
            self._in_flight.clear()
            self._conn, self._ready = None, False
            process = self._process
        conn.close()
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(1.0)
        if self._closing:
            return False
        log.error(
            "analysis process exited unexpectedly (exit code %s) holding %d jobs; restarting",
            process.returncode if process is not None else None,
            len(held),
        )
        self._requeue(held)
        self.on_restart()
        return self._respawn()

    def _kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def _requeue(self, held: list[Job]) -> None:
        for job in held:
            again = dataclasses.replace(
                job, holds_slot=False, crashes=job.crashes + 1, attempt=job.attempt + 1
            )
            if again.attempt > MAX_CRASHES:
                why = f"the analysis process died with it in hand at attempt {job.attempt}"
                self.on_failed(again, "AnalysisProcessDied", why)
            else:
                self.jobs.put(again)
            self.jobs.task_done()
            self._room.release()

    def _respawn(self) -> bool:
        """Start a new child after a pause that grows with consecutive deaths."""
        while True:
            delay = RESTART_DELAYS[min(self._deaths, len(RESTART_DELAYS) - 1)]
            self._deaths += 1
            if self.stopping.wait(delay) or self._closing:
                return False
            try:
                self._spawn()
                return True
            except OSError as exc:
                log.error("cannot start the analysis process: %s", exc)

    # Threads --------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Queued jobs -> the child, SEND_BATCH at a time, at most IN_FLIGHT held.

        No job can stop this thread: one that cannot be handed over is recorded as
        failed (`_hand_over`), and anything else is logged and the loop goes on.
        """
        while True:
            try:
                if not self._dispatch_once():
                    return
            except Exception:  # a bug: the jobs of that batch wait for the next start
                log.exception("analysis dispatch failed (error id %s)", new_id()[:12])

    def _dispatch_once(self) -> bool:
        """Hand over one batch; False at the stop sentinel."""
        while True:
            self._room.acquire()
            job = self.jobs.get()
            if job is None:
                self.jobs.task_done()
                self._room.release()
                return False
            batch = [job]
            while len(batch) < SEND_BATCH and self._room.acquire(blocking=False):
                try:
                    more = self.jobs.get_nowait()
                except queue.Empty:
                    self._room.release()
                    break
                if more is None:
                    self.jobs.put(None)  # keep the sentinel for the next round
                    self.jobs.task_done()
                    self._room.release()
                    break
                batch.append(more)
            self._hand_over(batch)
            return True

    def _hand_over(self, batch: list[Job]) -> None:
        self.on_take(batch)
        items = []
        for job in list(batch):
            try:
                items.append((job.notification_id, _payload_json(job)))
            except Exception as exc:  # past intake's checks: recorded, never retried
                batch.remove(job)
                self.on_failed(job, "UnserialisablePayload", f"{type(exc).__name__}: {exc}")
                self.jobs.task_done()
                self._room.release()
        if not batch:
            return
        with self._cond:
            # Only a ready child is handed jobs: one that fails to start held none.
            while not (self._ready or self._closing):
                self._cond.wait()
            if self._closing:  # left journaled: analysed at the next start
                for _ in batch:
                    self.jobs.task_done()
                    self._room.release()
                return
            for job in batch:
                self._in_flight[job.notification_id] = job
            generation = self._generation
        self._outbox.put(Jobs(generation, items))

    def _write(self) -> None:
        """The only thread that writes to the child; messages of a dead child are dropped."""
        while True:
            message = self._outbox.get()
            if message is None:
                return
            with self._cond:
                conn = self._conn if message.generation == self._generation else None
            if conn is None:
                continue
            with contextlib.suppress(OSError, ValueError):  # dead child: `_read` sees it
                send(conn, message)

    def _read(self) -> None:
        """Batches from the child -> the journal; a closed pipe is a dead (or done) child."""
        while True:
            with self._cond:
                while self._conn is None and not self._closing:
                    self._cond.wait()
                conn, generation = self._conn, self._generation
            if conn is None:
                return
            try:
                message = receive(conn)
            except (EOFError, OSError):
                if not self._child_died(conn):
                    return
                continue
            except ProtocolError as exc:
                self._replace(exc)
                continue
            try:
                self._take(generation, message)
            except ProtocolError as exc:
                self._replace(exc)

    def _replace(self, error: ProtocolError) -> None:
        """A child that breaks the protocol is killed: its jobs go to the next one."""
        log.error("%s: replacing the analysis process", error.message)
        self._kill()

    def _take(self, generation: int, message: Message) -> None:
        """One message from the child (ProtocolError: one it should not send)."""
        match message:
            case BatchRecords():
                self._journal(generation, message)
            case Ready(version=version, pid=pid):
                check_version(PROTOCOL_VERSION, version)
                self._now_ready(pid)
            case Failed(reason=reason):
                log.error("%s", reason)
            case _:
                raise ProtocolError(f"the analysis process sent a {message.TAG!r} message")

    def _journal(self, generation: int, records: BatchRecords) -> None:
        with self._cond:
            jobs = [job for i in records.ids if (job := self._in_flight.pop(i, None)) is not None]
            self._deaths = 0
        batch = Batch(
            jobs=jobs,
            entries=[Prepared(kind, {}, parts) for kind, parts in records.records],
            failures=records.failures,
            observed=[Observation(*o) for o in records.observations],
        )
        batch_id = records.batch_id

        def done(committed: bool) -> None:
            self._outbox.put(Answer(generation, batch_id, committed))
            for _ in jobs:
                self.jobs.task_done()
                self._room.release()

        self.commit(batch, done)


def _first_answer(conn: Connection) -> Ready:
    """The child's answer to `Hello`; ConfigError (and so exit 2) unless it is ready
    and speaks our protocol."""
    try:
        message = receive(conn)
    except (EOFError, OSError):
        raise ConfigError("the analysis process exited as it started (see its log)") from None
    match message:
        case Ready(version=version):
            check_version(PROTOCOL_VERSION, version)
            return message
        case Failed(reason=reason):
            raise ConfigError(reason)
        case _:
            raise ProtocolError(f"the analysis process answered with a {message.TAG!r} message")


def _payload_json(job: Job) -> bytes:
    """The payload for the child; the standard library writes what orjson will not
    (integers beyond 64 bits; more than 255 levels; lone surrogates, as escapes the
    child then refuses to read: intake refuses these two)."""
    payload: Any = job.payload
    if payload is None:
        payload = job.notification.model_dump(mode="json", by_alias=True)
    try:
        return orjson.dumps(payload)
    except TypeError:
        return json.dumps(payload).encode()


# The child -------------------------------------------------------------------------


def _warm_history(workers: Workers) -> None:
    warm = [getattr(workers.service, "warm_history", None)]
    warm.append(getattr(workers.remediator, "warm", None))
    try:
        for read_ahead in warm:
            if read_ahead is not None:
                read_ahead()
    except Exception as exc:  # a help only: the first analysis reads it otherwise
        log.warning("could not read the audit log ahead: %s", type(exc).__name__)


def child_main(fd: int) -> None:
    """Entry point of the analysis process (`CHILD_COMMAND`): the settings come first."""
    for signum in GROUP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    conn = Connection(fd)
    spec = _hello(conn)
    from market_agent.listen.logs import configure_logging

    options = spec.settings.listen
    configure_logging(options.log_format, options.log_level)
    child = _Child(conn)
    try:
        workers, state = child.build(spec)
    except Exception as exc:  # told to the listener, which exits with it (status 2)
        send(conn, Failed(f"the analysis process cannot start: {_reason(exc)}"))
        os._exit(1)
    reader = threading.Thread(target=child.read, name="analysis-read", daemon=True)
    reader.start()
    send(conn, Ready(PROTOCOL_VERSION, os.getpid()))
    child.run(workers, state)
    os._exit(0)  # daemon threads (a remediation in progress) end with the process


def _hello(conn: Connection) -> EngineSpec:
    """The listener's first message; the child exits, saying why, if it cannot speak
    the listener's protocol."""
    try:
        hello = receive(conn)
        if not isinstance(hello, Hello):
            raise ProtocolError(f"the listener's first message is {hello.TAG!r}, not 'hello'")
        check_version(hello.version, PROTOCOL_VERSION)
    except ProtocolError as exc:
        send(conn, Failed(exc.message))
        os._exit(1)
    return hello.spec


def _reason(exc: Exception) -> str:
    from market_agent.errors import MarketAgentError

    if isinstance(exc, MarketAgentError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


class _Child:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.stopping = threading.Event()
        self.done = threading.Event()
        self._send_lock = threading.Lock()
        self._answers: dict[int, Future[bool]] = {}
        self._answers_lock = threading.Lock()
        #: The pipe is closed: no answer will ever come.
        self._closed = False
        self._batch_ids = itertools.count(1)

    def build(self, spec: EngineSpec) -> tuple[Workers, AppState]:
        from market_agent.state import AppState

        state = AppState.of(spec.settings)
        service = state.analysis_service(use_llm=spec.use_llm)
        service.warm()  # the LLM client (and LangChain) is built before "ready"
        workers = Workers(
            self.jobs,
            service,
            self.commit,
            count=spec.workers,
            stopping=self.stopping,
            context_for=state.context_provider(),
            remediator=state.remediator(),
        )
        # A large audit log takes seconds to read: read it while serving, not at the
        # first alert (which waits for it all the same if it comes sooner).
        threading.Thread(target=_warm_history, args=(workers,), daemon=True).start()
        return workers, state

    def run(self, workers: Workers, state: AppState) -> None:
        try:
            workers.start()
            self.done.wait()
            workers.stop(STOP_TIMEOUT)
        finally:
            state.close()

    def read(self) -> None:
        """Jobs and answers in. "stop": take no more jobs, but keep reading answers for
        the batches in progress; the end of the pipe: the listener is gone."""
        while True:
            try:
                message = receive(self.conn)
            except (EOFError, OSError):
                break
            except ProtocolError as exc:  # as if the listener were gone: it replaces us
                log.error("%s: the analysis process stops", exc.message)
                break
            match message:
                case Jobs(items=items):
                    self._queue(items)
                case Answer(batch_id=batch_id, committed=committed):
                    self._answer(batch_id, committed)
                case Stop():
                    self.stopping.set()
                    self.done.set()
                case _:
                    log.error("unexpected %r message from the listener: stopping", message.TAG)
                    break
        self.stopping.set()
        with self._answers_lock:
            self._closed = True
            pending, self._answers = list(self._answers.values()), {}
        for future in pending:  # nothing more can be journaled
            future.set_result(False)
        self.done.set()

    def _answer(self, batch_id: int, committed: bool) -> None:
        with self._answers_lock:
            future = self._answers.pop(batch_id, None)
        if future is not None:
            future.set_result(committed)

    def _queue(self, items: Sequence[tuple[str, bytes]]) -> None:
        from market_agent.models import Notification

        for notification_id, payload in items:
            try:
                notification = Notification.model_validate_json(payload)
            except ValueError as exc:  # validated by the listener: a bug if it happens
                why = f"the analysis process cannot read it: {type(exc).__name__}"
                threading.Thread(target=self._refuse, args=(notification_id, why)).start()
                continue
            self.jobs.put(Job(notification_id, notification, holds_slot=False))

    def _refuse(self, notification_id: str, why: str) -> None:
        record = failure_record(notification_id, "UnreadablePayload", why=why)
        self._send_batch([notification_id], [prepare("analysis_failed", record)], [], 1)

    def commit(self, batch: Batch) -> bool:
        """Send the batch's records to the listener; True once it says they are on disk."""
        ids = [job.notification_id for job in batch.jobs]
        return self._send_batch(ids, batch.entries, batch.observations, batch.failures)

    def _send_batch(
        self,
        ids: list[str],
        entries: list[Prepared],
        observations: list[Observation],
        failures: int,
    ) -> bool:
        future: Future[bool] = Future()
        batch_id = next(self._batch_ids)
        with self._answers_lock:
            if self._closed:
                return False
            self._answers[batch_id] = future
        message = BatchRecords(
            batch_id,
            ids,
            [(entry.kind, entry.parts) for entry in entries],
            [(o.analyzer, o.severity, o.llm_latency_s) for o in observations],
            failures,
        )
        try:
            with self._send_lock:
                send(self.conn, message)
        except (OSError, ValueError):
            with self._answers_lock:
                self._answers.pop(batch_id, None)
            return False
        return future.result()
