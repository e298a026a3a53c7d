"""`listen` with analysis in a process of its own: every notification analysed once,
whatever happens to that process; the process never outlives the listener."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from market_agent.audit import AuditLog
from market_agent.errors import ConfigError
from market_agent.listen import messages
from market_agent.listen.admission import Listener
from market_agent.listen.child import MAX_CRASHES
from market_agent.listen.messages import EngineSpec
from market_agent.settings import load_settings
from tests.cli_helpers import run_cli
from tests.helpers import ManagedProcess, free_port, wait_until
from tests.test_listen_pipeline import FakeService, admit, make_notification

TOKEN = "analysis-process-token-31"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "alerts" / "predictor-down.json"


def spec_for(audit: Path, **overrides: Any) -> EngineSpec:
    settings = load_settings(None, {"audit.path": audit, **overrides})
    return EngineSpec(settings, use_llm=any(key.startswith("llm.") for key in overrides))


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def analyses_per_notification(path: Path) -> Counter[str]:
    return Counter(r["notification_id"] for r in read(path) if r["kind"] == "analysis")


@pytest.fixture
def started() -> Iterator[list[Listener]]:
    listeners: list[Listener] = []
    yield listeners
    for listener in listeners:
        listener.stop(5)


def start(started: list[Listener], path: Path, spec: EngineSpec) -> Listener:
    listener = Listener(AuditLog(path), None, engine=spec)
    listener.start()
    started.append(listener)
    return listener


@pytest.mark.slow
def test_every_notification_is_analysed_once_in_the_analysis_process(tmp_path, started):
    path = tmp_path / "audit.jsonl"
    listener = start(started, path, spec_for(path))
    admissions = admit(listener, *(make_notification(f"fp{n}") for n in range(60)))
    assert listener.analysis_pid not in (None, os.getpid())
    assert listener.stop(30) == 0
    ids = {a.notification_id for a in admissions}
    assert analyses_per_notification(path) == Counter(dict.fromkeys(ids, 1))
    analyses = [r for r in read(path) if r["kind"] == "analysis"]
    assert {r["analyzer"] for r in analyses} == {"rules"}
    assert {r["proposed_action"] for r in analyses} == {"restart"}  # PredictorDown, managed
    metrics = listener.metrics.exposition().decode()
    assert 'market_agent_analyses_total{analyzer="rules",severity="critical"} 60.0' in metrics
    assert AuditLog(path).verify().ok


@pytest.mark.slow
def test_a_killed_analysis_process_is_replaced_and_nothing_is_lost_or_doubled(
    tmp_path, started, silent_llm
):
    path = tmp_path / "audit.jsonl"
    slow = {"llm.base_url": silent_llm, "llm.timeout": 1.0, "llm.max_retries": 0}
    listener = start(started, path, spec_for(path, **slow, **{"listen.workers": 2}))
    first = listener.analysis_pid
    admissions = admit(listener, *(make_notification(f"fp{n}") for n in range(6)))
    wait_until(lambda: listener._analysis.held, 20, message="jobs in hand")
    time.sleep(0.3)  # each waits a second on the silent LLM
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: listener.analysis_pid not in (None, first), 10, message="no new child")
    assert listener.stop(60) == 0
    ids = {a.notification_id for a in admissions}
    assert analyses_per_notification(path) == Counter(dict.fromkeys(ids, 1))
    assert listener.metrics.analysis_restarts._value.get() == 1
    assert AuditLog(path).verify().ok


@pytest.mark.slow
def test_a_job_the_analysis_process_keeps_dying_on_is_recorded_as_failed(
    tmp_path, started, silent_llm
):
    path = tmp_path / "audit.jsonl"
    slow = {"llm.base_url": silent_llm, "llm.timeout": 60.0, "llm.max_retries": 0}
    listener = start(started, path, spec_for(path, **slow))
    [admission] = admit(listener, make_notification("poison"))
    for _ in range(MAX_CRASHES):
        pid = listener.analysis_pid
        wait_until(lambda: listener._analysis.held == 1, 20, message="job not in hand")
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda p=pid: listener.analysis_pid not in (None, p), 30, message="no child")
    wait_until(lambda: listener.depth == 0, 10, message="the job was retried again")
    [failed] = [r for r in read(path) if r["kind"] == "analysis_failed"]
    assert failed["notification_id"] == admission.notification_id
    assert failed["error"] == "AnalysisProcessDied"
    assert analyses_per_notification(path) == Counter()
    assert listener.metrics.analysis_failures._value.get() == 1


class Agent:
    """`market-agent listen` as a real process."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.audit = tmp_path / "audit.jsonl"
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        self.url = f"http://127.0.0.1:{free_port()}"
        argv = [
            sys.executable, "-m", "market_agent", "--audit-log", str(self.audit), "listen",
            "--port", self.url.rsplit(":", 1)[1], "--token-file", str(token_file), *args,
        ]  # fmt: skip
        self.process = ManagedProcess(argv, log_path=tmp_path / "listen.log")

    def __enter__(self) -> Agent:
        self.process.start()
        self.process.wait_for_http(f"{self.url}/readyz", timeout=20)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.stop()

    def post(self, fingerprint: str) -> httpx.Response:
        body = json.loads(EXAMPLE.read_text())
        body["alerts"][0]["fingerprint"] = fingerprint
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.post(f"{self.url}/webhook/alerts", json=body, headers=headers, timeout=5)

    def child_pid(self) -> int:
        """The analysis process, once it is ready (it ignores the group's signals)."""
        found = wait_until(
            lambda: re.search(r"analysis process (\d+) ready", self.process.log_tail(200)),
            20,
            message="the analysis process is ready",
        )
        return int(found.group(1))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["process", "threads"])
