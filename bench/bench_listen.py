"""Load benchmark for `market-agent listen` (run by hand; not part of the test suite).

    python bench/bench_listen.py [--duration 10] [--connections 32] [--rate 1000]

Two servers in one run, on loopback, with the same uvicorn set-up, every
notification with new alert fingerprints (5 alerts each by default):

1. the ceiling: a bare ASGI app under uvicorn that only answers 200, under the
   closed-loop load;
2. `market-agent listen --no-llm` (rule analyzer) with a token and a fresh audit log,
   under two loads in turn:
   - closed loop: `--connections` keep-alive connections, each sending its next
     request as soon as the previous one is answered (the most it sustains; its
     latency is mostly the queue the connections make: connections / rate);
   - paced: `--rate` requests/s on a fixed schedule (open loop, up to
     `--paced-connections` connections), latency counted from each request's due
     time, so falling behind shows as latency (no coordinated omission). This is
     "sustains 1,000/s with p99 <= 50 ms".

Reports acknowledged notifications/s, acknowledgement latency (p50/p99/max), the
listener's peak RSS (from /proc) and CPU per acknowledgement, the ratio to the
ceiling, and checks zero loss: every 2xx-acknowledged id is a notification record in
the audit log, and every one was analysed once the listener drained and exited.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import record

TOKEN = "bench-token-0123456789"
PATH = "/webhook/alerts"


# The load generator (runs in a child process) ---------------------------------------


def notification_body(conn: int, seq: int, alerts: int) -> bytes:
    items = [
        {
            "status": "firing",
            "labels": {
                "alertname": "PredictorHighLatency",
                "job": "market-predictor",
                "service": "market-predictor",
                "severity": "warning",
                "instance": f"10.0.{conn}.{i}:8000",
            },
            "annotations": {
                "summary": f"Market Predictor 10.0.{conn}.{i}:8000 p95 latency is 1.8s",
                "description": "The 95th percentile of prediction request duration is 1.8s.",
                "runbook_url": "https://runbooks.example.com/market-predictor/PredictorHighLatency",
            },
            "startsAt": "2026-11-25T10:00:00.000Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=histogram_quantile",
            "fingerprint": f"{conn:04x}{seq:010x}{i:02x}",
        }
        for i in range(alerts)
    ]
    body = {
        "version": "4",
        "groupKey": '{}/{service="market-predictor"}:{alertname="PredictorHighLatency"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "market-agent",
        "groupLabels": {"alertname": "PredictorHighLatency", "service": "market-predictor"},
        "commonLabels": {"alertname": "PredictorHighLatency", "service": "market-predictor"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": items,
    }
    return json.dumps(body).encode()


def request(body: bytes) -> bytes:
    """The whole HTTP request that posts `body`."""
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> tuple[int, bytes]:
    """One keep-alive request (`request(...)`): (status, response body)."""
    writer.write(data)
    status_line_and_headers = await reader.readuntil(b"\r\n\r\n")
    status = int(status_line_and_headers.split(b" ", 2)[1])
    length = 0
    for line in status_line_and_headers.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


def _tally(out: dict[str, Any], status: int, payload: bytes, latency: float) -> None:
    out["status"][status] += 1
    if 200 <= status < 300:
        out["latencies"].append(latency)
        try:
            out["ids"].append(json.loads(payload).get("id"))
        except ValueError:
            out["ids"].append(None)


async def _connection(
    port: int, conn: int, alerts: int, stop_at: float, out: dict[str, Any]
) -> None:
    """Closed loop: the next request as soon as the previous one is answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    seq = 0
    try:
        while time.perf_counter() < stop_at:
            data = request(notification_body(conn, seq, alerts))
            started = time.perf_counter()
            status, payload = await _exchange(reader, writer, data)
            _tally(out, status, payload, time.perf_counter() - started)
            seq += 1
    finally:
        writer.close()


