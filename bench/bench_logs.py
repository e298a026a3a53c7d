"""The cost of reading logs for an analysis (`[logs]`, file backend).

    python bench/bench_logs.py [--mb 50] [--runs 15]

Writes a log of `--mb` MB in the demo predictor's format (hours of INFO lines, then
MemoryError tracebacks in a loop for the last two minutes), then measures:

1. reading the alert's window (10 min before its start to now) and summarising it,
   in-process: median ms (target, issue 14: <= 100 ms for a 100 MB file);
2. `market-agent analyze --no-llm --context --json` as a whole process, with and
   without `[logs]`, against an unreachable predictor and Prometheus (both refuse
   at once): wall time, and the context's own `elapsed_ms` (the logs are read
   while the other sources answer, so only the difference in gathering counts);
3. bytes the log summary adds to the analysis' JSON (and so to the prompt).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import ROOT, console_script, report

sys.path.insert(0, str(ROOT))

from market_agent.logs.base import LogQuery
from market_agent.logs.file import FileLogSource
from market_agent.logs.summary import summarize

TRACEBACK = (
    "{t} ERROR predictor: prediction failed for symbol='AAPL'\n"
    "Traceback (most recent call last):\n"
    '  File "/srv/predictor/app.py", line 336, in _predict\n'
    "    build_feature_matrix(symbol)\n"
    "MemoryError: unable to allocate 2.3 GiB for the feature matrix of 'AAPL'\n"
)


def write_log(path: Path, megabytes: int, now: datetime) -> None:
    target = megabytes * 1024 * 1024
    info = "{t} INFO predictor: prediction ok for symbol='MSFT' in 0.031s\n"
    lines_needed = target // len(info.format(t="2026-12-03T13:00:00.000Z"))
    start = now - timedelta(hours=6)
    step = timedelta(hours=6) / lines_needed
    with path.open("w") as handle:
        moment = start
        while moment < now - timedelta(minutes=2):
            handle.write(info.format(t=_stamp(moment)))
            moment += step
        while moment < now:
            handle.write(TRACEBACK.format(t=_stamp(moment)))
            moment += timedelta(milliseconds=50)


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_and_summarise(path: Path, since: datetime) -> dict[str, object]:
    lines = FileLogSource(path, max_bytes=4 * 1024 * 1024).read(LogQuery(since=since), timeout=5)
    return summarize(lines, source="file", start=since, end=datetime.now(UTC), limit=5000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        now = datetime.now(UTC)
        log = tmp_path / "predictor.log"
        write_log(log, args.mb, now)
        started_at = now - timedelta(minutes=1)
        since = started_at - timedelta(minutes=10)
        samples = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            summary = read_and_summarise(log, since)
            samples.append(time.perf_counter() - t0)
        size = log.stat().st_size / 2**20
        report(f"read + summarise ({size:.0f} MB file)", samples, "<= 0.1 s")
        print(f"summary: {len(json.dumps(summary))} bytes of JSON, {summary['lines']} lines read")
        _whole_process(tmp_path, log, started_at, args.runs)


def _whole_process(tmp_path: Path, log: Path, started_at: datetime, runs: int) -> None:
    alert = json.loads((ROOT / "examples" / "alerts" / "high-error-rate.json").read_text())
    for item in alert["alerts"]:
        item["startsAt"] = started_at.isoformat()
    alert_file = tmp_path / "alert.json"
    alert_file.write_text(json.dumps(alert))
    base = '[predictor]\nurl = "http://127.0.0.1:9"\n[prometheus]\nurl = "http://127.0.0.1:9"\n'
    plain, with_logs = tmp_path / "plain.toml", tmp_path / "logs.toml"
    plain.write_text(base)
    with_logs.write_text(base + f'[logs]\nbackend = "file"\npath = "{log}"\n')
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
