"""LLM path timings against a local, instant scripted OpenAI-compatible server.

    python bench/bench_llm.py [--calls 50] [--trickle-timeout 10] [--skip-listen]

Figures (issue 11):
- per-call overhead of `LLMAnalyzer.judge` (the server answers at once), median;
  target <= 15 ms (56-90 ms when a client was built per call);
- `market-agent analyze` of 1 and of 20 notifications with the LLM configured,
  whole process (LangChain's import included);
- first analysis after `listen` reports ready (the analysis process pre-warms the
  LLM client), from the POST to the analysis record in the audit log;
- a body trickled in 12 pieces 5 s apart: wall time against `llm.timeout`
  (target <= timeout + 1 s; it was accepted after 55 s).
Run with PYTHONPATH pointing at the tree to measure (works on older trees too).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import httpx
from common import ROOT, console_script, report


def scripted_module() -> ModuleType:
    path = ROOT / "tests" / "helpers" / "scripted_llm.py"
    spec = importlib.util.spec_from_file_location("scripted_llm", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["scripted_llm"] = module
    spec.loader.exec_module(module)
    return module


SCRIPTED = scripted_module()
VERDICT = {
    "issue_detected": True,
    "severity": "critical",
    "issue_type": "availability",
    "description": "The Market Predictor is down.",
    "recommended_actions": ["Check /health", "Restart it"],
    "proposed_action": "restart",
    "confidence": 0.9,
    "requires_immediate_action": True,
}
EXAMPLE = ROOT / "examples" / "alerts" / "predictor-down.json"


def notification() -> object:
    from market_agent.inputs import read_source

    return next(read_source(str(EXAMPLE))).notification  # type: ignore[union-attr]


def analyzer(url: str, timeout: float) -> object:
    from market_agent.analysis.llm import LLMAnalyzer
    from market_agent.settings import LLMSettings

    settings = LLMSettings(
        base_url=url, api_key="sk-bench-0123456789", timeout=timeout, requests_per_minute=10**6
    )
    return LLMAnalyzer(settings, allowed_actions=("restart", "escalate", "none"))


def per_call_overhead(calls: int) -> None:
    with SCRIPTED.ScriptedLLM([SCRIPTED.Answer(VERDICT)]) as server:
        llm = analyzer(server.url, 30.0)
        alert = notification()
        llm.judge(alert, {})  # import and first connection out of the figure
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            llm.judge(alert, {})
            samples.append(time.perf_counter() - started)
        report(f"LLM judge() per call, instant server ({calls} calls)", samples, "<= 15 ms")
        print(f"{'  connections opened':<52} {server.connections}")


def trickle(timeout: float) -> None:
    step = SCRIPTED.Trickle(SCRIPTED.Answer(VERDICT), pieces=12, interval=5.0)
    with SCRIPTED.ScriptedLLM([step]) as server:
        llm = analyzer(server.url, timeout)
        llm._client() if hasattr(llm, "_client") else None  # build out of the figure
        started = time.perf_counter()
        try:
            llm.judge(notification(), {})
            outcome = "accepted"
        except Exception as exc:
            outcome = f"fell back: {exc}"
        elapsed = time.perf_counter() - started
    print(f"{'trickled body (12 x 5 s), llm.timeout ' + f'{timeout:g} s':<52} "
          f"{elapsed:7.1f} s  target <= {timeout + 1:g} s  ({outcome})")  # fmt: skip


def analyze_cli(server_url: str, tmp: Path) -> None:
    env = {**os.environ, "MARKET_AGENT_LLM__BASE_URL": server_url, "OPENAI_API_KEY": "sk-b",
           "HOME": str(tmp), "XDG_STATE_HOME": str(tmp)}  # fmt: skip
    twenty = tmp / "twenty.jsonl"
    base = json.loads(EXAMPLE.read_text())
    lines = []
    for n in range(20):
        base["alerts"][0]["fingerprint"] = f"{n:016x}"
        base["groupKey"] = f"bench-{n}"
        lines.append(json.dumps(base))
    twenty.write_text("\n".join(lines) + "\n")
    script = console_script()
    for label, path in (("1 notification", EXAMPLE), ("20 notifications", twenty)):
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run([script, "--no-audit", "analyze", "--json", str(path)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
                           check=True)  # fmt: skip
            samples.append(time.perf_counter() - started)
        report(f"analyze with the LLM, {label} (process)", samples, "-")


def first_listen_analysis(server_url: str, tmp: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MARKET_AGENT_LLM__BASE_URL": server_url, "OPENAI_API_KEY": "sk-b",
           "HOME": str(tmp), "XDG_STATE_HOME": str(tmp)}  # fmt: skip
    audit = tmp / "market-agent" / "audit.jsonl"
    proc = subprocess.Popen([console_script(), "listen", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        started = time.perf_counter()
        httpx.post(base + "/webhook/alerts", content=EXAMPLE.read_bytes(), timeout=10,
                   headers={"content-type": "application/json"}).raise_for_status()  # fmt: skip
        while time.monotonic() < deadline:
            if audit.exists() and '"kind": "analysis"' in audit.read_text().replace('":"', '": "'):
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        print(
            f"{'first analysis after listen is ready (POST->record)':<52} {elapsed * 1000:7.1f} ms"
        )
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--trickle-timeout", type=float, default=10.0)
    parser.add_argument("--skip-listen", action="store_true")
    args = parser.parse_args()
    per_call_overhead(args.calls)
    with (
        tempfile.TemporaryDirectory() as name,
        SCRIPTED.ScriptedLLM([SCRIPTED.Answer(VERDICT)]) as server,
    ):
        analyze_cli(server.url, Path(name))
        if not args.skip_listen:
            first_listen_analysis(server.url, Path(name))
    trickle(args.trickle_timeout)


if __name__ == "__main__":
    main()