async def _paced(
    port: int, connections: int, alerts: int, duration: float, rate: float, base: int
) -> dict[str, Any]:
    """Open loop: request i is due at start + i / rate, whether or not earlier ones are
    answered (a free connection is taken, or waited for). Latency counts from the due
    time, so a server that falls behind is not flattered by the generator waiting for
    it (no coordinated omission). Requests are built before the clock starts, so the
    generator's own work delays them as little as it can."""
    out: dict[str, Any] = {"status": Counter(), "latencies": [], "ids": [], "lag": []}
    total = int(duration * rate)
    # As many distinct instances as connections, as in the closed loop; new fingerprints.
    requests = [request(notification_body(base + i % connections, i, alerts)) for i in range(total)]
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))

    async def one(due: float, data: bytes) -> None:
        reader, writer = await idle.get()
        out["lag"].append(time.perf_counter() - due)
        status, payload = await _exchange(reader, writer, data)
        _tally(out, status, payload, time.perf_counter() - due)
        idle.put_nowait((reader, writer))

    started = time.perf_counter()
    pending = []
    for i, data in enumerate(requests):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.ensure_future(one(due, data)))
    await asyncio.gather(*pending)
    out["elapsed"] = time.perf_counter() - started
    while not idle.empty():
        idle.get_nowait()[1].close()
    return out


async def _load(
    port: int, connections: int, alerts: int, duration: float, base: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"status": Counter(), "latencies": [], "ids": []}
    started = time.perf_counter()
    stop_at = started + duration
    await asyncio.gather(
        *(_connection(port, base + conn, alerts, stop_at, out) for conn in range(connections))
    )
    out["elapsed"] = time.perf_counter() - started
    return out


def _event_loop_runner() -> Any:
    """uvloop's when it is installed (the `fast` extra): the generator's own pauses then
    add less to the latencies it measures."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _load_process(
    port: int,
    connections: int,
    alerts: int,
    duration: float,
    base: int,
    rate: float | None,
    queue: Any,
) -> None:
    run = _event_loop_runner()
    if rate:
        result = run(_paced(port, connections, alerts, duration, rate, base))
    else:
        result = run(_load(port, connections, alerts, duration, base))
    result["status"] = dict(result["status"])
    queue.put(result)


def run_load(
    port: int,
    connections: int,
    alerts: int,
    duration: float,
    base: int = 0,
    rate: float | None = None,
) -> dict[str, Any]:
    """Closed loop, or open loop at `rate` requests/s. `base` numbers the connections,
    so runs never repeat a fingerprint."""
    queue: Any = multiprocessing.Queue()
    process = multiprocessing.Process(
        target=_load_process, args=(port, connections, alerts, duration, base, rate, queue)
    )
    process.start()
    result = queue.get(timeout=duration + 120)
    process.join(30)
    return result


# The servers ---------------------------------------------------------------------------


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ceiling: read the body, answer 200 with a small JSON body."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = b'{"status": "accepted", "id": null}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve_bare(port: int) -> None:
    import uvicorn

    uvicorn.run(
        bare_app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        log_level="warning",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not ready in {timeout} s")


class RssSampler(threading.Thread):
    """Peak resident memory of a process and its children (the analysis process): the
    sum of their RSS, which counts the pages they share (libraries) twice, and of their
    PSS, which shares those out."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.peak_pss_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                pids = (self.pid, *_children(self.pid))
                rss = sum(_status_kib(pid, "VmRSS:") for pid in pids)
                pss = sum(_rollup_kib(pid, "Pss:") for pid in pids)
            except OSError:
                return
            self.peak_kib = max(self.peak_kib, rss)
            self.peak_pss_kib = max(self.peak_pss_kib, pss)
            self.done.wait(0.1)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _rollup_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its living children (the analysis process)."""
    total = cpu_seconds(pid)
    for child in _children(pid):
        with contextlib.suppress(OSError):  # it just exited
            total += cpu_seconds(child)
    return total


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Phase:
    """One load on a running server: closed loop (`rate` None) or paced at `rate`/s."""

    name: str
    connections: int
    rate: float | None = None


def measure(
    argv: list[str], port: int, args: argparse.Namespace, env: dict[str, str], phases: list[Phase]
) -> list[dict[str, Any]]:
    """Start the server, run each phase against it in turn, stop it with SIGTERM."""
    process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL if args.quiet else None)
    results = []
    try:
        wait_ready(port, process)
        run_load(port, 2, args.alerts, 1.0, base=10_000)  # warm-up (imports, first analyses)
        for number, phase in enumerate(phases):
            sampler = RssSampler(process.pid)
            sampler.start()
            cpu_before = cpu_seconds(process.pid), tree_cpu_seconds(process.pid)
            buckets_before = ack_buckets(port)
            base = 100_000 * (number + 1)  # new fingerprints in every phase
            result = run_load(port, phase.connections, args.alerts, args.duration, base, phase.rate)
            sampler.done.set()
            # Includes analysing what is still queued only up to this point.
            result["server_cpu_s"] = cpu_seconds(process.pid) - cpu_before[0]
            result["tree_cpu_s"] = tree_cpu_seconds(process.pid) - cpu_before[1]
            result["server_p99_ms"] = bucket_quantile(buckets_before, ack_buckets(port), 0.99)
            result["peak_rss_mib"] = sampler.peak_kib / 1024
            result["peak_pss_mib"] = sampler.peak_pss_kib / 1024
            result["phase"] = phase
            results.append(result)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            exit_code = process.wait()
    for result in results:
        result["exit_code"] = exit_code
    return results


def ack_buckets(port: int) -> dict[float, float]:
    """The listener's own acknowledgement-latency histogram (cumulative counts by upper
    bound, in seconds), from /metrics; empty for a server without it."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            text = page.read().decode()
    except OSError:
        return {}
    found = {}
    prefix = 'market_agent_webhook_duration_seconds_bucket{code="2xx",le="'
    for line in text.splitlines():
        if line.startswith(prefix):
            bound, _, count = line[len(prefix) :].partition('"} ')
            found[float(bound)] = float(count)
    return found


