"""Rotation by size: one chain through the files, safe with concurrent writers."""

from __future__ import annotations

import itertools
import json
import multiprocessing
from pathlib import Path

import pytest

from market_agent.audit import AuditLog
from market_agent.audit.query import log_files, verify_files
from tests.cli_helpers import run_cli


def fill(log: AuditLog, count: int, prefix: str = "a") -> None:
    for i in range(count):
        log.append("analysis", {"id": f"{prefix}{i}", "pad": "x" * 100})


def records(path: Path) -> list[dict]:
    found = []
    for file in reversed(log_files(path)):
        found += [json.loads(line) for line in file.read_bytes().splitlines()]
    return found


def test_rotation_keeps_one_chain_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fill(AuditLog(path, max_bytes=2000), 40)
    files = log_files(path)
    assert len(files) > 3 and all(f.stat().st_size <= 2000 for f in files)
    chain = records(path)
    assert [r["seq"] for r in chain] == list(range(1, len(chain) + 1))
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(chain))
    assert [r["id"] for r in chain if r["kind"] == "analysis"] == [f"a{i}" for i in range(40)]
    assert all(json.loads(f.read_bytes().split(b"\n")[0])["kind"] == "rotation" for f in files[:-1])
    verdicts = verify_files(files)
    assert all(v.ok for v in verdicts) and sum(v.records for v in verdicts) == len(chain)


def test_keep_removes_the_oldest_and_the_rest_still_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=2000, keep=2)
    fill(log, 40)
    assert [f.name for f in log_files(path)] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert run_cli("--audit-log", str(path), "history", "verify").exit_code == 0
    assert log.head()[0] == records(path)[-1]["seq"]  # seq counts every record ever


def damage(path: Path, how: str) -> tuple[str, int]:
    """Damage a rotated set; returns the file and line `verify` must name."""
    files = log_files(path)
    if how == "edit in a rotated file":
        lines = files[1].read_bytes().splitlines(keepends=True)
        lines[2] = lines[2].replace(b'"pad":"x', b'"pad":"y')
        files[1].write_bytes(b"".join(lines))
        return files[1].name, 3
    if how == "middle file removed":
        files[1].unlink()
        files[2].rename(files[1])
        for index, file in enumerate(files[3:], start=2):
            file.rename(files[index])
        return files[0].name, 1
    # the oldest file's rotation record removed: records before it are missing
    lines = files[-1].read_bytes().splitlines(keepends=True)
    files[-1].write_bytes(b"".join(lines[1:]))
    return files[-1].name, 1


@pytest.mark.parametrize(
    "how", ["edit in a rotated file", "middle file removed", "head of the oldest file removed"]
)
def test_verify_names_the_file_and_line_that_breaks(tmp_path: Path, how: str) -> None:
    path = tmp_path / "audit.jsonl"
    fill(AuditLog(path, max_bytes=2000, keep=4), 40)
    name, line = damage(path, how)
    result = run_cli("--audit-log", str(path), "history", "verify", "--json")
    assert result.exit_code == 8
    report = result.json_lines()[0]
    assert (Path(report["file"]).name, report["line"]) == (name, line), report


def test_a_writer_holding_the_old_file_follows_the_rename(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    stale, rotator = AuditLog(path), AuditLog(path, max_bytes=1500)
    fill(stale, 3, "s")  # `stale` now caches the tail of the first file
    fill(rotator, 10, "r")
    fill(stale, 3, "t")
    chain = records(path)
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(chain))
    assert [r["id"] for r in chain if r["kind"] == "analysis"][-3:] == ["t0", "t1", "t2"]


def _writer(path: str, worker: int, count: int) -> None:
    log = AuditLog(Path(path), fsync=False, max_bytes=4000)
    for i in range(count):
        log.append_many(
            [("analysis", {"id": f"{worker}-{i}-{j}", "pad": "x" * 50}) for j in range(2)]
        )


def test_concurrent_writers_across_rotations_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")  # like two separate `market-agent` processes
    workers = [ctx.Process(target=_writer, args=(str(path), n, 150)) for n in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    chain = records(path)
    ids = [r["id"] for r in chain if r["kind"] == "analysis"]
    assert len(ids) == len(set(ids)) == 2 * 150 * 2
    assert sum(r["kind"] == "rotation" for r in chain) == len(log_files(path)) - 1 > 5
    assert all(v.ok for v in verify_files(log_files(path)))
    assert not list(tmp_path.glob("audit.jsonl.new-*"))
