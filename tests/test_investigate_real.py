"""Investigation against a real Prometheus (Debian's `prometheus`) scraping the demo
predictor, with the scripted OpenAI-compatible server calling the tools over HTTP and
the predictor's own log file as the log source. One stack for the module."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from market_agent.analysis.factory import build_analysis_service, build_toolbox
from market_agent.audit.query import load_record
from market_agent.inputs import read_source
from market_agent.models import Analysis
from market_agent.settings import load_settings
from tests.conftest import EXAMPLES
from tests.helpers import scraped_predictor
from tests.helpers.scripted_llm import Answer, ScriptedLLM, Step, ToolCalls
from tests.helpers.text_logs import TextFileLogs

pytestmark = pytest.mark.slow

VERDICT = {
    "issue_detected": True,
    "severity": "critical",
    "issue_type": "availability",
    "description": "The predictor answers and Prometheus scrapes it: the alert is stale.",
    "recommended_actions": ["Check the alert's rule", "Watch the next evaluation"],
    "proposed_action": "escalate",
    "confidence": 0.7,
    "requires_immediate_action": True,
}
UP = ("query_prometheus", {"promql": 'up{job="market-predictor"}'})


@dataclasses.dataclass
class Stack:
    prometheus_url: str
    predictor_url: str
    predictor_log: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("investigate-real")
    with scraped_predictor(tmp_path) as (predictor_port, prometheus_port, _):
        url = f"http://127.0.0.1:{prometheus_port}"
        yield Stack(
            url, f"http://127.0.0.1:{predictor_port}", tmp_path / f"predictor-{predictor_port}.log"
        )


Investigate = Callable[..., tuple[Analysis, list[dict[str, Any]], ScriptedLLM]]


@pytest.fixture
def investigate(stack: Stack, tmp_path: Path) -> Investigate:
    def run(
        script: list[Step] | Callable[[dict[str, Any]], Step],
        logs: Path | None = None,
        **limits: Any,
    ) -> tuple[Analysis, list[dict[str, Any]], ScriptedLLM]:
        audit = tmp_path / "audit.jsonl"
        with ScriptedLLM(script) as llm:
            settings = load_settings(
                overrides={
                    "llm.base_url": llm.url,
                    "llm.api_key": "sk-real-0123456789",
                    "analysis.mode": "investigate",
                    "prometheus.url": stack.prometheus_url,
                    "predictor.url": stack.predictor_url,
                    "audit.path": str(audit),
                    **{f"analysis.investigation.{k}": v for k, v in limits.items()},
                }
            )
            source = TextFileLogs(logs or stack.predictor_log)
            toolbox = dataclasses.replace(build_toolbox(settings), logs=source)
            service = build_analysis_service(settings, toolbox=toolbox)
            notification = next(read_source(str(EXAMPLES / "predictor-down.json"))).notification
            analysis = service.analyze(notification, source="t")  # type: ignore[arg-type]
        records = [load_record(line) for line in audit.read_bytes().splitlines()]
        steps = [r for r in records if r and r["kind"] == "investigation_step"]
        return analysis, steps, llm

    return run


def forced(body: dict[str, Any]) -> bool:
    return isinstance(body.get("tool_choice"), dict)


def test_normal_investigation_reads_real_metrics_status_and_logs(investigate) -> None:
    cited = [{"step": 1, "finding": "up is 1"}, {"step": 3, "finding": "healthy"}]
    analysis, steps, _ = investigate(
        [
            ToolCalls([UP, ("query_prometheus", {**UP[1], "range": "2m"})]),
            ToolCalls([("predictor_status", {}), ("search_logs", {"since": "1h"})]),
            Answer({**VERDICT, "evidence": cited}),
        ]
    )
    assert (analysis.analyzer, analysis.fallback_reason) == ("llm", None)
    assert analysis.investigation is not None and analysis.investigation.tool_calls == 4
    assert [e.source for e in analysis.evidence] == ["investigation:1", "investigation:3"]
    assert [s["error"] for s in steps] == [None] * 4
    assert '"series":1' in steps[0]["result"] and '"value":1.0' in steps[0]["result"]
    assert '"type":"range"' in steps[1]["result"] and '"max":1.0' in steps[1]["result"]
    assert '"healthy":true' in steps[2]["result"]
    assert '"source":"file"' in steps[3]["result"]


def test_a_promql_error_from_prometheus_is_given_to_the_model(investigate) -> None:
    analysis, steps, llm = investigate(
        [ToolCalls([("query_prometheus", {"promql": "sum(rate(up[5m]"})]), Answer(VERDICT)]
    )
    assert (analysis.analyzer, analysis.fallback_reason) == ("llm", None)
    assert "parse error" in steps[0]["error"]
    tool_message = next(m for m in llm.requests[1]["messages"] if m["role"] == "tool")
    assert "parse error" in tool_message["content"]


def test_malformed_and_unknown_calls_fall_back(investigate) -> None:
    malformed, steps, _ = investigate([ToolCalls([("query_prometheus", "{")]), Answer(VERDICT)])
    assert "malformed arguments" in (malformed.fallback_reason or "")
    assert malformed.analyzer == "llm" and steps[0]["error"].startswith("malformed")
    unknown, _, _ = investigate([ToolCalls([("delete_series", {"match": "up"})]), Answer(VERDICT)])
    assert "unknown tool 'delete_series'" in (unknown.fallback_reason or "")


def test_a_loop_that_never_answers_ends_at_the_limit(investigate) -> None:
    analysis, steps, _llm = investigate([ToolCalls([UP])], max_tool_calls=3)
    assert analysis.analyzer == "rules"
    assert "max_tool_calls limit reached and no verdict given" in (analysis.fallback_reason or "")
    assert [s["error"] is None for s in steps] == [True, True, True, False]
    partial, _, _ = investigate(
        lambda body: Answer(VERDICT) if forced(body) else ToolCalls([UP]), max_tool_calls=3
    )
    assert partial.investigation is not None
    assert (partial.investigation.outcome, partial.investigation.limit) == (
        "partial",
        "max_tool_calls",
    )


def test_a_log_search_that_times_out(investigate, tmp_path: Path) -> None:
    fifo = tmp_path / "hung.log"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        analysis, steps, _ = investigate(
            [ToolCalls([("search_logs", {"query": "error"}), UP]), Answer(VERDICT)],
            logs=fifo,
            tool_timeout=1.0,
        )
    finally:
        os.close(writer)
    assert (analysis.analyzer, analysis.fallback_reason) == ("llm", None)
    assert steps[0]["error"] == "logs (timeout): no log lines within 1 s"
    assert steps[1]["error"] is None  # the next tool still ran
