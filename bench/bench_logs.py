"""The cost of reading logs for an analysis (`[logs]`, file and journald backends).

    python bench/bench_logs.py [--mb 50] [--runs 15] [--varied] [--no-process]
    python bench/bench_logs.py --backend journald [--entries 100000] [--runs 15]

Writes a log of `--mb` MB in the demo predictor's format (hours of INFO lines, then
MemoryError tracebacks in a loop for the last two minutes), or with `--backend
journald` a real journal file of `--entries` entries (Debian's
`systemd-journal-remote` writes it from export format; `journalctl --file` reads it),
then measures:

1. reading the alert's window (10 min before its start to now) and summarising it,
   in-process: median ms (target, issue 14: <= 100 ms for a 100 MB file). Every run
   starts with the summary's memos empty, as one `analyze` process does. `--varied`
   makes every INFO line's text different (durations, request ids), so that no
   line's normalised form is remembered from an earlier one;
2. `market-agent analyze --no-llm --context --json` as a whole process, with and
   without `[logs]`, against an unreachable predictor and Prometheus (both refuse
   at once): wall time, and the context's own `elapsed_ms` (the logs are read
   while the other sources answer, so only the difference in gathering counts);
   `--no-process` skips this part;
3. bytes the log summary adds to the analysis' JSON (and so to the prompt).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import ROOT, console_script, report

sys.path.insert(0, str(ROOT))

from market_agent.logs import summary as summary_module
from market_agent.logs.base import LogQuery, LogSource
from market_agent.logs.file import FileLogSource
from market_agent.logs.journald import JournaldLogSource
from market_agent.logs.summary import normalise, summarize

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
UNIT = "market-predictor.service"
#: The fields journald adds to a service's stdout line (real entries carry them all).
STDOUT_FIELDS = (
    "_TRANSPORT=stdout\nSYSLOG_FACILITY=3\nSYSLOG_IDENTIFIER=market-predictor\n"
    "_PID=4242\n_UID=998\n_GID=998\n_COMM=python3\n_EXE=/usr/bin/python3.11\n"
    "_CMDLINE=/srv/predictor/venv/bin/python3 -m predictor --port 8000\n"
    "_CAP_EFFECTIVE=0\n_SYSTEMD_CGROUP=/system.slice/market-predictor.service\n"
    "_SYSTEMD_SLICE=system.slice\n_SYSTEMD_INVOCATION_ID=5f3c8e0b9a4d4e7f8a1b2c3d4e5f6a7b\n"
    "_STREAM_ID=9a8b7c6d5e4f43218f7e6d5c4b3a2918\n_MACHINE_ID=00112233445566778899aabbccddeeff\n"
    "_HOSTNAME=predictor-1\n"
)

TRACEBACK = (
    "{t} ERROR predictor: prediction failed for symbol='AAPL'\n"
    "Traceback (most recent call last):\n"
    '  File "/srv/predictor/app.py", line 336, in _predict\n'
    "    build_feature_matrix(symbol)\n"
    "MemoryError: unable to allocate 2.3 GiB for the feature matrix of 'AAPL'\n"
)


def info_line(rng: random.Random | None) -> str:
    """An INFO line's text; with `rng`, different each time (as real logs are)."""
    if rng is None:
        return "INFO predictor: prediction ok for symbol='MSFT' in 0.031s"
    symbol = rng.choice(("AAPL", "MSFT", "GOOG", "TSLA", "NVDA"))
    return (
        f"INFO predictor: prediction ok for symbol='{symbol}' in {rng.random() / 10:.3f}s "
        f"(request {rng.getrandbits(32):08x}, model v{rng.randint(1, 9)})"
    )


