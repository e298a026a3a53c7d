"""The hash-chained audit log: appends, durability details, tamper detection."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from market_agent.audit import GENESIS_HASH, AuditLog
from market_agent.errors import AuditError


def log_with(path: Path, count: int) -> AuditLog:
    log = AuditLog(path)
    for i in range(count):
        log.append("analysis", {"id": f"a{i}", "severity": "info", "n": i})
    return log


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_records_chain_and_are_json(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = log_with(path, 3)
    records = list(log.records())
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert records[0]["prev_hash"] == GENESIS_HASH
    assert records[1]["prev_hash"] == records[0]["hash"]
    assert all(r["kind"] == "analysis" and r["ts"].endswith("Z") for r in records)
    assert [json.loads(line)["id"] for line in lines(path)] == ["a0", "a1", "a2"]
    assert log.verify().ok and log.verify().records == 3


def test_file_mode_is_0600_even_if_it_existed_wider(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audit.jsonl"
    log_with(path, 1)
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    log_with(path, 1)
    assert path.stat().st_mode & 0o777 == 0o600


def test_secrets_are_redacted_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append(
        "notification",
        {"payload": {"labels": {"api_key": "k-123"}, "annotations": {"d": "password=hunter2"}}},
    )
    text = path.read_text()
    assert "k-123" not in text and "hunter2" not in text
    assert AuditLog(path).verify().ok


def test_reserved_fields_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        AuditLog(tmp_path / "a.jsonl").append("x", {"hash": "forged"})


def test_torn_tail_is_tolerated_by_readers_and_cut_by_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = log_with(path, 2)
    with path.open("ab") as handle:
        handle.write(b'{"hash":"abc","prev_ha')  # a crash mid-write: never acknowledged
    assert len(list(log.records())) == 2
    report = log.verify()
    assert (report.ok, report.line) == (False, 3)
    assert "truncated" in (report.problem or "")
    log.append("analysis", {"id": "after"})
    assert log.verify().ok and log.verify().records == 3


@pytest.mark.parametrize("tamper", ["edit", "delete", "insert", "reorder", "truncate", "garbage"])
def test_verify_names_the_first_bad_line(tmp_path: Path, tamper: str) -> None:
    path = tmp_path / "audit.jsonl"
    log = log_with(path, 5)
    content = lines(path)
    if tamper == "edit":
        content[2] = content[2].replace(b'"severity":"info"', b'"severity":"critical"')
    elif tamper == "delete":
        del content[2]
    elif tamper == "insert":
        content.insert(2, content[1])
    elif tamper == "reorder":
        content[2], content[3] = content[3], content[2]
    elif tamper == "truncate":
        content[4] = content[4][:40]
    elif tamper == "garbage":
        content[2] = b"hello\n"
    path.write_bytes(b"".join(content))
    report = log.verify()
    assert not report.ok
    assert report.line == (5 if tamper == "truncate" else 3)


def test_unwritable_path_is_an_audit_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AuditError, match="cannot open"):
        AuditLog(blocker / "audit.jsonl").append("x", {})


def test_damaged_last_record_is_reported_not_chained_onto(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log_with(path, 1)
    with path.open("ab") as handle:
        handle.write(b"not a record\n")
    with pytest.raises(AuditError, match="damaged"):
        AuditLog(path).append("x", {})


def test_append_many_is_one_write(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    records = AuditLog(path).append_many([("a", {"n": 1}), ("b", {"n": 2})])
    assert [r["seq"] for r in records] == [1, 2]
    assert records[1]["prev_hash"] == records[0]["hash"]
    assert AuditLog(path).verify().ok


def _writer(path: str, worker: int) -> None:
    log = AuditLog(Path(path), fsync=False)
    for i in range(50):
        log.append("analysis", {"id": f"{worker}-{i}"})


def test_concurrent_processes_keep_one_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_writer, args=(str(path), n)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    report = AuditLog(path).verify()
    assert report.ok and report.records == 200
    ids = {r["id"] for r in AuditLog(path).records()}
    assert len(ids) == 200
