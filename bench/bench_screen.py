"""`analyze` of one huge notification as a person runs it: in a terminal, and as --json.

    python bench/bench_screen.py [--alerts 20000] [--runs 3] [--columns 80]

Runs `python -m market_agent --no-audit analyze --no-llm FILE` in a real
pseudo-terminal (ptyprocess, `--columns` wide) and with `--json` into a pipe; prints
the median wall time and how many lines each wrote. The code measured is whatever
`PYTHONPATH` points at (the checkout by default), so the same command measures an
older tree too. Issue 13: 20,000 alerts printed 20,020 lines in 15.7 s on a terminal.
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
from pathlib import Path

import ptyprocess
from common import ROOT, report


def notification(path: Path, count: int) -> Path:
    base = json.loads((ROOT / "examples" / "alerts" / "predictor-down.json").read_text())
    template = base["alerts"][0]
    base["alerts"] = [
        {
            **template,
            "labels": {**template["labels"], "instance": f"10.0.{n // 250}.{n % 250}:8000"},
            "fingerprint": f"{n:016x}",
        }
        for n in range(count)
    ]
    path.write_text(json.dumps(base))
    return path


def in_terminal(argv: list[str], columns: int, env: dict[str, str]) -> tuple[float, int]:
    """Seconds until the command exits in a pty, and the lines it wrote."""
    started = time.perf_counter()
    cwd = env["HOME"]  # not the checkout: `python -m` would import the package from there
    process = ptyprocess.PtyProcess.spawn(argv, dimensions=(50, columns), env=env, cwd=cwd)
    lines = 0
    try:
        while True:
            try:
                lines += process.read(1 << 16).count(b"\n")
            except EOFError:
                break
    finally:
        process.close(force=True)
    return time.perf_counter() - started, lines


def piped(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(
        argv, capture_output=True, env=env, cwd=env["HOME"], timeout=600, check=True
    )
    return time.perf_counter() - started, done.stdout.count(b"\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--columns", type=int, default=80)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        payload = notification(Path(tmp) / "huge.json", args.alerts)
        env = {**os.environ, "HOME": tmp, "TERM": "xterm-256color", "COLUMNS": str(args.columns)}
        env.setdefault("PYTHONPATH", str(ROOT))
        env.pop("NO_COLOR", None)
        command = [sys.executable, "-m", "market_agent", "--no-audit", "analyze", "--no-llm"]
        print(f"code: {env['PYTHONPATH']}; {args.alerts:,} alerts")
        for name, run in [
            ("terminal", lambda: in_terminal([*command, str(payload)], args.columns, env)),
            ("--json, piped", lambda: piped([*command, "--json", str(payload)], env)),
        ]:
            results = [run() for _ in range(args.runs)]
            lines = statistics.median(n for _, n in results)
            report(f"{name} ({lines:,.0f} lines)", [s for s, _ in results], "-")


if __name__ == "__main__":
    main()
