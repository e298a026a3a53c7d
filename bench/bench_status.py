"""Wall-clock time of `market-agent status --json` as a whole process (hyperfine-like).

Run by hand from the repository root:

    python bench/bench_status.py [--runs 20] [--warmup 3]

Starts the demo predictor, Debian's Prometheus (scraping it) and Alertmanager on free
loopback ports, then times N runs of the command in each scenario and prints the
median, min and max wall time, the median CPU time (steadier on a busy machine) and
the probes' own time (the report's `duration_ms`). Targets (issue 3): all up, median <= 0.5 s; every
endpoint refusing connections, <= 1 s. A third scenario, one endpoint that accepts
connections and never answers (timeout 1 s), shows the bound `timeout + 0.5 s`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from common import bytecode, console_script, record

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import start_monitoring_stack, wait_until  # noqa: E402 - needs sys.path


def command() -> list[str]:
    """The real launcher beside this interpreter (a pyenv shim would add its own ~0.1 s)."""
    return [console_script()]


@dataclass
class Runs:
    #: Whole-process wall-clock times (s).
    times: list[float]
    #: The report's own `duration_ms`: the probes alone, without start-up.
    probe_ms: list[float]
    #: CPU time (user + sys) of the process: steadier than wall time on a busy machine.
    cpu: list[float]
    exit_codes: set[int]


def time_runs(env: dict[str, str], cwd: Path, runs: int, warmup: int) -> Runs:
    argv = [*command(), "status", "--json"]
    for _ in range(warmup):
        subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    result = Runs([], [], [], set())
    for _ in range(runs):
        before = _children_cpu()
        started = time.perf_counter()
        completed = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
        result.times.append(time.perf_counter() - started)
        result.cpu.append(_children_cpu() - before)
        result.exit_codes.add(completed.returncode)
        result.probe_ms.append(json.loads(completed.stdout)["duration_ms"])
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def show(name: str, runs: Runs, target: float | None) -> None:
    times, median = runs.times, statistics.median(runs.times)
    verdict = "" if target is None else ("OK" if median <= target else "OVER TARGET")
    print(
        f"{name:<38} median {median:.3f} s  min {min(times):.3f}  max {max(times):.3f}  "
        f"cpu {statistics.median(runs.cpu):.3f} s  "
        f"probes {statistics.median(runs.probe_ms):.0f} ms  exit {sorted(runs.exit_codes)}  "
        f"target <= {target} s: {verdict}"
    )
    if target is not None:
        record(
            "status",
            f"{name}, median",
            round(median, 3),
            "s",
            f"<= {target} s",
            met=median <= target,
            baseline=f"CPU {statistics.median(runs.cpu):.2f} s, probes "
            f"{statistics.median(runs.probe_ms):.0f} ms",
        )


def environment(state: Path, urls: dict[str, str], timeout: float = 5.0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_AGENT_")}
    env.update(HOME=str(state), XDG_CONFIG_HOME=str(state / "config"))
    env["XDG_STATE_HOME"] = str(state / "state")
    for name, url in urls.items():
        env[f"MARKET_AGENT_{name.upper()}__URL"] = url
        env[f"MARKET_AGENT_{name.upper()}__TIMEOUT"] = str(timeout)
    return env


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    names = ("predictor", "prometheus", "alertmanager")
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp, ExitStack() as stack:
        tmp_path = Path(tmp)
        monitoring = start_monitoring_stack(stack, tmp_path, traffic_rps=20)
        up = {name: monitoring.urls[name] for name in names}
        env_up = environment(tmp_path, up)
        wait_until(
            lambda: (
                subprocess.run(
                    [*command(), "status", "--json"], env=env_up, cwd=tmp_path, capture_output=True
                ).returncode
                == 0
            ),
            60,
            interval=1,
            message="status healthy",
        )
        how = bytecode(cached=True)
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.runs} runs each, {how}"
        )
        print(f"market-agent --help (start-up only): median {help_median(tmp_path):.3f} s")
        show("status --json, all up", time_runs(env_up, tmp_path, args.runs, args.warmup), 0.5)
        refused = {name: f"http://127.0.0.1:{refused_port()}" for name in names}
        env_refused = environment(tmp_path, refused)
        show("status --json, all refusing", time_runs(env_refused, tmp_path, args.runs, 1), 1.0)
        silent = stack.enter_context(socket.socket())
        silent.bind(("127.0.0.1", 0))
        silent.listen(256)
        hung = {**refused, "predictor": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        env_hung = environment(tmp_path, hung, timeout=1.0)
        runs = max(3, args.runs // 4)
        show("status --json, predictor silent (1 s)", time_runs(env_hung, tmp_path, runs, 0), 1.5)


def help_median(cwd: Path, runs: int = 10) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*command(), "--help"], cwd=cwd, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


if __name__ == "__main__":
    main()
