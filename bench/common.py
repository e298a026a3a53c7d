"""Shared helpers for the benchmark scripts (run by hand; figures go in notes/README)."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def console_script() -> str:
    """The real `market-agent` launcher next to this interpreter (not a pyenv shim)."""
    candidate = Path(sys.executable).with_name("market-agent")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("market-agent")
    if found is None:
        raise SystemExit("market-agent is not installed: pip install -e .")
    return found


def bytecode(cached: bool) -> str:
    """Byte-compile the package (`cached`), as `pip install` does, or remove its caches.

    An editable install leaves compiling to the first run, which writes `__pycache__`;
    where PYTHONDONTWRITEBYTECODE is set (as on these sandboxes) nothing is ever
    written, and every start compiles ~40 modules from source (~0.1 s). Returns a
    label for the figures.
    """
    package = ROOT / "market_agent"
    if cached:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
        return "bytecode cached, as installed"
    for cache in package.rglob("__pycache__"):
        shutil.rmtree(cache)
    return "no bytecode cache (PYTHONDONTWRITEBYTECODE=1, editable install)"


def time_command(
    argv: Sequence[str], runs: int = 15, warmup: int = 2, env: dict[str, str] | None = None
) -> list[float]:
    """Wall-clock seconds of each run of a whole process."""
    merged = {**os.environ, **(env or {})}
    samples = []
    for index in range(warmup + runs):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=merged)
        if index >= warmup:
            samples.append(time.perf_counter() - started)
    return samples


def peak_rss_mb(argv: Sequence[str], env: dict[str, str] | None = None) -> float:
    """Peak resident memory of one run of a command, in MB (from wait4's rusage)."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss / 1024


def report(name: str, samples: Sequence[float], target: str) -> str:
    median = statistics.median(samples)
    line = (
        f"{name:<52} median {median * 1000:7.1f} ms  "
        f"min {min(samples) * 1000:7.1f} ms  max {max(samples) * 1000:7.1f} ms  target {target}"
    )
    print(line)
    return line


def record(
    benchmark: str,
    figure: str,
    value: float,
    unit: str,
    target: str,
    *,
    met: bool | None,
    baseline: str = "",
) -> None:
    """Append one result row for `bench/run` (a no-op unless $BENCH_RESULTS is set)."""
    import json

    path = os.environ.get("BENCH_RESULTS")
    if not path:
        return
    row = {
        "benchmark": benchmark,
        "figure": figure,
        "value": value,
        "unit": unit,
        "target": target,
        "met": met,
        "baseline": baseline,
    }
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