def test_listen_analyses_in_either_mode(tmp_path, mode):
    with Agent(tmp_path, "--analysis", mode) as agent:
        ids = [agent.post(f"fp-{n}").json()["id"] for n in range(3)]
        wait_until(lambda: len(analyses_per_notification(agent.audit)) == 3, 15)
        has_child = "analysis process" in agent.process.log_tail(200)
    assert analyses_per_notification(agent.audit) == Counter(dict.fromkeys(ids, 1))
    assert has_child is (mode == "process")
    assert agent.process.returncode == 0


@pytest.mark.slow
def test_the_analysis_process_does_not_outlive_a_killed_listener(tmp_path):
    with Agent(tmp_path) as agent:
        assert agent.post("fp-1").status_code == 200
        child = agent.child_pid()
        assert alive(child)
        agent.process.kill()
        wait_until(lambda: not alive(child), 10, message="the analysis process lingers")


@pytest.mark.slow
def test_the_analysis_process_ignores_signals_meant_for_the_listener(tmp_path):
    """A terminal's Ctrl-C and systemd's SIGTERM reach the whole group: the child keeps
    analysing while the listener drains, and stops when the listener says so."""
    with Agent(tmp_path) as agent:
        child = agent.child_pid()
        os.kill(child, signal.SIGTERM)
        os.kill(child, signal.SIGINT)
        time.sleep(0.3)
        assert alive(child)
        response = agent.post("fp-after-signals")
        wait_until(lambda: len(analyses_per_notification(agent.audit)) == 1, 15)
        assert agent.process.log_tail(200).count("started") == 1  # never restarted
    assert analyses_per_notification(agent.audit) == Counter({response.json()["id"]: 1})
    wait_until(lambda: not alive(child), 10, message="the analysis process lingers")


def test_an_unknown_analysis_mode_is_a_configuration_error(tmp_path):
    result = run_cli("--audit-log", str(tmp_path / "a.jsonl"), "listen", "--analysis", "fork")
    assert result.exit_code == 2
    assert "--analysis: 'fork' is not one of 'process', 'threads'" in result.stderr


