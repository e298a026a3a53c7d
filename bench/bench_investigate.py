"""Investigation overhead, model time excluded, against local sources.

    python bench/bench_investigate.py [--runs 20] [--calls 6] [--log-lines 100000]
        [--prometheus-url URL]

A scripted OpenAI-compatible server (loopback, answers at once) plays a model that
makes `--calls` tool calls, one per round, then answers. The tools read local
sources: `search_logs` over a text file of `--log-lines` lines (the test suite's
file source, tests/helpers/text_logs.py), `action_history` over the audit log and,
with `--prometheus-url` (e.g. a local Prometheus), `query_prometheus`. Every step is
written to a real audit log (fsync on), as in production.

Figures (issue 14, target <= 50 ms per tool call for local sources), medians over
the runs: the whole investigation, the time inside model requests (LangChain and the
loopback HTTP), and per tool call the rest: the tool itself plus validation,
redaction, fencing and the audit record.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT

sys.path.insert(0, str(ROOT))

from market_agent.analysis.factory import build_analysis_service, build_toolbox
from market_agent.analysis.investigate import InvestigatingAnalyzer
from market_agent.inputs import read_source
from market_agent.settings import load_settings
from tests.helpers.scripted_llm import Answer, ScriptedLLM, ToolCalls
from tests.helpers.text_logs import TextFileLogs

VERDICT = {
    "issue_detected": True,
    "severity": "critical",
    "issue_type": "availability",
    "description": "Down.",
    "recommended_actions": ["Look"],
    "proposed_action": "escalate",
    "confidence": 0.9,
    "requires_immediate_action": True,
}


def tool_cycle(prometheus: bool) -> list[tuple[str, dict[str, Any]]]:
    tools: list[tuple[str, dict[str, Any]]] = [
        ("search_logs", {"query": "memoryerror", "since": "7d", "level": "error"}),
        ("action_history", {"alertname": "PredictorDown"}),
    ]
    if prometheus:
        tools.append(("query_prometheus", {"promql": "up", "range": "30m"}))
    return tools


def write_log(path: Path, lines: int) -> None:
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    with path.open("w") as out:
        for n in range(lines):
            level = "ERROR" if n % 50 == 0 else "INFO"
            text = "MemoryError in feature loader" if level == "ERROR" else f"served {n}"
            out.write(f"{now},{n % 1000:03d} {level} predictor: {text}\n")


def step_times(audit: Path) -> list[float]:
    """`elapsed_ms` of every step record: the tools' own time."""
    from market_agent.audit.query import load_record

    records = (load_record(line) for line in audit.read_bytes().splitlines())
    return [r["elapsed_ms"] for r in records if r and r["kind"] == "investigation_step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calls", type=int, default=6)
    parser.add_argument("--log-lines", type=int, default=100_000)
    parser.add_argument("--prometheus-url", default=None)
    args = parser.parse_args()

    model_seconds: list[float] = []
    original = InvestigatingAnalyzer._request

    def timed_request(self: Any, *a: Any, **k: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, *a, **k)
        finally:
            model_seconds.append(time.perf_counter() - started)

    InvestigatingAnalyzer._request = timed_request  # type: ignore[method-assign]
    cycle = tool_cycle(args.prometheus_url is not None)
    script = [ToolCalls([cycle[n % len(cycle)]]) for n in range(args.calls)] + [Answer(VERDICT)]
    notification = next(read_source(str(ROOT / "examples/alerts/predictor-down.json")))
    totals, models, per_call = [], [], []
    with tempfile.TemporaryDirectory() as tmp, ScriptedLLM(script) as llm:
        log = Path(tmp) / "predictor.log"
        write_log(log, args.log_lines)
        overrides = {
            "llm.base_url": llm.url,
            "llm.api_key": "sk-bench",
            "llm.requests_per_minute": 1_000_000,
            "analysis.mode": "investigate",
            "analysis.investigation.max_tool_calls": args.calls,
            "audit.path": str(Path(tmp) / "audit.jsonl"),
        }
        if args.prometheus_url:
            overrides["prometheus.url"] = args.prometheus_url
        settings = load_settings(overrides=overrides, environ={})
        toolbox = dataclasses.replace(build_toolbox(settings), logs=TextFileLogs(log))
        service = build_analysis_service(settings, toolbox=toolbox)
        service.warm()
        for _ in range(args.runs + 1):  # the first run warms caches: not counted
            llm.requests.clear()
            model_seconds.clear()
            started = time.perf_counter()
            analysis = service.analyze(notification.notification, source="bench")  # type: ignore[union-attr]
            total = time.perf_counter() - started
            assert analysis.investigation and analysis.investigation.tool_calls == args.calls
            totals.append(total)
            models.append(sum(model_seconds))
            per_call.append((total - sum(model_seconds)) / args.calls)
        tool_ms = step_times(Path(tmp) / "audit.jsonl")
    totals, models, per_call = totals[1:], models[1:], per_call[1:]
    tools = ", ".join(name for name, _ in cycle)
    print(f"{args.runs} investigations of {args.calls} tool calls ({tools}); "
          f"log file {args.log_lines} lines")  # fmt: skip
    print(f"  whole investigation      median {statistics.median(totals) * 1000:8.1f} ms")
    print(f"  inside model requests    median {statistics.median(models) * 1000:8.1f} ms")
    print(f"  per tool call, the rest  median {statistics.median(per_call) * 1000:8.1f} ms "
          f"(max {max(per_call) * 1000:.1f} ms)")  # fmt: skip
    print(f"    of which the tool      median {statistics.median(tool_ms):8.1f} ms")


if __name__ == "__main__":
    main()
