"""`market-agent status`: every state and exit code, the JSON schema, time bounds.

The services are mocked with pytest-httpx (one router for all three), except for
the tests of time bounds, which use real loopback sockets that refuse or never answer.
"""

from __future__ import annotations

import json
import socket
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.cli_helpers import run_cli

PREDICTOR, PROMETHEUS, ALERTMANAGER = "predictor.test", "prometheus.test", "alertmanager.test"


def _target(health: str = "up", last_error: str = "") -> dict:
    return {
        "labels": {"job": "market-predictor", "instance": "predictor.test:8000"},
        "scrapePool": "market-predictor",
        "scrapeUrl": "http://predictor.test:8000/metrics",
        "health": health,
        "lastError": last_error,
        "lastScrape": "2026-01-01T00:00:00Z",
    }


def _am_alert(name: str, state: str = "active", silenced_by: tuple[str, ...] = ()) -> dict:
    return {
        "labels": {"alertname": name, "service": "market-predictor", "severity": "warning"},
        "annotations": {"summary": f"{name} summary"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2026-01-01T01:00:00Z",
        "fingerprint": name.lower(),
        "status": {"state": state, "silencedBy": list(silenced_by), "inhibitedBy": []},
    }


def _silence(silence_id: str, **labels: str) -> dict:
    return {
        "id": silence_id,
        "status": {"state": "active"},
        "matchers": [{"name": k, "value": v, "isRegex": False} for k, v in labels.items()],
        "createdBy": "oncall",
        "comment": "maintenance",
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2026-01-01T02:00:00Z",
    }


class Stack:
    """What the three mocked services answer; tests change attributes before running."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.health: tuple[int, object] = (
            200,
            {"status": "healthy", "version": "1.4.2", "uptime": 7384.2},
        )
        self.ready = 200
        self.targets = [_target()]
        self.values = {"rate": "20.5", "errors": "0.01", "p95": "0.042"}
        self.query_errors: dict[str, str] = {}
        self.rule_alerts: list[dict] = []
        self.am_alerts: list[dict] = []
        self.silences: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host in self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        path = request.url.path
        if request.url.host == PREDICTOR:
            if path == "/health":
                return httpx.Response(self.health[0], json=self.health[1])
            return httpx.Response(200, json={"version": "1.4.2", "uptime_seconds": 7384.2})
        if request.url.host == PROMETHEUS:
            return self._prometheus(request)
        if path == "/api/v2/status":
            return httpx.Response(200, json={"versionInfo": {"version": "0.27.0"}})
        if path == "/api/v2/alerts":
            return httpx.Response(200, json=self.am_alerts)
        return httpx.Response(200, json=self.silences)

    def _prometheus(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/-/ready":
            return httpx.Response(self.ready, text="ready")
        if path == "/api/v1/targets":
            return _success({"activeTargets": self.targets})
        if path == "/api/v1/alerts":
            return _success({"alerts": self.rule_alerts})
        query = request.url.params["query"]
        name = "p95" if "duration" in query else "errors" if "5.." in query else "rate"
        if name in self.query_errors:
            body = {"status": "error", "errorType": "bad_data", "error": self.query_errors[name]}
            return httpx.Response(400, json=body)
        result = [{"metric": {}, "value": [1.0, self.values[name]]}]
        return _success({"resultType": "vector", "result": result})


def _success(data: dict) -> httpx.Response:
    return httpx.Response(200, json={"status": "success", "data": data})


@pytest.fixture
def stack(httpx_mock, monkeypatch) -> Stack:
    for name, host, port in [
        ("PREDICTOR", PREDICTOR, 8000),
        ("PROMETHEUS", PROMETHEUS, 9090),
        ("ALERTMANAGER", ALERTMANAGER, 9093),
    ]:
        monkeypatch.setenv(f"MARKET_AGENT_{name}__URL", f"http://{host}:{port}")
    fake = Stack()
    httpx_mock.add_callback(fake, is_reusable=True)
    return fake


def status_json(*args: str) -> tuple[int, dict]:
    result = run_cli("status", "--json", *args)
    [report] = result.json_lines()
    return result.exit_code, report


# States and exit codes ------------------------------------------------------------


def test_all_healthy_exits_0_with_the_documented_schema(stack):
    code, report = status_json()
    assert code == 0
    assert report["overall"] == "healthy"
    assert report["problems"] == []
    assert set(report) == {
        "schema_version",
        "overall",
        "checked_at",
        "duration_ms",
        "problems",
        "predictor",
        "prometheus",
        "alertmanager",
        "agent",
    }
    assert report["schema_version"] == 1
    assert report["predictor"] == {
        "url": "http://predictor.test:8000",
        "state": "healthy",
        "healthy": True,
        "version": "1.4.2",
        "uptime_seconds": 7384.2,
        "response_time_ms": report["predictor"]["response_time_ms"],
        "reasons": [],
        "error": None,
    }
    prometheus = report["prometheus"]
    assert prometheus["state"] == "healthy"
    assert prometheus["ready"] is True
    assert prometheus["target"] == {
        "health": "up",
        "instance": "predictor.test:8000",
        "scrape_url": "http://predictor.test:8000/metrics",
        "last_error": None,
        "last_scrape": "2026-01-01T00:00:00Z",
    }
    assert (prometheus["request_rate"], prometheus["error_ratio"]) == (20.5, 0.01)
    assert prometheus["p95_latency_seconds"] == 0.042
    assert report["alertmanager"] == {
        "url": "http://alertmanager.test:9093",
        "state": "healthy",
        "version": "0.27.0",
        "alerts": [],
        "silences": [],
        "error": None,
    }
    assert set(report["agent"]) == {"version", "config_file", "audit", "last_analysis"}


def test_unhealthy_predictor_exits_1(stack):
    stack.health = (503, {"status": "unhealthy", "reasons": ["memory 300 MiB > 200 MiB"]})
    code, report = status_json()
    assert code == 1
    assert report["overall"] == "unhealthy"
    predictor = report["predictor"]
    assert (predictor["state"], predictor["healthy"]) == ("unhealthy", False)
    assert predictor["version"] == "1.4.2"  # from /status when /health has no version
    assert report["problems"] == ["predictor unhealthy: memory 300 MiB > 200 MiB"]


def test_unreachable_predictor_exits_1(stack):
    stack.down.add(PREDICTOR)
    code, report = status_json()
    assert code == 1
    assert report["overall"] == "unhealthy"
    assert report["predictor"]["state"] == "unreachable"
    assert report["predictor"]["error"] == {
        "kind": "connection_refused",
        "message": "connection refused",
        "status_code": None,
    }
    assert report["problems"][0] == "predictor unreachable: connection refused"


def test_predictor_http_error_is_unhealthy(stack):
    stack.health = (404, {"error": "no such endpoint: /health"})
    code, report = status_json()
    assert code == 1
    assert report["predictor"]["state"] == "unhealthy"
    assert report["predictor"]["error"]["status_code"] == 404


def test_unreachable_prometheus_is_degraded(stack):
    stack.down.add(PROMETHEUS)
    code, report = status_json()
    assert code == 1
    assert report["overall"] == "degraded"
    assert report["prometheus"]["state"] == "unreachable"
    assert report["prometheus"]["target"] is None
    assert report["problems"] == ["prometheus unreachable: connection refused"]


def test_unreachable_alertmanager_is_degraded_and_prometheus_alerts_count(stack):
    stack.down.add(ALERTMANAGER)
    stack.rule_alerts = [
        {
            "labels": {"alertname": "PredictorHighLatency", "job": "market-predictor"},
            "annotations": {"summary": "slow"},
            "state": "firing",
            "activeAt": "2026-01-01T00:00:00Z",
            "value": "2.5",
        },
        {"labels": {"alertname": "OtherService", "job": "db"}, "state": "firing"},
    ]
    code, report = status_json()
    assert code == 1
    assert report["overall"] == "degraded"
    assert report["alertmanager"]["state"] == "unreachable"
    assert [a["alertname"] for a in report["prometheus"]["alerts"]] == ["PredictorHighLatency"]
    assert "alert PredictorHighLatency is firing (no severity)" in report["problems"]


def test_everything_unreachable(stack):
    stack.down.update({PREDICTOR, PROMETHEUS, ALERTMANAGER})
    code, report = status_json()
    assert code == 1
    assert report["overall"] == "unhealthy"
    assert len(report["problems"]) == 3


def test_active_alert_for_the_predictor_is_degraded(stack):
    stack.am_alerts = [_am_alert("PredictorHighLatency")]
    code, report = status_json()
    assert code == 1
    assert report["overall"] == "degraded"
    [alert] = report["alertmanager"]["alerts"]
    assert alert == {
        "alertname": "PredictorHighLatency",
        "state": "active",
        "severity": "warning",
        "summary": "PredictorHighLatency summary",
        "starts_at": "2026-01-01T00:00:00+00:00",
        "silenced_by": [],
    }
    assert report["problems"] == ["alert PredictorHighLatency is firing (warning)"]


def test_silenced_alert_does_not_degrade_and_its_silence_is_shown(stack):
    stack.am_alerts = [_am_alert("PredictorHighLatency", "suppressed", ("s1",))]
    stack.silences = [
        _silence("s1", alertname="PredictorHighLatency"),
        _silence("s2", service="market-predictor"),
        _silence("s3", service="other"),
    ]
    code, report = status_json()
    assert code == 0
    assert [s["id"] for s in report["alertmanager"]["silences"]] == ["s1", "s2"]
    assert report["alertmanager"]["silences"][1]["matchers"] == ['service="market-predictor"']


def test_alerts_of_other_services_are_ignored(stack):
    other = _am_alert("DatabaseDown")
    other["labels"]["service"] = "database"
    stack.am_alerts = [other]
    code, report = status_json()
    assert code == 0
    assert report["alertmanager"]["alerts"] == []


@pytest.mark.parametrize(
    ("targets", "health", "problem"),
    [
        ([_target("down", "connection refused")], "down", "is down: connection refused"),
        ([_target("unknown")], "unknown", "is unknown"),
        ([], "missing", "is missing"),
    ],
)
def test_target_not_up_is_degraded(stack, targets, health, problem):
    stack.targets = targets
    code, report = status_json()
    assert code == 1
    assert report["overall"] == "degraded"
    assert report["prometheus"]["target"]["health"] == health
    assert report["problems"] == [f"prometheus scrape target of the predictor {problem}"]


def test_prometheus_not_ready_is_degraded(stack):
    stack.ready = 503
    code, report = status_json()
    assert code == 1
    assert report["prometheus"]["ready"] is False
    assert report["problems"] == ["prometheus is not ready yet"]


def test_a_failing_query_degrades_prometheus_with_its_own_message(stack):
    stack.query_errors["p95"] = "1:10: parse error: unexpected identifier"
    code, report = status_json()
    assert code == 1
    assert report["prometheus"]["state"] == "degraded"
    assert report["prometheus"]["p95_latency_seconds"] is None
    assert "bad_data: 1:10: parse error: unexpected identifier" in report["problems"][0]


def test_no_traffic_gives_null_error_ratio(stack):
    stack.values["errors"] = "NaN"
    code, report = status_json()
    assert code == 0
    assert report["prometheus"]["error_ratio"] is None


# Configuration errors: exit 2 ---------------------------------------------------


def test_bad_url_is_a_config_error(monkeypatch):
    monkeypatch.setenv("MARKET_AGENT_PROMETHEUS__URL", "prometheus:9090")
    result = run_cli("status", "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "prometheus.url" in result.stderr


def test_conflicting_credentials_are_a_config_error(monkeypatch):
    monkeypatch.setenv("MARKET_AGENT_ALERTMANAGER__BEARER_TOKEN", "t0ken-value")
    monkeypatch.setenv("MARKET_AGENT_ALERTMANAGER__USERNAME", "ops")
    result = run_cli("status")
    assert result.exit_code == 2
    assert "[alertmanager]: both a bearer token and a username/password" in result.stderr
    assert "t0ken-value" not in result.stderr + result.stdout


def test_missing_config_file_is_a_config_error(tmp_path):
    result = run_cli("--config", str(tmp_path / "nope.toml"), "status")
    assert result.exit_code == 2


def test_watch_interval_must_be_positive():
    result = run_cli("status", "--watch", "0")
    assert result.exit_code == 2


# The agent's own state ----------------------------------------------------------


def test_agent_section_reports_config_audit_and_last_analysis(stack, tmp_path):
    audit = tmp_path / "audit.jsonl"
    records = [
        {"seq": 1, "kind": "notification", "id": "n1"},
        {
            "seq": 2,
            "kind": "analysis",
            "id": "a1",
            "created_at": "2026-01-01T00:00:00Z",
            "severity": "critical",
            "issue_type": "availability",
            "proposed_action": "restart",
            "analyzer": "rules",
            "alerts": [{"alertname": "PredictorDown"}],
        },
        {"seq": 3, "kind": "action", "id": "x"},
    ]
    audit.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    config = tmp_path / "agent.toml"
    config.write_text(f'[audit]\npath = "{audit}"\n')
    code, report = status_json_with_config(config)
    assert code == 0
    agent = report["agent"]
    assert agent["config_file"] == str(config)
    assert agent["audit"] == {
        "enabled": True,
        "path": str(audit),
        "exists": True,
        "size_bytes": audit.stat().st_size,
        "error": None,
    }
    assert agent["last_analysis"] == {
        "id": "a1",
        "created_at": "2026-01-01T00:00:00Z",
        "severity": "critical",
        "issue_type": "availability",
        "proposed_action": "restart",
        "analyzer": "rules",
        "alertnames": ["PredictorDown"],
    }


def status_json_with_config(config: Path) -> tuple[int, dict]:
    result = run_cli("--config", str(config), "status", "--json")
    [report] = result.json_lines()
    return result.exit_code, report


def test_last_analysis_is_found_far_back_in_a_big_log(tmp_path):
    from market_agent.health import last_analysis

    audit = tmp_path / "audit.jsonl"
    analysis = {"kind": "analysis", "id": "old", "severity": "low", "alerts": []}
    filler = json.dumps({"kind": "notification", "payload": "x" * 500}, separators=(",", ":"))
    with audit.open("w") as handle:
        handle.write(json.dumps(analysis, separators=(",", ":")) + "\n")
        for _ in range(1000):  # ~0.5 MiB after it: many chunks to read backwards
            handle.write(filler + "\n")
    found = last_analysis(audit)
    assert found is not None and found.id == "old"
    assert last_analysis(audit, limit=64 * 1024) is None


def test_no_audit_log_yet(stack):
    code, report = status_json()
    assert code == 0
    assert report["agent"]["audit"]["exists"] is False
    assert report["agent"]["last_analysis"] is None


def test_status_never_creates_the_audit_log(stack, audit_path):
    run_cli("status", "--json")
    assert not audit_path.exists()


# Human output and --watch -------------------------------------------------------


def test_human_output(stack, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    stack.am_alerts = [_am_alert("PredictorHighLatency")]
    result = run_cli("status")
    assert result.exit_code == 1
    out = result.stdout
    assert "market-agent status: DEGRADED" in out
    assert "predictor     healthy" in out
    assert "v1.4.2 · up 2 h 3 min" in out
    assert "target up (predictor.test:8000)" in out
    assert "20.5 req/s · 1.0% errors · p95 42 ms" in out
    assert "PredictorHighLatency" in out
    assert "alert PredictorHighLatency is firing (warning)" in out
    assert result.stderr == ""


def test_alert_text_is_not_rich_markup(stack, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    alert = _am_alert("PredictorHighLatency")
    alert["annotations"]["summary"] = "[bold red]pwned[/] [link=http://x]y[/link]"
    stack.am_alerts = [alert]
    result = run_cli("status")
    assert "[bold red]pwned[/] [link=http://x]y[/link]" in result.stdout


def test_watch_json_streams_reports_until_interrupted(stack, monkeypatch):
    sleeps = []

    def fake_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt
        stack.down.add(PREDICTOR)  # the second report sees the predictor gone

    monkeypatch.setattr("market_agent.commands.status._pause", fake_sleep)
    result = run_cli("status", "--json", "--watch", "2")
    reports = result.json_lines()
    assert [r["overall"] for r in reports] == ["healthy", "unhealthy"]
    assert sleeps == [2.0, 2.0]
    assert result.exit_code == 130  # Ctrl-C: interrupted, as for every command


# Time bounds, with real sockets ---------------------------------------------------


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _silent_port(stack: ExitStack) -> int:
    """A port that accepts connections (kernel backlog) and never answers."""
    listener = stack.enter_context(socket.socket())
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener.getsockname()[1]


def _point_at(monkeypatch, ports: dict[str, int], timeout: float = 1.0) -> None:
    import market_agent.health  # noqa: F401 - time the probes, not a first import

    for name, port in ports.items():
        monkeypatch.setenv(f"MARKET_AGENT_{name}__URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv(f"MARKET_AGENT_{name}__TIMEOUT", str(timeout))


def test_all_refused_returns_quickly(monkeypatch):
    _point_at(
        monkeypatch, {n: _refused_port() for n in ("PREDICTOR", "PROMETHEUS", "ALERTMANAGER")}
    )
    started = time.monotonic()
    code, report = status_json()
    elapsed = time.monotonic() - started
    assert code == 1
    assert {report[s]["state"] for s in ("predictor", "prometheus", "alertmanager")} == {
        "unreachable"
    }
    assert elapsed < 1.0  # a few quick retries, all probes at once


def test_silent_endpoints_cost_one_timeout_not_three(monkeypatch):
    with ExitStack() as sockets:
        ports = {n: _silent_port(sockets) for n in ("PREDICTOR", "PROMETHEUS", "ALERTMANAGER")}
        _point_at(monkeypatch, ports, timeout=1.0)
        started = time.monotonic()
        code, report = status_json()
        elapsed = time.monotonic() - started
    assert code == 1
    assert report["predictor"]["error"]["kind"] == "timeout"
    assert report["prometheus"]["state"] == "unreachable"
    assert 1.0 <= elapsed < 1.5  # probes in parallel, no retry past the budget


def test_one_silent_endpoint_bounds_the_whole_command(monkeypatch):
    with ExitStack() as sockets:
        ports = {"PREDICTOR": _silent_port(sockets)}
        ports |= {n: _refused_port() for n in ("PROMETHEUS", "ALERTMANAGER")}
        _point_at(monkeypatch, ports, timeout=0.8)
        started = time.monotonic()
        code, report = status_json()
        elapsed = time.monotonic() - started
    assert code == 1
    assert report["predictor"]["error"] == {
        "kind": "timeout",
        "message": "no answer within 0.8 s",
        "status_code": None,
    }
    assert elapsed < 0.8 + 0.5


# Start-up cost and shared clients -------------------------------------------------


def test_help_does_not_import_the_http_stack():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from market_agent.cli import run\n"
        "run(['status', '--help'])\n"
        "print(sorted(m for m in ('httpx', 'tenacity', 'market_agent.health') if m in sys.modules))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "--watch SECONDS" in completed.stdout
    assert completed.stdout.strip().endswith("[]")


def test_clients_are_built_once_per_invocation_and_closed(monkeypatch):
    from market_agent.state import AppState

    monkeypatch.setenv("MARKET_AGENT_PROMETHEUS__TIMEOUT", "2.5")
    state = AppState()
    prometheus = state.prometheus_client()
    assert state.prometheus_client() is prometheus
    assert prometheus.timeout == 2.5
    assert state.predictor_client() is not state.alertmanager_client()
    state.close()
    assert prometheus._http.is_closed
    assert state.prometheus_client() is not prometheus  # a fresh one after close
    state.close()