@pytest.mark.slow
def test_what_only_the_analysis_process_can_check_still_stops_listen_with_exit_2(tmp_path):
    """A bad rule table is found when the analysis process builds its analyzer: the
    listener says so and exits 2, as for any configuration error."""
    config = tmp_path / "market-agent.toml"
    config.write_text('[[analysis.rules]]\nid = "x"\nissue_type = "bogus"\nkeywords = ["y"]\n')
    started = time.monotonic()
    result = run_cli(
        "--config", str(config), "--audit-log", str(tmp_path / "a.jsonl"),
        "listen", "--port", str(free_port()),
    )  # fmt: skip
    assert result.exit_code == 2, result.stderr
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: the analysis process cannot start: ")
    assert "bogus" in line
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_an_analysis_process_that_fails_to_start_is_retried_without_blaming_the_jobs(
    tmp_path, started, silent_llm, monkeypatch
):
    """Jobs go only to a ready child: starts that fail (here, twice) hold none, so they
    neither count towards a job's deaths nor lose it."""
    from market_agent.listen import child as analysis_process

    path = tmp_path / "audit.jsonl"
    slow = {"llm.base_url": silent_llm, "llm.timeout": 1.0, "llm.max_retries": 0}
    listener = start(started, path, spec_for(path, **slow))
    first = listener.analysis_pid
    [admission] = admit(listener, make_notification("held"))
    wait_until(lambda: listener._analysis.held == 1, 20, message="job not in hand")
    time.sleep(0.3)  # in hand, waiting on the silent LLM
    real_command = analysis_process.CHILD_COMMAND
    monkeypatch.setattr(analysis_process, "CHILD_COMMAND", "import sys; sys.exit(3)")
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: listener.metrics.analysis_restarts._value.get() >= 3, 20)
    monkeypatch.setattr(analysis_process, "CHILD_COMMAND", real_command)
    assert listener.stop(60) == 0
    assert analyses_per_notification(path) == Counter({admission.notification_id: 1})
    assert [r for r in read(path) if r["kind"] == "analysis_failed"] == []


@pytest.mark.slow
def test_a_payload_the_analysis_process_cannot_read_is_recorded_as_failed(tmp_path, started):
    """Never expected (the listener validated it), but never a stuck job either."""
    from market_agent.listen.workers import Job

    path = tmp_path / "audit.jsonl"
    listener = start(started, path, spec_for(path))
    job = Job("unreadable", make_notification(), holds_slot=False, payload={"alerts": "no"})
    listener._queue.put(job)
    assert listener.stop(30) == 0
    [failed] = [r for r in read(path) if r["kind"] == "analysis_failed"]
    assert (failed["notification_id"], failed["error"]) == ("unreadable", "UnreadablePayload")
    assert listener.metrics.analysis_failures._value.get() == 1


@pytest.mark.slow
def test_an_analysis_process_that_never_gets_ready_is_a_start_up_error(tmp_path, monkeypatch):
    from market_agent.errors import ConfigError
    from market_agent.listen import child as analysis_process

    monkeypatch.setattr(analysis_process, "CHILD_COMMAND", "import time; time.sleep(60)")
    monkeypatch.setattr(analysis_process, "READY_TIMEOUT", 0.5)
    path = tmp_path / "audit.jsonl"
    listener = Listener(AuditLog(path), None, engine=spec_for(path))
    with pytest.raises(ConfigError, match=r"not ready within 0\.5 s"):
        listener.start()
    assert listener.analysis_pid is not None
    assert not alive(listener.analysis_pid)  # killed, not left behind
    threaded = Listener(AuditLog(path), FakeService())  # the audit log's lock was let go
    threaded.start()
    threaded.stop(5)


# The messages between the listener and its analysis process -------------------------

#: An analysis process of a different build: it reads the listener's Hello, then sends
#: what MESSAGE (a Python expression) says, then waits for anything or the pipe's end.
FAKE_CHILD = """\
import os, sys
from multiprocessing.connection import Connection
from market_agent.listen.messages import Ready, encode, receive
conn = Connection(int(sys.argv[1]))
receive(conn)
for message in [MESSAGES]:
    conn.send(message)
try:
    conn.recv()
except EOFError:
    pass
"""


def fake_child(*messages_sent: str) -> str:
    return FAKE_CHILD.replace("MESSAGES", ", ".join(messages_sent))


@pytest.mark.parametrize(
    "message",
    [
        messages.Hello(messages.PROTOCOL_VERSION, EngineSpec(load_settings(None, {}))),
        messages.Ready(messages.PROTOCOL_VERSION, 1234),
        messages.Failed("the rule table is bad"),
        messages.Jobs(3, [("n1", b"{}"), ("n2", b"[]")]),
        messages.BatchRecords(
            7, ["n1"], [("analysis", ("{", "}", "x"))], [("rules", "low", None)], 0
        ),
        messages.Answer(3, 7, True),
        messages.Stop(3),
    ],
    ids=lambda message: message.TAG,
)
def test_every_message_survives_the_wire(message):
    assert messages.decode(messages.encode(message)) == message


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (("fatal", "the old protocol's start-up error"), "unknown message 'fatal'"),
        (("answer", 1, 2), "malformed 'answer' message: 2 values, 3 expected"),
        (("stop", 1, 2), "malformed 'stop' message: 2 values, 1 expected"),
        (["stop", 1], "not a message of the analysis protocol: list"),
        ((), "not a message of the analysis protocol: tuple"),
        ((b"stop", 1), "not a message of the analysis protocol: tuple"),
        (messages.Stop(1), "not a message of the analysis protocol: Stop"),
    ],
)
def test_decode_refuses_what_is_not_a_message(raw, reason):
    with pytest.raises(messages.ProtocolError, match=re.escape(reason)):
        messages.decode(raw)


