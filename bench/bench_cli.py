"""Start-up and `analyze` whole-process timings.

    python bench/bench_cli.py [--runs 20]

Targets (issue 2): `market-agent --help` median <= 0.25 s; `analyze --no-llm
--no-audit` on one 100-alert notification median <= 0.4 s. Baseline in the same
run: `python -c pass` (the interpreter's own start-up).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import ROOT, bytecode, console_script, peak_rss_mb, record, report, time_command


def hundred_alert_notification(path: Path) -> Path:
    base = json.loads((ROOT / "examples" / "alerts" / "predictor-down.json").read_text())
    template = base["alerts"][0]
    alerts = []
    for n in range(100):
        alert = json.loads(json.dumps(template))
        alert["labels"]["instance"] = f"10.0.{n // 250}.{n % 250}:8000"
        alert["fingerprint"] = f"{n:016x}"
        alerts.append(alert)
    base["alerts"] = alerts
    path.write_text(json.dumps(base))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    script = console_script()
    with tempfile.TemporaryDirectory() as tmp:
        payload = hundred_alert_notification(Path(tmp) / "100-alerts.json")
        env = {"HOME": tmp, "XDG_STATE_HOME": tmp}
        python = time_command([sys.executable, "-c", "pass"], args.runs)
        report("baseline: python -c pass", python, "-")
        baseline = f"python -c pass: {statistics.median(python) * 1000:.0f} ms"
        holmes = shutil.which("holmes")
        if holmes:  # HolmesGPT, the peer, when it is installed here
            peer = time_command([holmes, "--help"], max(3, args.runs // 4))
            report("peer: holmes --help", peer, "-")
            baseline += f"; holmes --help: {statistics.median(peer) * 1000:.0f} ms"
        analyze = [script, "--no-audit", "analyze", "--no-llm", "--json", str(payload)]
        for cached in (False, True):  # the figures that count come last: as installed
            how = bytecode(cached)
            print(f"-- {how}")
            helps = time_command([script, "--help"], args.runs, env=env)
            report("market-agent --help", helps, "<= 250 ms")
            runs = time_command(analyze, args.runs, env=env)
            report("analyze --no-llm --no-audit (100 alerts)", runs, "<= 400 ms")
            if cached:
                _record(f"market-agent --help, median ({how})", helps, 0.25, baseline)
                figure = f"analyze --no-llm --no-audit, 100 alerts, median ({how})"
                _record(figure, runs, 0.4, baseline)
        print(f"{'market-agent --help peak RSS':<52} {peak_rss_mb([script, '--help'], env):.1f} MB")
        print(f"{'analyze (100 alerts) peak RSS':<52} {peak_rss_mb(analyze, env):.1f} MB")


def _record(figure: str, samples: list[float], limit: float, baseline: str) -> None:
    median = statistics.median(samples)
    record(
        "cli",
        figure,
        round(median, 3),
        "s",
        f"<= {limit} s",
        met=median <= limit,
        baseline=baseline,
    )


if __name__ == "__main__":
    main()
