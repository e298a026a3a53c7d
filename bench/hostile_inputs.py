"""Hostile-input table for `market-agent listen` (run by hand; issue 10's closing note).

    python bench/hostile_inputs.py [--fuzz 60] [--timeout 30]

Starts a real `market-agent listen --no-llm` (analysis in its own process, the
default) on a fresh audit log, then for each hostile input (tests/hostile_inputs.py,
then `--fuzz` bodies drawn from the fuzz test's hypothesis strategy of hostile
notifications: lone surrogates, nesting up to 300 deep, huge strings, control
characters, odd types) posts it, posts a valid notification right after, and waits
for that one's `analysis` record. Prints one row per input: the answer, and whether
and how fast the next valid notification was analysed; then /readyz and
`history verify`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hostile_inputs import Hostile, hostile_inputs, valid_body  # noqa: E402

TOKEN = "hostile-bench-token-0123456789"
#: `listen.max_body_bytes`' default: larger bodies are answered 413.
MAX_BODY_BYTES = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fuzz_corpus(count: int) -> list[Hostile]:
    """`count` bodies from the fuzz test's strategy (expected answers from the contract)."""
    from hypothesis.errors import NonInteractiveExampleWarning

    from market_agent.inputs import MAX_DEPTH, deeper_than, has_lone_surrogate
    from tests.test_fuzz_listen import hostile_notification

    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
    corpus = []
    for n in range(count):
        payload = hostile_notification().example()
        body = json.dumps(payload).encode()
        if len(body) > MAX_BODY_BYTES:
            expected, reason = 413, "too_large"
        elif has_lone_surrogate(payload):
            expected, reason = 400, "bad_json"
        elif deeper_than(payload, MAX_DEPTH):
            expected, reason = 422, "invalid"
        else:
            expected, reason = 200, None
        corpus.append(Hostile(f"fuzz #{n + 1}: {_traits(payload)}", body, expected, reason))
    return corpus


def _traits(payload: object) -> str:
    """What makes a fuzz body hostile, in a few words."""
    from market_agent.inputs import deeper_than, has_lone_surrogate

    text = json.dumps(payload, ensure_ascii=False)
    depth = next(d for d in range(1, 400) if not deeper_than(payload, d))
    traits = [f"depth {depth}"]
    if has_lone_surrogate(payload):
        traits.append("lone surrogate")
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        traits.append("control chars")
    if len(text) > 10_000:
        traits.append(f"{len(text) // 1000} K chars")
    return ", ".join(traits)


class Listener:
    def __init__(self, directory: Path) -> None:
        self.audit = directory / "audit.jsonl"
        token_file = directory / "token"
        token_file.write_text(TOKEN)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (directory / "listen.log").open("wb")
        argv = [
            sys.executable, "-m", "market_agent", "--audit-log", str(self.audit), "listen",
            "--no-llm", "--port", str(self.port), "--token-file", str(token_file),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=self.log, env=env)
        self.client = httpx.Client(base_url=self.url, timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit("the listener did not get ready")

    def post(self, body: bytes) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return self.client.post("/webhook/alerts", content=body, headers=headers)

    def analysed_within(self, notification_id: str, timeout: float) -> float | None:
        """Seconds until the notification's analysis record appeared (None: not in time)."""
        started = time.monotonic()
        needle = f'"notification_id":"{notification_id}"'.encode()
        while time.monotonic() - started < timeout:
            for line in self.audit.read_bytes().splitlines():
                if needle in line and b'"kind":"analysis"' in line:
                    return time.monotonic() - started
            time.sleep(0.01)
        return None

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=60, help="fuzz bodies after the named ones")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    inputs = hostile_inputs() + fuzz_corpus(args.fuzz)
    with tempfile.TemporaryDirectory() as tmp:
        listener = Listener(Path(tmp))
        print("| input | bytes | answer | expected | next valid analysed in |")
        print("|---|---:|---|---|---:|")
        worst, wrong = 0.0, 0
        try:
            for n, hostile in enumerate(inputs):
                answer = listener.post(hostile.body)
                reason = answer.json().get("reason", "") if answer.status_code != 200 else ""
                got = f"{answer.status_code} {reason}".strip()
                want = f"{hostile.status} {hostile.reason or ''}".strip()
                wrong += got != want
                valid = listener.post(valid_body(f"bench-valid-{n}"))
                took = listener.analysed_within(valid.json()["id"], args.timeout)
                worst = max(worst, took if took is not None else float("inf"))
                shown = f"{took * 1000:.0f} ms" if took is not None else "NOT ANALYSED"
                print(f"| {hostile.name} | {len(hostile.body):,} | {got} | {want} | {shown} |")
            ready = listener.client.get("/readyz")
            print(f"\n/readyz after all inputs: {ready.status_code} {ready.text}")
        finally:
            listener.stop()
        verify = subprocess.run(
            [sys.executable, "-m", "market_agent", "--audit-log", str(listener.audit),
             "history", "verify"],
            capture_output=True, text=True, check=False, timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        lines = [len(line) for line in (Path(tmp) / "listen.log").read_text().splitlines()]
        print(f"history verify: exit {verify.returncode} {verify.stdout.strip()}")
        print(
            f"inputs: {len(inputs)}; answers not as documented: {wrong}; slowest next "
            f"analysis: {worst * 1000:.0f} ms; longest log line: {max(lines)} characters"
        )


if __name__ == "__main__":
    main()