def test_a_version_mismatch_names_both_versions():
    with pytest.raises(messages.ProtocolError, match="listener speaks version 1, its analysis"):
        messages.check_version(1, 2)


def assert_start_fails(tmp_path: Path, match: str) -> None:
    path = tmp_path / "audit.jsonl"
    listener = Listener(AuditLog(path), None, engine=spec_for(path))
    with pytest.raises(ConfigError, match=match):
        listener.start()  # within READY_TIMEOUT's 60 s: a hang would fail the match
    assert not alive(listener.analysis_pid)


@pytest.mark.slow
def test_an_analysis_process_of_another_protocol_version_refuses_the_listener(
    tmp_path, monkeypatch
):
    """The child checks the listener's version (here the listener is the newer one)."""
    from market_agent.listen import child as analysis_process

    theirs = messages.PROTOCOL_VERSION
    monkeypatch.setattr(analysis_process, "PROTOCOL_VERSION", theirs + 1)
    expected = f"the listener speaks version {theirs + 1}, its analysis process version {theirs}"
    assert_start_fails(tmp_path, re.escape(expected))


@pytest.mark.slow
def test_the_listener_refuses_an_analysis_process_of_another_protocol_version(
    tmp_path, monkeypatch
):
    """The listener checks the child's version, should the child not check the listener's."""
    from market_agent.listen import child as analysis_process

    ours = messages.PROTOCOL_VERSION
    child = fake_child(f"encode(Ready({ours + 1}, os.getpid()))")
    monkeypatch.setattr(analysis_process, "CHILD_COMMAND", child)
    expected = f"the listener speaks version {ours}, its analysis process version {ours + 1}"
    assert_start_fails(tmp_path, re.escape(expected))


@pytest.mark.slow
def test_an_unknown_answer_to_the_handshake_is_a_start_up_error(tmp_path, monkeypatch):
    from market_agent.listen import child as analysis_process

    child = fake_child("('fatal', 'no')")  # a start-up error of the untyped protocol
    monkeypatch.setattr(analysis_process, "CHILD_COMMAND", child)
    assert_start_fails(tmp_path, "unknown message 'fatal' in the analysis protocol")


@pytest.mark.slow
def test_an_analysis_process_that_sends_an_unknown_message_is_replaced(
    tmp_path, started, monkeypatch, caplog
):
    from market_agent.listen import child as analysis_process

    ready = f"encode(Ready({messages.PROTOCOL_VERSION}, os.getpid()))"
    monkeypatch.setattr(analysis_process, "CHILD_COMMAND", fake_child(ready, "('gossip', 1)"))
    monkeypatch.setattr(analysis_process, "RESTART_DELAYS", (0.1,))
    path = tmp_path / "audit.jsonl"
    with caplog.at_level(logging.ERROR, logger="market_agent.listen"):
        listener = start(started, path, spec_for(path))
        first = listener.analysis_pid
        wait_until(lambda: listener.metrics.analysis_restarts._value.get() >= 1, 20)
    assert not alive(first)  # killed by the listener: it would have waited forever
    assert "unknown message 'gossip' in the analysis protocol" in caplog.text


def test_the_analysis_process_stops_reading_at_a_message_it_does_not_know(caplog):
    """Its jobs then go to a new analysis process, as when it dies."""
    from multiprocessing import Pipe

    from market_agent.listen.child import _Child

    listener_end, child_end = Pipe()
    child = _Child(child_end)
    reader = threading.Thread(target=child.read, daemon=True)
    with listener_end, child_end, caplog.at_level(logging.ERROR, logger="market_agent.listen"):
        reader.start()
        listener_end.send(("jobs", 1, [], "a field from a newer listener"))
        reader.join(10)
        assert not reader.is_alive()
    assert child.stopping.is_set() and child.done.is_set()
    assert "malformed 'jobs' message: 3 values, 2 expected" in caplog.text