def write_log(path: Path, megabytes: int, now: datetime, *, varied: bool = False) -> None:
    rng = random.Random(14) if varied else None
    target = megabytes * 1024 * 1024
    sample = f"2026-12-03T13:00:00.000Z {info_line(rng)}\n"
    lines_needed = target // len(sample)
    start = now - timedelta(hours=6)
    step = timedelta(hours=6) / lines_needed
    with path.open("w") as handle:
        moment = start
        while moment < now - timedelta(minutes=2):
            handle.write(f"{_stamp(moment)} {info_line(rng)}\n")
            moment += step
        while moment < now:
            handle.write(TRACEBACK.format(t=_stamp(moment)))
            moment += timedelta(milliseconds=50)


def write_journal(path: Path, entries: int, now: datetime, *, varied: bool = False) -> None:
    """A real journal file: `entries` entries of the unit over six hours, the last
    two minutes MemoryError tracebacks (one multi-line entry each, priority 3)."""
    rng = random.Random(14) if varied else None
    traceback = TRACEBACK.split(" ", 1)[1]
    tracebacks = 2 * 60 * 20
    step = timedelta(hours=6) / max(entries - tracebacks, 1)
    stream = bytearray()
    for index in range(entries):
        if index < entries - tracebacks:
            moment, priority, message = now - timedelta(hours=6) + index * step, 6, None
        else:
            moment = now - timedelta(milliseconds=50 * (entries - index))
            priority, message = 3, traceback.rstrip("\n")
        stream += _export_entry(moment, priority, message or info_line(rng))
    binary = Path(JOURNAL_REMOTE)
    if not binary.exists():
        raise SystemExit(f"{JOURNAL_REMOTE} is missing: apt-get install systemd-journal-remote")
    command = [str(binary), "-o", str(path), "-"]
    subprocess.run(command, input=bytes(stream), check=True, capture_output=True, timeout=300)


def _export_entry(moment: datetime, priority: int, message: str) -> bytes:
    """One entry in journal export format (a multi-line message in the binary form)."""
    micros = int(moment.timestamp() * 1_000_000)
    head = (
        f"__REALTIME_TIMESTAMP={micros}\n__MONOTONIC_TIMESTAMP={micros // 1000}\n"
        f"_BOOT_ID=0123456789abcdef0123456789abcdef\n_SYSTEMD_UNIT={UNIT}\n"
        f"PRIORITY={priority}\n{STDOUT_FIELDS}"
    ).encode()
    data = message.encode()
    if b"\n" in data:
        return head + b"MESSAGE\n" + struct.pack("<Q", len(data)) + data + b"\n\n"
    return head + b"MESSAGE=" + data + b"\n\n"


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_and_summarise(source: LogSource, since: datetime) -> dict[str, object]:
    for memo in (normalise, getattr(summary_module, "signature", None)):
        if hasattr(memo, "cache_clear"):  # one analysis process starts with them empty
            memo.cache_clear()
    lines = source.read(LogQuery(since=since), timeout=30)
    return summarize(lines, source=source.name, start=since, end=datetime.now(UTC), limit=5000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("file", "journald"), default="file")
    parser.add_argument("--mb", type=int, default=50, help="file: the log's size")
    parser.add_argument("--entries", type=int, default=100_000, help="journald: entries")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--varied", action="store_true", help="every INFO line differs")
    parser.add_argument("--no-process", action="store_true", help="in-process figures only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        now = datetime.now(UTC)
        source, label, logs_toml = _write_source(tmp_path, args, now)
        started_at = now - timedelta(minutes=1)
        since = started_at - timedelta(minutes=10)
        samples = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            summary = read_and_summarise(source, since)
            samples.append(time.perf_counter() - t0)
        report(f"read + summarise ({label})", samples, "<= 0.1 s")
        print(f"summary: {len(json.dumps(summary))} bytes of JSON, {summary['lines']} lines read")
        print(f"user prompt: +{_prompt_bytes(summary)} bytes with the logs (summary and note)")
        if isinstance(source, JournaldLogSource):
            _journalctl_alone(source, since, args.runs)
        if not args.no_process:
            _whole_process(tmp_path, logs_toml, started_at, args.runs)


def _write_source(
    tmp_path: Path, args: argparse.Namespace, now: datetime
) -> tuple[LogSource, str, str]:
    """The log source to read, a label for it, and its `[logs]` section."""
    kind = ", varied lines" if args.varied else ""
    if args.backend == "journald":
        journal = tmp_path / "predictor.journal"
        write_journal(journal, args.entries, now, varied=args.varied)
        size = journal.stat().st_size / 2**20
        source = JournaldLogSource(unit=UNIT, file=journal, max_bytes=4 * 1024 * 1024)
        label = f"journald, {args.entries} entries, {size:.0f} MB file{kind}"
        return source, label, f'backend = "journald"\nunit = "{UNIT}"\nfile = "{journal}"\n'
    log = tmp_path / "predictor.log"
    write_log(log, args.mb, now, varied=args.varied)
    size = log.stat().st_size / 2**20
    source = FileLogSource(log, max_bytes=4 * 1024 * 1024)
    return source, f"{size:.0f} MB file{kind}", f'backend = "file"\npath = "{log}"\n'


def _prompt_bytes(summary: dict[str, object]) -> int:
    """Bytes the summary adds to the LLM's user prompt (`analysis/prompting.py`)."""
    from market_agent.analysis.prompting import build_user_prompt
    from market_agent.models import Notification

    alert = json.loads((ROOT / "examples" / "alerts" / "high-error-rate.json").read_text())
    notification = Notification.model_validate(alert)
    now = datetime.now(UTC)
    context: dict[str, object] = {"sources": {"predictor": {"ok": False}}}
    without = build_user_prompt(notification, context, now=now)
    with_logs = build_user_prompt(notification, {**context, "logs": summary}, now=now)
    return len(with_logs.encode()) - len(without.encode())


def _journalctl_alone(source: JournaldLogSource, since: datetime, runs: int) -> None:
    argv = source.argv(LogQuery(since=since))
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, timeout=30, check=True)
        samples.append(time.perf_counter() - t0)
    report("  of which journalctl alone", samples, "-")