def bucket_quantile(
    before: dict[float, float], after: dict[float, float], q: float
) -> float | None:
    """Upper bound (ms) of the histogram bucket holding quantile `q` of what was observed
    between two scrapes: the server's own view, without the load generator's delays."""
    if not after:
        return None
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    for bound, count in counts.items():
        if total and count >= q * total:
            return bound * 1000
    return None


def _p99_ms(samples: list[float] | None) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2)


def summarize(name: str, result: dict[str, Any]) -> dict[str, Any]:
    phase = result["phase"]
    latencies = sorted(result["latencies"])
    acked = len(latencies)

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0
        )

    summary = {
        "server": name,
        "load": phase.name,
        "connections": phase.connections,
        "offered_per_s": phase.rate,
        "acked": acked,
        "acked_per_s": round(acked / result["elapsed"], 1),
        "p50_ms": round(pct(0.50), 2),
        "p99_ms": round(pct(0.99), 2),
        # The listener's own view (arrival to answer), to the bucket: no generator delays.
        "server_p99_ms_at_most": result.get("server_p99_ms"),
        # Paced load: how late the generator itself sent (it shares the two cores).
        "generator_lag_p99_ms": _p99_ms(result.get("lag")),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else 0,
        "status": result["status"],
        "peak_rss_mib": round(result["peak_rss_mib"], 1),
        "peak_pss_mib": round(result["peak_pss_mib"], 1),
        "server_cpu_ms_per_ack": round(result["server_cpu_s"] * 1000 / max(acked, 1), 3),
        # With analysis in a process of its own: the listener and that process together.
        "with_children_cpu_ms_per_ack": round(result["tree_cpu_s"] * 1000 / max(acked, 1), 3),
        # On a shared machine: how much CPU the server got (one core = 1.0).
        "server_cores_used": round(result["server_cpu_s"] / result["elapsed"], 2),
        "exit_code": result["exit_code"],
    }
    print(json.dumps(summary))
    return summary


