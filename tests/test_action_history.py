"""The circuit breaker's history (`ActionHistory`): read back once, then only what is
appended, by this process or another; a rotated log is read again."""

from __future__ import annotations

from pathlib import Path

from market_agent.actions.guards import ActionHistory
from market_agent.audit import AuditLog

HOUR = 3600.0


def started(log: AuditLog, ident: str, action: str = "restart", key: str = "k") -> None:
    log.append(
        "action",
        {"action": action, "action_id": ident, "step": "execute", "outcome": "started",
         "alert_keys": [key]},
    )  # fmt: skip


def finished(log: AuditLog, ident: str, outcome: str = "verified") -> None:
    log.append("action", {"action": "restart", "action_id": ident, "step": "result",
                          "outcome": outcome})  # fmt: skip


def test_runs_appended_after_the_first_read_are_seen(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    started(log, "a")
    history = ActionHistory(log.path)
    assert [run.alert_keys for run in history.executions("restart", HOUR)] == [{"k"}]
    other_writer = AuditLog(log.path, fsync=False)  # e.g. `market-agent restart`
    finished(other_writer, "a")
    started(other_writer, "b", key="k2")
    started(other_writer, "c", action="rollout")
    runs = history.executions("restart", HOUR)
    assert [sorted(run.alert_keys) for run in runs] == [["k2"], ["k"]]  # newest first
    assert runs[0].finished is None and runs[1].finished is not None
    assert len(history.executions("rollout", HOUR)) == 1


def test_a_rotated_log_is_read_again(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False, max_bytes=600)
    history = ActionHistory(log.path)
    assert history.executions("restart", HOUR) == []
    for n in range(6):  # each record is ~250 bytes: several rotations
        started(log, f"r{n}", key=f"k{n}")
    assert Path(f"{log.path}.1").exists()
    keys = {key for run in history.executions("restart", HOUR) for key in run.alert_keys}
    assert keys == {f"k{n}" for n in range(6)}


def test_a_record_being_written_is_read_next_time(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    started(log, "a")
    history = ActionHistory(log.path)
    history.executions("restart", HOUR)
    complete = log.path.read_bytes()
    started(log, "b", key="k2")
    whole = log.path.read_bytes()
    log.path.write_bytes(whole[: len(complete) + 20])  # half a line
    assert len(history.executions("restart", HOUR)) == 1
    log.path.write_bytes(whole)
    assert len(history.executions("restart", HOUR)) == 2


def test_older_runs_than_the_horizon_do_not_count(tmp_path: Path) -> None:
    now = [0.0]
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    started(log, "a")
    import time

    now[0] = time.time() + 2 * HOUR
    history = ActionHistory(log.path, clock=lambda: now[0])
    assert history.executions("restart", HOUR) == []
    assert len(history.executions("restart", 3 * HOUR)) == 1  # a longer horizon reloads