def _whole_process(tmp_path: Path, logs_toml: str, started_at: datetime, runs: int) -> None:
    alert = json.loads((ROOT / "examples" / "alerts" / "high-error-rate.json").read_text())
    for item in alert["alerts"]:
        item["startsAt"] = started_at.isoformat()
    alert_file = tmp_path / "alert.json"
    alert_file.write_text(json.dumps(alert))
    base = '[predictor]\nurl = "http://127.0.0.1:9"\n[prometheus]\nurl = "http://127.0.0.1:9"\n'
    plain, with_logs = tmp_path / "plain.toml", tmp_path / "logs.toml"
    plain.write_text(base)
    with_logs.write_text(base + "[logs]\n" + logs_toml)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MARKET_AGENT_AUDIT__ENABLED": "false"}
    medians = {}
    for name, config in (("without [logs]", plain), ("with [logs]", with_logs)):
        argv = [console_script(), "--config", str(config), "analyze", "--no-llm", "--context"]
        walls, gathering, analysis = [], [], {}
        for _ in range(runs):
            started = time.perf_counter()
            output = subprocess.run(
                [*argv, "--json", str(alert_file)], env=env, capture_output=True, check=True
            ).stdout
            walls.append(time.perf_counter() - started)
            analysis = json.loads(output)
            gathering.append(analysis["context"]["elapsed_ms"] / 1000)
        report(f"analyze --context {name}: whole process", walls, "-")
        report(f"analyze --context {name}: context gathering", gathering, "-")
        medians[name] = statistics.median(gathering)
    added = medians["with [logs]"] - medians["without [logs]"]
    print(f"added by logs to context gathering: {added * 1000:.0f} ms (median difference)")
    logs_bytes = len(json.dumps(analysis["context"]["logs"]))
    print(
        f"analysis: issue_type {analysis['issue_type']}, proposed_action "
        f"{analysis['proposed_action']}, context.logs {logs_bytes} bytes, "
        f"evidence {len(json.dumps(analysis['evidence']))} bytes"
    )


if __name__ == "__main__":
    main()
