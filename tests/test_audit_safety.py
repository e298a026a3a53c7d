"""The audit log never harms a file it does not own; one listener per log file."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from market_agent.audit import AuditLog, lock_for_listener
from market_agent.errors import AuditError, ConfigError
from tests.cli_helpers import run_cli
from tests.conftest import EXAMPLES
from tests.helpers import free_port
from tests.test_listen_process import Agent


def test_a_foreign_file_is_refused_untouched_exit_3(tmp_path: Path) -> None:
    victim = tmp_path / "v.txt"
    victim.write_bytes(b"keep me 1\nkeep me 2")  # no final newline: the old code cut it
    victim.chmod(0o644)
    before = (victim.read_bytes(), victim.stat().st_mode, victim.stat().st_mtime_ns)
    result = run_cli(
        "--audit-log", str(victim), "analyze", "--no-llm", str(EXAMPLES / "predictor-down.json")
    )
    assert result.exit_code == 3
    assert "not an audit log" in result.stderr
    assert (victim.read_bytes(), victim.stat().st_mode, victim.stat().st_mtime_ns) == before


@pytest.mark.parametrize(
    "content", [b"x", b"{}\n", b'{"hash":"' + b"g" * 64 + b'"}\n', b"keep me\n" * 3]
)
def test_appends_refuse_any_non_audit_first_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "other.jsonl"
    path.write_bytes(content)
    with pytest.raises(AuditError, match="not an audit log"):
        AuditLog(path).append("analysis", {"id": "a"})
    assert path.read_bytes() == content


def test_a_torn_first_record_is_still_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"hash":"ab')  # a crash during the very first append
    AuditLog(path).append("analysis", {"id": "a"})
    assert AuditLog(path).verify().ok and AuditLog(path).verify().records == 1


def test_a_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    AuditLog(real).append("analysis", {"id": "a"})
    before = real.read_bytes()
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    result = run_cli(
        "--audit-log", str(link), "analyze", "--no-llm", str(EXAMPLES / "predictor-down.json")
    )
    assert result.exit_code == 3
    assert "is a symbolic link" in result.stderr
    assert real.read_bytes() == before


def test_a_world_writable_directory_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="market_agent.audit"):
        AuditLog(shared / "audit.jsonl").append("analysis", {"id": "a"})
        AuditLog(tmp_path / "private.jsonl").append("analysis", {"id": "b"})
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "writable by everyone" in warnings[0]


def test_listener_lock_refuses_a_hard_linked_log(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    AuditLog(path).append("analysis", {"id": "a"})
    fd = lock_for_listener(path)
    os.close(fd)
    os.link(path, tmp_path / "hard.jsonl")
    with pytest.raises(ConfigError, match="hard links"):
        lock_for_listener(tmp_path / "hard.jsonl")


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    created = Agent(tmp_path)
    created.audit = tmp_path / "two.jsonl"
    yield created
    created.stop()


def second_listener(agent: Agent, audit: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "market_agent", "--audit-log", str(audit), "listen", "--no-llm",
        "--port", str(free_port()), "--token-file", str(agent.token_file),
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["symlink", "hardlink", "symlinked directory"])
def test_a_second_listener_on_another_name_of_the_same_file_is_refused(
    agent: Agent, tmp_path: Path, how: str
) -> None:
    agent.start("--no-llm")
    before = agent.audit.read_bytes()
    if how == "symlink":
        other = tmp_path / "link.jsonl"
        other.symlink_to(agent.audit)
        expected = (3, "is a symbolic link")
    elif how == "hardlink":
        other = tmp_path / "hard.jsonl"
        os.link(agent.audit, other)
        expected = (2, "hard links")
    else:
        (tmp_path / "alias").symlink_to(tmp_path)
        other = tmp_path / "alias" / "two.jsonl"
        expected = (2, "another `market-agent listen`")
    result = second_listener(agent, other)
    assert (result.returncode, expected[1] in result.stderr) == (expected[0], True), result.stderr
    assert agent.audit.read_bytes() == before
