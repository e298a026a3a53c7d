"""Investigation mode: the real langchain-openai client against a scripted
OpenAI-compatible server (real HTTP) that calls tools; Prometheus, the predictor and
Alertmanager answer through pytest-httpx (unit tests: the real Prometheus is in
test_investigate_real.py); the logs come from a real file (tests/helpers/text_logs.py).

Every fault ends in an analysis: the investigation's verdict (the policy applied),
or the single-shot LLM's, or the rules', with a fallback reason saying why; every
tool call is an `investigation_step` audit record linked to its analysis.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from market_agent.analysis.analyzer import AnalysisService
from market_agent.analysis.factory import build_analysis_service, build_toolbox
from market_agent.analysis.investigate import InvestigatingAnalyzer
from market_agent.audit import AuditLog
from market_agent.audit.query import load_record
from market_agent.inputs import read_source
from market_agent.models import Analysis, Notification
from market_agent.settings import Settings, load_settings
from market_agent.state import AppState
from tests.cli_helpers import run_cli
from tests.conftest import EXAMPLES, ROOT
from tests.helpers.scripted_llm import Answer, ScriptedLLM, Step, ToolCalls
from tests.helpers.text_logs import TextFileLogs

PROMETHEUS = "http://prometheus.test"
QUERY_URL = re.compile(r"http://prometheus\.test/api/v1/query(_range)?\?.*")
MOCKED = {"prometheus.test", "predictor.test", "alertmanager.test"}
pytestmark = pytest.mark.httpx_mock(
    should_mock=lambda request: request.url.host in MOCKED,
    assert_all_responses_were_requested=False,
)

VERDICT = {
    "issue_detected": True,
    "severity": "critical",
    "issue_type": "resource",
    "description": "The predictor is down: it runs out of memory in a loop.",
    "recommended_actions": ["Find the leak", "Raise the memory limit"],
    "proposed_action": "escalate",
    "confidence": 0.85,
    "requires_immediate_action": True,
}
UP = ("query_prometheus", {"promql": 'up{job="market-predictor"}'})
LOG_LINES = [
    "2026-12-03 10:00:00,000 INFO predictor: started, model v3",
    "2099-01-01 10:00:01,000 ERROR predictor: MemoryError while loading features",
    "2099-01-01 10:00:02,000 ERROR predictor: MemoryError while loading features "
    "(Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345)",
]


def vector(value: str) -> dict[str, Any]:
    metric = {"__name__": "up", "job": "market-predictor", "instance": "127.0.0.1:8000"}
    result = [{"metric": metric, "value": [1700000000.5, value]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def load(name: str = "predictor-down.json") -> Notification:
    return next(read_source(str(EXAMPLES / name))).notification  # type: ignore[union-attr]


def settings_for(url: str, tmp_path: Path, **limits: Any) -> Settings:
    overrides = {
        "llm.base_url": url,
        "llm.api_key": "sk-investigate-0123456789",
        "analysis.mode": "investigate",
        "prometheus.url": PROMETHEUS,
        "prometheus.timeout": 2.0,
        "predictor.url": "http://predictor.test",
        "alertmanager.url": "http://alertmanager.test",
        "audit.path": str(tmp_path / "audit.jsonl"),
        **{f"analysis.investigation.{key}": value for key, value in limits.items()},
    }
    return load_settings(overrides=overrides)


@dataclasses.dataclass
class Investigation:
    server: ScriptedLLM
    service: AnalysisService
    settings: Settings
    logs: TextFileLogs

    def analyze(self, name: str = "predictor-down.json") -> Analysis:
        return self.service.analyze(load(name), source="t", notification_id="n-" + "1" * 30)

    def steps(self) -> list[dict[str, Any]]:
        path = self.settings.audit.path
        if not path.exists():
            return []
        records = [load_record(line) for line in path.read_bytes().splitlines()]
        return [r for r in records if r and r["kind"] == "investigation_step"]


Start = Callable[..., Investigation]


@pytest.fixture
def investigation(tmp_path: Path) -> Iterator[Start]:
    servers: list[ScriptedLLM] = []
    log_file = tmp_path / "predictor.log"
    log_file.write_text("\n".join(LOG_LINES) + "\n")

    def start(
        script: list[Step] | Callable[[dict[str, Any]], Step],
        logs: Path = log_file,
        **limits: Any,
    ) -> Investigation:
        server = ScriptedLLM(script).__enter__()
        servers.append(server)
        settings = settings_for(server.url, tmp_path, **limits)
        source = TextFileLogs(logs)
        toolbox = dataclasses.replace(build_toolbox(settings), logs=source)
        service = build_analysis_service(settings, toolbox=toolbox)
        return Investigation(server, service, settings, source)

    yield start
    for server in servers:
        server.__exit__()


def forced(request: dict[str, Any]) -> bool:
    """The request takes the tools away but the verdict (a limit was reached)."""
    return isinstance(request.get("tool_choice"), dict)


def tool_messages(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


# --- a normal investigation --------------------------------------------------------


def test_investigation_gathers_evidence_and_cites_it(investigation: Start, httpx_mock) -> None:
    httpx_mock.add_response(url=QUERY_URL, json=vector("0"))
    cited = [{"step": 1, "finding": "up is 0"}, {"step": 2, "finding": "MemoryError twice"}]
    run = investigation(
        [
            ToolCalls([UP]),
            ToolCalls([("search_logs", {"query": "memoryerror", "level": "error"})]),
            Answer({**VERDICT, "evidence": cited}),
        ]
    )
    analysis = run.analyze()

    assert (analysis.analyzer, analysis.fallback_reason) == ("llm", None)
    assert analysis.investigation is not None
    assert analysis.investigation.outcome == "answered"
    assert analysis.investigation.tool_calls == 2
    assert [(e.source, e.summary) for e in analysis.evidence] == [
        ("investigation:1", "up is 0"),
        ("investigation:2", "MemoryError twice"),
    ]
    # The PromQL went to Prometheus's HTTP API as data, nothing else was called.
    (prometheus,) = httpx_mock.get_requests()
    assert prometheus.url.path == "/api/v1/query"
    assert prometheus.url.params["query"] == 'up{job="market-predictor"}'
    # The model saw each result fenced and numbered, the log secret redacted.
    second, third = run.server.requests[1], run.server.requests[2]
    assert tool_messages(second)[0].startswith('<tool_data step="1">')
    logs = tool_messages(third)[1]
    assert '"lines":2' in logs and "MemoryError" in logs
    assert "abcdefghijklmnopqrstuvwxyz012345" not in json.dumps(third)
    assert {t["function"]["name"] for t in run.server.requests[0]["tools"]} == {
        "query_prometheus",
        "predictor_status",
        "alertmanager_alerts",
        "search_logs",
        "action_history",
        "alert_verdict",
    }


def test_every_step_is_an_audit_record_linked_to_its_analysis(
    investigation: Start, httpx_mock
) -> None:
    httpx_mock.add_response(url=QUERY_URL, json=vector("0"))
    run = investigation([ToolCalls([UP, ("search_logs", {"query": "bearer"})]), Answer(VERDICT)])
    analysis = run.analyze()
    steps = run.steps()
    assert [(s["step"], s["tool"], s["error"]) for s in steps] == [
        (1, "query_prometheus", None),
        (2, "search_logs", None),
    ]
    for step in steps:
        assert step["analysis_id"] == analysis.id
        assert step["notification_id"] == analysis.notification_id
        assert step["alertnames"] == ["PredictorDown"]
        assert step["elapsed_ms"] >= 0
    assert steps[0]["arguments"] == {"promql": 'up{job="market-predictor"}'}
    assert '"value":0.0' in steps[0]["result"]
    assert "abcdefghijklmnopqrstuvwxyz012345" not in json.dumps(steps)
    assert "[REDACTED]" in steps[1]["result"]


def test_a_result_is_cut_to_max_result_chars(investigation: Start, httpx_mock) -> None:
    many = [
        {"metric": {"instance": f"host-{i}-" + "x" * 40}, "value": [1.0, "1"]} for i in range(50)
    ]
    body = {"status": "success", "data": {"resultType": "vector", "result": many}}
    httpx_mock.add_response(url=QUERY_URL, json=body)
    run = investigation([ToolCalls([UP]), Answer(VERDICT)], max_result_chars=400)
    run.analyze()
    (step,) = run.steps()
    assert len(step["result"]) == 400 and step["result"].endswith("[…truncated]")
    assert '"series":50' in step["result"]


def test_the_policy_still_has_the_last_word(investigation: Start, httpx_mock) -> None:
    lowered = {**VERDICT, "severity": "low", "proposed_action": "restart"}
    run = investigation([Answer(lowered)])
    analysis = run.analyze("other-service.json")  # not the managed service
    assert analysis.analyzer == "llm"
    assert analysis.proposed_action != "restart"
    assert {o.field for o in analysis.policy_overrides} >= {"proposed_action"}
    assert analysis.investigation is not None and analysis.investigation.tool_calls == 0


# --- faults: the single-shot LLM, then the rules -------------------------------------


def test_malformed_arguments_fall_back_to_the_single_shot_llm(investigation: Start) -> None:
    run = investigation([ToolCalls([("query_prometheus", '{"promql": "up')]), Answer(VERDICT)])
    analysis = run.analyze()
    assert analysis.analyzer == "llm"
    reason = analysis.fallback_reason or ""
    assert "'query_prometheus' has malformed arguments" in reason
    assert reason.endswith("the single-shot LLM answered")
    assert analysis.investigation is not None
    assert analysis.investigation.outcome == "failed"
    assert "tools" not in run.server.requests[-1]  # the single-shot request
    (step,) = run.steps()
    assert step["error"].startswith("malformed arguments")
    assert step["arguments"] == {"raw": '{"promql": "up'}


def test_arguments_outside_the_schema_fall_back(investigation: Start, httpx_mock) -> None:
    bad = ("query_prometheus", {"promql": "up", "url": "http://evil.example/"})
    run = investigation([ToolCalls([bad]), Answer(VERDICT)])
    analysis = run.analyze()
    assert "bad arguments: url: Extra inputs are not permitted" in (analysis.fallback_reason or "")
    assert httpx_mock.get_requests() == []  # nothing was queried


def test_unknown_tool_falls_back_and_runs_nothing(investigation: Start, httpx_mock) -> None:
    run = investigation([ToolCalls([("restart_service", {"now": True})]), Answer(VERDICT)])
    analysis = run.analyze()
    assert analysis.analyzer == "llm"
    assert "unknown tool 'restart_service'" in (analysis.fallback_reason or "")
    assert httpx_mock.get_requests() == []
    assert [s["error"] for s in run.steps()] == ["unknown tool"]


def test_huge_arguments_are_cut_in_the_audit_log(investigation: Start) -> None:
    run = investigation([ToolCalls([("dump", {"x": "y" * 100_000})]), Answer(VERDICT)])
    run.analyze()
    (step,) = run.steps()
    assert step["arguments"] == {"raw": '{"x": "' + "y" * 493}


def test_a_loop_that_never_answers_stops_at_max_tool_calls_then_rules(
    investigation: Start, httpx_mock
) -> None:
    httpx_mock.add_response(url=QUERY_URL, json=vector("1"), is_reusable=True)
    run = investigation([ToolCalls([UP])])  # the last step repeats: tool calls forever
    analysis = run.analyze()

    assert analysis.analyzer == "rules"
    reason = analysis.fallback_reason or ""
    assert "max_tool_calls limit reached and no verdict given" in reason
    assert "single-shot LLM: LLM output is empty" in reason
    assert len(httpx_mock.get_requests()) == 6  # the limit, enforced outside the model
    steps = run.steps()
    assert [s["error"] for s in steps][-1].startswith("refused: the limit of 6 tool calls")
    # 7 rounds with tools, 1 with the verdict tool only (forced), 1 single-shot.
    assert len(run.server.requests) == 9
    last_investigation_request = run.server.requests[-2]
    assert [t["function"]["name"] for t in last_investigation_request["tools"]] == ["alert_verdict"]


def test_a_limit_with_a_usable_answer_is_reported_as_partial(
    investigation: Start, httpx_mock
) -> None:
    httpx_mock.add_response(url=QUERY_URL, json=vector("1"), is_reusable=True)
    cited = [{"step": 2, "finding": "up is 1"}, {"step": 3, "finding": "refused: not evidence"}]
    run = investigation(
        lambda body: Answer({**VERDICT, "evidence": cited}) if forced(body) else ToolCalls([UP]),
        max_tool_calls=2,
    )
    analysis = run.analyze()
    assert (analysis.analyzer, analysis.fallback_reason) == ("llm", None)
    assert analysis.investigation is not None
    assert analysis.investigation.model_dump(exclude={"elapsed_ms"}) == {
        "outcome": "partial",
        "tool_calls": 2,
        "limit": "max_tool_calls",
    }
    assert [e.source for e in analysis.evidence] == ["investigation:2"]


def test_the_deadline_ends_the_tool_phase_and_asks_for_the_verdict(
    investigation: Start, tmp_path: Path
) -> None:
    fifo = tmp_path / "hanging.log"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer that never writes
    try:
        run = investigation(
            lambda body: (
                Answer(VERDICT) if forced(body) else ToolCalls([("search_logs", {"since": "1h"})])
            ),
            logs=fifo,
            deadline=4.0,
            tool_timeout=60.0,
        )
        analysis = run.analyze()
    finally:
        os.close(writer)
    assert analysis.analyzer == "llm"
    assert analysis.investigation is not None
    assert analysis.investigation.outcome == "partial"
    assert analysis.investigation.limit == "deadline"
    # The tool's own timeout was cut to the deadline's tool phase.
    assert run.steps()[0]["error"].startswith("logs (timeout): no log lines within")


def test_token_budget_ends_the_tool_phase(investigation: Start, httpx_mock) -> None:
    httpx_mock.add_response(url=QUERY_URL, json=vector("1"))
    run = investigation(
        lambda body: Answer(VERDICT) if forced(body) else ToolCalls([UP], prompt_tokens=1600),
        max_input_tokens=2000,
    )
    analysis = run.analyze()
    assert analysis.investigation is not None
    assert (analysis.investigation.outcome, analysis.investigation.limit) == ("partial", "tokens")
    assert analysis.usage is not None and analysis.usage.input_tokens == 1600 + 321


def test_output_tokens_cap_every_request(investigation: Start) -> None:
    run = investigation([Answer(VERDICT)], max_output_tokens=300)
    run.analyze()
    body = run.server.requests[0]
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 300


def test_a_promql_error_is_a_result_the_model_can_use(investigation: Start, httpx_mock) -> None:
    error = {
        "status": "error",
        "errorType": "bad_data",
        "error": "1:5: parse error: unclosed left parenthesis",
    }
    httpx_mock.add_response(url=QUERY_URL, status_code=400, json=error)
    cited = [{"step": 1, "finding": "the query failed"}]
    run = investigation(
        [
            ToolCalls([("query_prometheus", {"promql": "sum("})]),
            Answer({**VERDICT, "evidence": cited}),
        ]
    )
    analysis = run.analyze()
    assert (analysis.analyzer, analysis.fallback_reason) == ("llm", None)
    assert analysis.evidence == []  # an error is not evidence
    (step,) = run.steps()
    assert "unclosed left parenthesis" in step["error"]
    assert "unclosed left parenthesis" in tool_messages(run.server.requests[1])[0]


def test_a_log_search_that_times_out_is_a_result(investigation: Start, tmp_path: Path) -> None:
    fifo = tmp_path / "hanging.log"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        run = investigation(
            [ToolCalls([("search_logs", {"level": "error"})]), Answer(VERDICT)],
            logs=fifo,
            tool_timeout=0.5,
        )
        analysis = run.analyze()
    finally:
        os.close(writer)
    assert (analysis.analyzer, analysis.fallback_reason) == ("llm", None)
    assert run.steps()[0]["error"] == "logs (timeout): no log lines within 0.5 s"
    assert run.logs.reads == 1


def test_model_errors_fall_back_to_single_shot_then_rules(investigation: Start) -> None:
    run = investigation([Answer("not json at all")])
    analysis = run.analyze()
    assert analysis.analyzer == "rules"
    assert (analysis.fallback_reason or "").startswith(
        "investigation failed: LLM output is not JSON"
    )
    assert "; single-shot LLM: LLM output is not JSON" in (analysis.fallback_reason or "")


def test_an_unwritable_audit_log_stops_the_investigation(
    investigation: Start, httpx_mock, tmp_path: Path
) -> None:
    httpx_mock.add_response(url=QUERY_URL, json=vector("0"))
    run = investigation([ToolCalls([UP]), Answer(VERDICT)])
    (tmp_path / "audit.jsonl").write_text("not an audit log\n")
    analysis = run.analyze()
    assert analysis.analyzer == "llm"
    assert "investigation step not audited: audit log" in (analysis.fallback_reason or "")


# --- settings, listen and the command line -------------------------------------------


def test_listen_builds_the_investigator_from_analysis_mode(tmp_path: Path) -> None:
    settings = settings_for("http://127.0.0.1:9/v1", tmp_path)
    service = AppState.of(settings).analysis_service()
    assert isinstance(service.llm.inner, InvestigatingAnalyzer)  # type: ignore[union-attr]
    single = settings.model_copy(deep=True)
    single.analysis.mode = "single"
    inner = build_analysis_service(single).llm.inner  # type: ignore[union-attr]
    assert not isinstance(inner, InvestigatingAnalyzer)


def test_limits_are_validated_settings(tmp_path: Path) -> None:
    from market_agent.errors import ConfigError

    with pytest.raises(ConfigError, match=r"analysis\.investigation\.max_tool_calls"):
        settings_for("http://x/v1", tmp_path, max_tool_calls=-1)
    assert settings_for("http://x/v1", tmp_path).analysis.investigation.deadline == 60.0


def test_cli_investigate_and_history_timeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, httpx_mock
) -> None:
    httpx_mock.add_response(url=QUERY_URL, json=vector("0"))
    cited = [{"step": 1, "finding": "up is 0"}]
    with ScriptedLLM([ToolCalls([UP]), Answer({**VERDICT, "evidence": cited})]) as llm:
        for key, value in {
            "LLM__BASE_URL": llm.url,
            "LLM__API_KEY": "sk-cli-0123456789",
            "PROMETHEUS__URL": PROMETHEUS,
            "AUDIT__PATH": str(tmp_path / "audit.jsonl"),
        }.items():
            monkeypatch.setenv(f"MARKET_AGENT_{key}", value)
        result = run_cli(
            "analyze", "--investigate", "--json", str(EXAMPLES / "predictor-down.json")
        )
    assert result.exit_code == 0, result.stderr
    (row,) = result.json_lines()
    assert row["investigation"]["outcome"] == "answered"
    assert row["evidence"][0]["source"] == "investigation:1"

    shown = run_cli("history", "show", row["id"][:8])
    assert shown.exit_code == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert f"investigation of analysis {row['id'][:12]}" in text
    assert "1 " in text and "query_prometheus" in text
    assert 'args: {"promql": "up{job=\\"market-predictor\\"}"}' in text
    assert "investigation answered, 1 tool calls; evidence: investigation:1" in text

    raw = run_cli("history", "show", row["notification_id"], "--json")
    kinds = [line["kind"] for line in raw.json_lines()]
    assert kinds == ["investigation_step", "analysis"]

    action = {"action_id": "act-0123456789", "analysis_id": row["id"], "action": "escalate"}
    AuditLog(tmp_path / "audit.jsonl").append("action", {**action, "step": "result"})
    chain = run_cli("history", "show", "act-0123456789")
    assert chain.exit_code == 0, chain.stderr
    assert "act-0123456789" in chain.stdout
    assert f"investigation of analysis {row['id'][:12]}" in chain.stdout


def test_investigate_with_the_llm_off_says_so() -> None:
    result = run_cli("analyze", "--investigate", "--json", str(EXAMPLES / "predictor-down.json"))
    assert result.exit_code == 0, result.stderr
    (row,) = result.json_lines()
    assert row["analyzer"] == "rules"
    assert row["fallback_reason"].startswith("investigation needs the LLM, which is off")


def test_cli_investigate_without_the_llm_is_a_usage_error() -> None:
    result = run_cli("analyze", "--investigate", "--no-llm", str(EXAMPLES / "resolved.json"))
    assert result.exit_code == 2
    assert "--investigate" in result.stderr and "Traceback" not in result.stderr


def test_history_show_unknown_or_short_id_still_says_so(tmp_path: Path) -> None:
    result = run_cli("history", "show", "abcdef1234")
    assert result.exit_code != 0
    assert "no action 'abcdef1234'" in result.stderr
    short = run_cli("history", "show", "abc")
    assert short.exit_code == 2 and "at least 6 characters" in short.stderr


def test_investigation_modules_import_no_langchain() -> None:
    code = (
        "import sys, market_agent.analysis.investigate, market_agent.analysis.tools, "
        "market_agent.commands.history; "
        "print(any(m.startswith('langchain') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.stdout.strip() == "False", out.stderr


def test_tool_call_ids_get_their_results(investigation: Start, httpx_mock) -> None:
    """OpenAI requires a tool message for every call id, refused calls included."""
    httpx_mock.add_response(url=QUERY_URL, json=vector("1"), is_reusable=True)
    run = investigation(
        lambda body: Answer(VERDICT) if forced(body) else ToolCalls([UP, UP, UP]),
        max_tool_calls=2,
    )
    analysis = run.analyze()
    assert analysis.investigation is not None and analysis.investigation.outcome == "partial"
    last = run.server.requests[-1]
    calls = [c["id"] for m in last["messages"] if m.get("tool_calls") for c in m["tool_calls"]]
    answered = [m["tool_call_id"] for m in last["messages"] if m["role"] == "tool"]
    assert len(answered) == len(calls) == 3


def test_eval_llm_measures_investigations(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.test_eval_llm import dev_rows, eval_module

    def script(body: dict[str, Any]) -> Step:
        return Answer(VERDICT) if tool_messages(body) else ToolCalls([("predictor_status", {})])

    with ScriptedLLM(script) as llm:
        argv = ["--base-url", llm.url, "--model", "m", "--data", str(dev_rows(tmp_path))]
        argv += ["--investigate", "--predictor-url", "http://127.0.0.1:9", "--json"]
        eval_module().main(argv)
    results = json.loads(capsys.readouterr().out)
    assert results["llm"]["tool_calls"] == 4
    assert results["llm"]["investigations"] == {"answered": 4}
    assert results["rules"]["investigations"] == {}


def test_timeline_shows_model_text_inert() -> None:
    from rich.console import Console

    from market_agent.commands.investigation_view import investigation_timeline

    step = {
        "step": 1,
        "ts": "2026-12-03T14:00:00.000000Z",
        "tool": "\x1b]0;owned\x07evil",
        "arguments": {"q": "\x1b[2J"},
        "error": "unknown tool \x9b31m",
        "elapsed_ms": 0.0,
    }
    console = Console(width=100, file=io.StringIO(), force_terminal=False)
    console.print(investigation_timeline("a" * 32, [step], None))
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b" not in shown and "\x9b" not in shown and "\x07" not in shown
    assert "\\x1b]0;owned\\x07evil" in shown and "\\x9b31m" in shown


def test_listen_investigates_and_links_every_step(tmp_path: Path) -> None:
    """A real Listener (analysis threads) with analysis.mode = investigate: each
    notification's steps link to its analysis, and the journal's records and the steps
    written beside them form one intact hash chain."""
    from market_agent.listen.admission import Listener
    from tests.helpers import free_port
    from tests.test_listen_pipeline import admit, make_notification

    def script(body: dict[str, Any]) -> Step:
        return Answer(VERDICT) if tool_messages(body) else ToolCalls([("predictor_status", {})])

    with ScriptedLLM(script) as llm:
        settings = settings_for(llm.url, tmp_path)
        settings.predictor.url = f"http://127.0.0.1:{free_port()}"  # refused: a tool error
        state = AppState.of(settings)
        assert state.audit_log is not None
        listener = Listener(state.audit_log, state.analysis_service(), workers=2)
        listener.start()
        try:
            admit(listener, *(make_notification(f"fp{n}") for n in range(3)))
        finally:
            assert listener.stop(60) == 0
            state.close()
    records = [load_record(line) for line in settings.audit.path.read_bytes().splitlines()]
    analyses = {r["id"]: r for r in records if r and r["kind"] == "analysis"}
    steps = [r for r in records if r and r["kind"] == "investigation_step"]
    assert len(analyses) == 3 and len(steps) == 3
    for step in steps:
        analysis = analyses[step["analysis_id"]]
        assert step["notification_id"] == analysis["notification_id"]
        assert "connection refused" in step["error"]
        assert analysis["investigation"]["outcome"] == "answered"
    assert state.audit_log.verify().ok
