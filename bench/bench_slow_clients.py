"""Slow clients against `market-agent listen` (run by hand; not part of the test suite).

    python bench/bench_slow_clients.py [--clients 500] [--duration 20] [--max-connections N]

Starts a real listener on loopback (`--no-llm`, threads analysis, a fresh audit log),
then opens `--clients` idle connections (connect, send nothing) and as many
byte-at-a-time clients (a webhook request, one byte every `--pause` seconds, each
reconnecting when cut off), and meanwhile sends normal webhook requests, one at a
time, each on a new connection. Reports the normal requests' answers and latency
(p50/p99/max), the listener's open descriptors (/proc/PID/fd; peak and at the end)
and how many lines it wrote on stderr.

The cap (`listen.max_connections`) is set from `--max-connections` (default: room for
every slow client, so that what is measured is whether they slow the others down);
give a smaller one to see refusals, or 0 to leave the listener's setting alone (e.g.
to measure a listener that predates it: PYTHONPATH=/path/to/old/checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATH = "/webhook/alerts"
#: The listener's own log lines for each notification (not about connections).
PER_NOTIFICATION = re.compile(r"market_agent\.listen: (accepted notification|analysed) ")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "alerts" / "predictor-down.json"


def webhook_request(n: int) -> bytes:
    body = json.loads(EXAMPLE.read_text())
    body["alerts"][0]["fingerprint"] = f"slowbench{n:08d}"
    data = json.dumps(body).encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descriptors(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


async def idle_client(port: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        await _until_closed_or(stop, reader)
        writer.close()


async def trickle_client(port: int, pause: float, stop: asyncio.Event, n: int) -> None:
    request = webhook_request(1_000_000 + n)
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        try:
            for byte in range(len(request)):
                if stop.is_set() or reader.at_eof():
                    break
                writer.write(request[byte : byte + 1])
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(65536), pause) == b"":
                        break  # cut off
                except TimeoutError:
                    pass
        except OSError:
            pass
        writer.close()


async def _until_closed_or(stop: asyncio.Event, reader: asyncio.StreamReader) -> None:
    read = asyncio.ensure_future(reader.read())
    halt = asyncio.ensure_future(stop.wait())
    await asyncio.wait([read, halt], return_when=asyncio.FIRST_COMPLETED)
    read.cancel()
    halt.cancel()


async def normal_requests(port: int, stop: asyncio.Event, out: dict[str, list]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        started = time.perf_counter()
        status = "error"
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(webhook_request(n))
            answer = await asyncio.wait_for(reader.read(), 10)
            status = answer[9:12].decode() or "closed"
            writer.close()
        except (OSError, TimeoutError) as exc:
            status = type(exc).__name__
        out.setdefault(status, []).append(time.perf_counter() - started)
        await asyncio.sleep(0.01)


async def load(args: argparse.Namespace, port: int, pid: int) -> dict[str, object]:
    stop = asyncio.Event()
    results: dict[str, list[float]] = {}
    peak = 0
    tasks = [asyncio.create_task(idle_client(port, stop)) for _ in range(args.clients)]
    tasks += [
        asyncio.create_task(trickle_client(port, args.pause, stop, n)) for n in range(args.clients)
    ]
    await asyncio.sleep(1)  # let the slow clients connect first
    tasks.append(asyncio.create_task(normal_requests(port, stop, results)))
    deadline = time.monotonic() + args.duration
    while time.monotonic() < deadline:
        peak = max(peak, descriptors(pid))
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait(tasks, timeout=15)
    return {"results": results, "peak_fds": peak}


def quantile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500, help="idle and trickling, each")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between bytes")
    parser.add_argument("--max-connections", type=int, default=None)
    args = parser.parse_args()
    if args.clients > 2000:
        raise SystemExit("--clients: at most 2000 (this is a loopback benchmark)")
    cap = 2 * args.clients + 100 if args.max_connections is None else args.max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.clients + 256)), hard))

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        stderr_path = Path(tmp) / "stderr.log"
        argv = [
            sys.executable, "-m", "market_agent", "--audit-log", f"{tmp}/audit.jsonl",
            "listen", "--port", str(port), "--no-llm", "--analysis", "threads",
        ]  # fmt: skip
        env = dict(os.environ)
        if cap:  # 0: the listener's own setting (or a listener without one)
            env["MARKET_AGENT_LISTEN__MAX_CONNECTIONS"] = str(cap)
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                _wait_ready(port, process)
                baseline = descriptors(process.pid)
                outcome = asyncio.run(load(args, port, process.pid))
                time.sleep(1)
                after = descriptors(process.pid)
            finally:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        lines = stderr_path.read_text(errors="replace").splitlines()

    results: dict[str, list[float]] = outcome["results"]  # type: ignore[assignment]
    ok = results.get("200", [])
    print(
        f"slow clients: {args.clients} idle + {args.clients} byte-at-a-time (a byte every "
        f"{args.pause:g} s), {args.duration:g} s, max_connections={cap}"
    )
    print("normal requests:", {status: len(v) for status, v in sorted(results.items())})
    if ok:
        print(
            f"  200s: p50 {quantile(ok, 50) * 1000:.1f} ms, p99 {quantile(ok, 99) * 1000:.1f} ms,"
            f" max {max(ok) * 1000:.1f} ms"
        )
    print(f"listener descriptors: {baseline} at start, peak {outcome['peak_fds']}, {after} after")
    per_notification = [line for line in lines if PER_NOTIFICATION.search(line)]
    other = [line for line in lines if not PER_NOTIFICATION.search(line)]
    print(
        f"listener stderr: {len(lines)} lines, {len(per_notification)} of them one per "
        f"accepted or analysed notification; the {len(other)} others:"
    )
    for line in other[:20]:
        print("  |", line[:200])


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the listener exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the listener did not become ready")


if __name__ == "__main__":
    main()
