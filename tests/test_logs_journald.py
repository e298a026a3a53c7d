"""The `journald` backend against real journal files.

The files are written by Debian's `systemd-journal-remote` from journal export format
and read by the real `journalctl --file` / `--directory`; the test set-up installs
`systemd-journal-remote` (`apt-get install -y --no-install-recommends`) when missing.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from market_agent.logs.base import LogQuery
from market_agent.logs.journald import JournaldLogSource
from tests.helpers.debian import ensure_debian_file

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
BOOT_ID = "0123456789abcdef0123456789abcdef"
NOW = datetime.now(UTC).replace(microsecond=0)


def export_entry(moment: datetime, unit: str, priority: int, message: str) -> bytes:
    """One entry in journal export format; a multi-line message uses the binary form."""
    fields = [
        f"__REALTIME_TIMESTAMP={int(moment.timestamp() * 1_000_000)}".encode(),
        f"__MONOTONIC_TIMESTAMP={int(moment.timestamp() * 1000)}".encode(),
        f"_BOOT_ID={BOOT_ID}".encode(),
        f"_SYSTEMD_UNIT={unit}".encode(),
        f"PRIORITY={priority}".encode(),
    ]
    data = message.encode()
    if b"\n" in data:
        fields.append(b"MESSAGE\n" + struct.pack("<Q", len(data)) + data)
    else:
        fields.append(b"MESSAGE=" + data)
    return b"\n".join(fields) + b"\n\n"


def write_journal(path: Path, entries: list[bytes]) -> Path:
    binary = ensure_debian_file(JOURNAL_REMOTE, "systemd-journal-remote")
    subprocess.run(
        [binary, "-o", str(path), "-"],
        input=b"".join(entries),
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("journalctl") is None:
        pytest.fail("journalctl is needed (Debian package systemd)", pytrace=False)
    unit = "market-predictor.service"
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "app.py", line 9, in predict\n'
        "MemoryError: unable to allocate 2.3 GiB"
    )
    entries = [
        export_entry(NOW - timedelta(hours=2), unit, 6, "INFO predictor: too old"),
        export_entry(NOW - timedelta(minutes=5), unit, 6, "INFO predictor: starting 1.4.2"),
        export_entry(NOW - timedelta(minutes=4), unit, 6, "ERROR predictor: prediction failed"),
        export_entry(NOW - timedelta(minutes=4), unit, 3, traceback),
        export_entry(NOW - timedelta(minutes=3), "other.service", 3, "not ours"),
        export_entry(NOW - timedelta(minutes=2), unit, 4, "feed lag growing"),
        export_entry(NOW - timedelta(minutes=1), unit, 2, "critical without a level word"),
    ]
    directory = tmp_path_factory.mktemp("journal")
    return write_journal(directory / "remote.journal", entries)


def test_journal_file_window_unit_and_levels(journal: Path) -> None:
    source = JournaldLogSource(unit="market-predictor.service", file=journal, max_bytes=1 << 20)
    lines = source.read(LogQuery(since=NOW - timedelta(minutes=10)), timeout=10)
    assert [(line.level, line.message.splitlines()[0]) for line in lines] == [
        ("info", "INFO predictor: starting 1.4.2"),
        ("error", "ERROR predictor: prediction failed"),
        ("error", "Traceback (most recent call last):"),
        ("warning", "feed lag growing"),
        ("critical", "critical without a level word"),
    ]
    assert lines[2].message.endswith("MemoryError: unable to allocate 2.3 GiB")
    assert lines[0].timestamp == NOW - timedelta(minutes=5)


def test_journal_directory_and_filters(journal: Path) -> None:
    source = JournaldLogSource(
        unit="market-predictor.service", directory=journal.parent, max_bytes=1 << 20
    )
    query = LogQuery(since=NOW - timedelta(minutes=10), level="error", contains="MEMORYERROR")
    (line,) = source.read(query, timeout=10)
    assert "MemoryError" in line.message
    newest = source.read(LogQuery(since=NOW - timedelta(days=1), limit=2), timeout=10)
    assert [line.message for line in newest] == [
        "feed lag growing",
        "critical without a level word",
    ]


def test_max_bytes_keeps_the_newest_entries(journal: Path) -> None:
    source = JournaldLogSource(unit="market-predictor.service", file=journal, max_bytes=1024)
    lines = source.read(LogQuery(since=NOW - timedelta(days=1)), timeout=10)
    assert 0 < len(lines) < 6
    assert lines[-1].message == "critical without a level word"


def test_argv_has_no_shell_and_bounds(journal: Path) -> None:
    since = datetime(2026, 12, 3, 13, 0, tzinfo=UTC)
    source = JournaldLogSource(unit="market-predictor.service", file=journal, max_bytes=4096)
    argv = source.argv(LogQuery(since=since, until=since + timedelta(minutes=1), limit=50))
    assert argv == [
        "journalctl",
        "--no-pager",
        "--quiet",
        "--output=json",
        "--output-fields=MESSAGE,PRIORITY",
        f"--file={journal}",
        "--unit=market-predictor.service",
        f"--since=@{since.timestamp():.6f}",
        "--reverse",
        "--lines=50",
        f"--until=@{since.timestamp() + 60:.6f}",
    ]
