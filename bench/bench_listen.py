"""Load benchmark for `market-agent listen` (run by hand; not part of the test suite).

    python bench/bench_listen.py [--duration 10] [--connections 32] [--alerts 5]

Two servers in one run, on loopback, with the same uvicorn set-up and the same
closed-loop load (keep-alive connections, each sending its next request as soon as
the previous one is answered, every notification with new alert fingerprints):

1. the ceiling: a bare ASGI app under uvicorn that only answers 200;
2. `market-agent listen --no-llm` (rule analyzer) with a token and a fresh audit log.

Reports acknowledged notifications/s, acknowledgement latency (p50/p99/max), the
listener's peak RSS (from /proc), the ratio to the ceiling, and checks zero loss:
every 2xx-acknowledged id is a notification record in the audit log, and every one
was analysed once the listener drained and exited.
"""

from __future__ import annotations

import argparse
import asyncio
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
from pathlib import Path
from typing import Any

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


async def _connection(
    port: int, conn: int, alerts: int, stop_at: float, out: dict[str, Any]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    seq = 0
    try:
        while time.perf_counter() < stop_at:
            body = notification_body(conn, seq, alerts)
            head = (
                f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            started = time.perf_counter()
            writer.write(head + body)
            status_line_and_headers = await reader.readuntil(b"\r\n\r\n")
            status = int(status_line_and_headers.split(b" ", 2)[1])
            length = 0
            for line in status_line_and_headers.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            payload = await reader.readexactly(length)
            elapsed = time.perf_counter() - started
            seq += 1
            out["status"][status] += 1
            if 200 <= status < 300:
                out["latencies"].append(elapsed)
                try:
                    out["ids"].append(json.loads(payload).get("id"))
                except ValueError:
                    out["ids"].append(None)
    finally:
        writer.close()


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


def _load_process(
    port: int, connections: int, alerts: int, duration: float, base: int, queue: Any
) -> None:
    result = asyncio.run(_load(port, connections, alerts, duration, base))
    result["status"] = dict(result["status"])
    queue.put(result)


def run_load(
    port: int, connections: int, alerts: int, duration: float, base: int = 0
) -> dict[str, Any]:
    """`base` numbers the connections, so runs never repeat a fingerprint."""
    queue: Any = multiprocessing.Queue()
    process = multiprocessing.Process(
        target=_load_process, args=(port, connections, alerts, duration, base, queue)
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
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except OSError:
                return
            self.done.wait(0.1)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(argv: list[str], port: int, args: argparse.Namespace, env: dict[str, str]) -> dict:
    process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL if args.quiet else None)
    try:
        wait_ready(port, process)
        run_load(port, 2, args.alerts, 1.0, base=10_000)  # warm-up (imports, first analyses)
        sampler = RssSampler(process.pid)
        sampler.start()
        cpu_before = cpu_seconds(process.pid)
        result = run_load(port, args.connections, args.alerts, args.duration)
        sampler.done.set()
        # Includes analysing what is still queued only up to this point.
        result["server_cpu_s"] = cpu_seconds(process.pid) - cpu_before
        result["peak_rss_mib"] = sampler.peak_kib / 1024
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            result_code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            result_code = process.wait()
    result["exit_code"] = result_code
    return result


def summarize(name: str, result: dict[str, Any]) -> dict[str, Any]:
    latencies = sorted(result["latencies"])
    acked = len(latencies)

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0
        )

    summary = {
        "server": name,
        "acked": acked,
        "acked_per_s": round(acked / result["elapsed"], 1),
        "p50_ms": round(pct(0.50), 2),
        "p99_ms": round(pct(0.99), 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else 0,
        "status": result["status"],
        "peak_rss_mib": round(result["peak_rss_mib"], 1),
        "server_cpu_ms_per_ack": round(result["server_cpu_s"] * 1000 / max(acked, 1), 3),
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
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
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
    bare_port = free_port()
    bare = measure([sys.executable, __file__, "--serve-bare", str(bare_port)], bare_port, args, env)
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
        listener = measure(argv, port, args, env)
        result = summarize("market-agent listen", listener)
        loss = check_audit(audit, [i for i in listener["ids"] if i])
    ratio = result["acked_per_s"] / ceiling["acked_per_s"] if ceiling["acked_per_s"] else 0
    print(json.dumps({"ratio_to_bare_uvicorn": round(ratio, 3)}))
    ok = (
        result["acked_per_s"] >= 1000
        and result["p99_ms"] <= 50
        and result["peak_rss_mib"] <= 150
        and loss["missing_from_audit_log"] == 0
        and loss["unanalysed_after_drain"] == 0
        and loss["analysed_twice"] == 0
        and result["exit_code"] == 0
    )
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