def check_audit(audit: Path, acked_ids: list[str]) -> dict[str, Any]:
    notifications, analysed = set(), Counter()
    with audit.open() as handle:
        for line in handle:
            record = json.loads(line)
            if record["kind"] == "notification":
                notifications.add(record["id"])
            elif record["kind"] == "analysis":
                analysed[record["notification_id"]] += 1
    missing = [i for i in acked_ids if i not in notifications]
    unanalysed = [i for i in acked_ids if analysed[i] == 0]
    twice = [i for i, n in analysed.items() if n > 1]
    report = {
        "acked": len(acked_ids),
        "journaled": len(notifications),
        "missing_from_audit_log": len(missing),
        "unanalysed_after_drain": len(unanalysed),
        "analysed_twice": len(twice),
    }
    print(json.dumps(report))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load phase")
    parser.add_argument("--connections", type=int, default=32, help="closed-loop connections")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced load, requests/s")
    parser.add_argument(
        "--paced-connections", type=int, default=64, help="connections the paced load may use"
    )
    parser.add_argument("--alerts", type=int, default=5)
    parser.add_argument("--log-level", default="warning", help="the listener's log level")
    parser.add_argument("--quiet", action="store_true", help="hide the servers' stderr")
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_AGENT_")}
    load = [round(x, 2) for x in os.getloadavg()[:2]]
    print(json.dumps({"cpus": os.cpu_count(), "load_average_1m_5m": load}))
    saturate = Phase("closed loop", args.connections)
    paced = Phase(f"paced at {args.rate:g}/s", args.paced_connections, args.rate)
    bare_port = free_port()
    bare_argv = [sys.executable, __file__, "--serve-bare", str(bare_port)]
    (bare,) = measure(bare_argv, bare_port, args, env, [saturate])
    ceiling = summarize("bare uvicorn", bare)
    with tempfile.TemporaryDirectory(prefix="bench-listen-") as tmp:
        token_file = Path(tmp) / "token"
        token_file.write_text(TOKEN)
        audit = Path(tmp) / "audit.jsonl"
        port = free_port()
        argv = [
            sys.executable, "-m", "market_agent", "--audit-log", str(audit), "listen",
            "--port", str(port), "--token-file", str(token_file), "--no-llm",
            "--log-level", args.log_level, "--grace-period", "60",
        ]  # fmt: skip
        env["XDG_CONFIG_HOME"] = tmp  # no user config
        runs = measure(argv, port, args, env, [saturate, paced])
        closed, steady = (summarize("market-agent listen", run) for run in runs)
        loss = check_audit(audit, [i for run in runs for i in run["ids"] if i])
    ratio = closed["acked_per_s"] / ceiling["acked_per_s"] if ceiling["acked_per_s"] else 0
    print(json.dumps({"ratio_to_bare_uvicorn": round(ratio, 3)}))
    return 0 if report_targets(args, ceiling, closed, steady, loss, ratio) else 1


def report_targets(
    args: argparse.Namespace,
    ceiling: dict[str, Any],
    closed: dict[str, Any],
    steady: dict[str, Any],
    loss: dict[str, Any],
    ratio: float,
) -> bool:
    """Print and record (for `bench/run`) each figure against the issue's target."""
    kept_up = steady["acked_per_s"] >= 0.99 * args.rate and steady["status"].keys() <= {200}
    lost = loss["missing_from_audit_log"] + loss["unanalysed_after_drain"]
    checks = [
        (
            f"closed loop, {args.connections} connections: acknowledged/s",
            closed["acked_per_s"], "/s", ">= 1,000/s", closed["acked_per_s"] >= 1000,
            f"bare uvicorn {ceiling['acked_per_s']:,.0f}/s (ratio {ratio:.2f})",
        ),
        (
            f"paced at {args.rate:g}/s: acknowledged/s (all 2xx)",
            steady["acked_per_s"], "/s", f">= {args.rate:g}/s", kept_up, "",
        ),
        (
            f"paced at {args.rate:g}/s: p99 acknowledgement latency",
            steady["p99_ms"], "ms", "<= 50 ms", steady["p99_ms"] <= 50, "",
        ),
        (
            f"paced at {args.rate:g}/s: p99 in the listener's own histogram (at most)",
            steady["server_p99_ms_at_most"], "ms", "-", None, "",
        ),
        (
            f"closed loop, {args.connections} connections: p99 latency",
            closed["p99_ms"], "ms", "-", None, "",
        ),
        (
            "peak RSS under load (listener and analysis process)",
            max(closed["peak_rss_mib"], steady["peak_rss_mib"]), "MiB", "<= 150 MiB",
            max(closed["peak_rss_mib"], steady["peak_rss_mib"]) <= 150,
            f"PSS {max(closed['peak_pss_mib'], steady['peak_pss_mib']):.0f} MiB",
        ),
        (
            "acknowledged but lost or unanalysed; analysed twice",
            lost + loss["analysed_twice"], "", "0", lost + loss["analysed_twice"] == 0, "",
        ),
        ("exit code after SIGTERM", closed["exit_code"], "", "0", closed["exit_code"] == 0, ""),
    ]  # fmt: skip
    for figure, value, unit, target, met, baseline in checks:
        flag = {True: "ok", False: "NOT MET", None: ""}[met]
        print(f"{figure:<58} {value:>10,} {unit:<4} target {target:<12} {flag}")
        record("listen", figure, value, unit, target, met=met, baseline=baseline)
    ok = all(met is not False for *_, met, _ in checks)
    print("targets met" if ok else "targets NOT met")
    return ok


if __name__ == "__main__":
    sys.exit(main())
