"""The shipped Prometheus/Alertmanager configs: promtool/amtool checks, conventions, e2e smoke."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import (
    PROMETHEUS_DIR,
    alert_rules,
    ensure_debian_packages,
    free_port,
    prometheus_alerts,
    prometheus_query,
    render_monitoring_configs,
    start_alertmanager,
    start_predictor,
    start_prometheus,
    wait_until,
)
from tests.helpers.monitoring import REPO_ROOT, load_yaml

EXAMPLES_DIR = REPO_ROOT / "examples" / "alerts"

EXPECTED_ALERTS = {
    "PredictorDown",
    "PredictorHighErrorRate",
    "PredictorHighLatency",
    "PredictorStaleMarketData",
    "PredictorAccuracyDrop",
    "PredictorHighMemory",
    "PredictorRestartingTooOften",
}


def run_tool(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """Run promtool/amtool (installing them if needed); the output is in the assert message."""
    binaries = ensure_debian_packages("promtool", "amtool")
    argv_str = [binaries.get(str(argv[0]), str(argv[0])), *map(str, argv[1:])]
    return subprocess.run(argv_str, capture_output=True, text=True, check=False, cwd=PROMETHEUS_DIR)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args}:\n{result.stdout}\n{result.stderr}"


def test_promtool_check_config() -> None:
    assert_ok(run_tool("promtool", "check", "config", PROMETHEUS_DIR / "prometheus.yml"))


def test_promtool_check_rules() -> None:
    assert_ok(run_tool("promtool", "check", "rules", PROMETHEUS_DIR / "alerts.yml"))


def test_promtool_rule_unit_tests_pass() -> None:
    assert_ok(run_tool("promtool", "test", "rules", PROMETHEUS_DIR / "alerts_test.yml"))


def test_promtool_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """A weakened threshold must break alerts_test.yml (the unit tests are not vacuous)."""
    alerts = (PROMETHEUS_DIR / "alerts.yml").read_text()
    assert "< 0.7" in alerts
    (tmp_path / "alerts.yml").write_text(alerts.replace("< 0.7", "< 0.4"))
    (tmp_path / "alerts_test.yml").write_text((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    result = run_tool("promtool", "test", "rules", tmp_path / "alerts_test.yml")
    assert result.returncode != 0
    assert "PredictorAccuracyDrop" in result.stdout + result.stderr


@pytest.mark.parametrize("shorter", ["0s", "10s"])
def test_a_predictor_down_shorter_than_a_restart_gap_fails_the_unit_tests(
    tmp_path: Path, shorter: str
) -> None:
    """alerts_test.yml pins the timing: 15s, longer than a restart's failed scrapes."""
    alerts = (PROMETHEUS_DIR / "alerts.yml").read_text()
    assert alerts.count("for: 15s") == 1
    (tmp_path / "alerts.yml").write_text(alerts.replace("for: 15s", f"for: {shorter}"))
    (tmp_path / "alerts_test.yml").write_text((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    result = run_tool("promtool", "test", "rules", tmp_path / "alerts_test.yml")
    assert result.returncode != 0
    assert "PredictorDown" in result.stdout + result.stderr


def test_shipped_timings_make_a_fast_and_safe_loop() -> None:
    """What README "Time to recovery" states: a crash is firing within 25s (scrape 5s +
    for 15s + evaluation 5s) and notified 2s later; a restart's gap never fires."""
    prometheus = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    predictor = jobs["market-predictor"]
    assert (predictor["scrape_interval"], predictor["scrape_timeout"]) == ("5s", "4s")
    (group,) = load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]
    assert group["interval"] == "5s"
    assert load_yaml(PROMETHEUS_DIR / "alerts_test.yml")["evaluation_interval"] == "5s"
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert rules["PredictorDown"]["for"] == "15s"  # 3 more failed scrapes than the first
    route = load_yaml(PROMETHEUS_DIR / "alertmanager.yml")["route"]["routes"][0]
    assert (route["group_wait"], route["group_interval"]) == ("2s", "30s")


def test_amtool_check_config() -> None:
    assert_ok(run_tool("amtool", "check-config", PROMETHEUS_DIR / "alertmanager.yml"))


def test_alert_names_are_the_documented_contract() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert sorted(names) == sorted(EXPECTED_ALERTS)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_has_labels_and_annotations(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["labels"]["service"] == "market-predictor"
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert "{{" in annotations["description"], "description should template values"
    expected_url = f"https://runbooks.example.com/market-predictor/{rule['alert']}"
    assert annotations["runbook_url"] == expected_url


def test_every_alert_has_positive_and_negative_unit_tests() -> None:
    tests = load_yaml(PROMETHEUS_DIR / "alerts_test.yml")["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert fired == EXPECTED_ALERTS
    assert quiet == EXPECTED_ALERTS


def test_alertmanager_routes_predictor_alerts_to_market_agent() -> None:
    config = load_yaml(PROMETHEUS_DIR / "alertmanager.yml")
    route = config["route"]
    assert route["routes"][0]["receiver"] == "market-agent"
    assert route["routes"][0]["matchers"] == ['service="market-predictor"']
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert route["receiver"] in receivers
    (webhook,) = receivers["market-agent"]["webhook_configs"]
    assert webhook["url"] == "http://127.0.0.1:9095/webhook/alerts"
    assert webhook["send_resolved"] is True
    assert webhook["http_config"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/etc/market-agent/webhook-token",
    }
    (inhibit,) = config["inhibit_rules"]
    assert inhibit["source_matchers"] == ['alertname="PredictorDown"']


def test_rendered_configs_are_valid_and_use_test_values(tmp_path: Path) -> None:
    token = tmp_path / "token"
    configs = render_monitoring_configs(
        tmp_path, predictor_port=18001, agent_port=18002, alertmanager_port=18003, token_file=token
    )
    assert_ok(run_tool("promtool", "check", "config", configs.prometheus))
    assert_ok(run_tool("amtool", "check-config", configs.alertmanager))
    prometheus = load_yaml(configs.prometheus)
    assert prometheus["global"]["scrape_interval"] == "1s"
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["market-predictor"]["scrape_interval"] == "1s"  # not the shipped 5s
    assert load_yaml(configs.alerts)["groups"][0]["interval"] == "1s"
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in prometheus["scrape_configs"]
    }
    assert targets == {"market-predictor": ["127.0.0.1:18001"], "market-agent": ["127.0.0.1:18002"]}
    alerting = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alerting == ["127.0.0.1:18003"]
    assert {rule.get("for") for rule in alert_rules(configs.alerts)} <= {"0s", None}
    alertmanager = load_yaml(configs.alertmanager)
    webhook = alertmanager["receivers"][1]["webhook_configs"][0]
    assert webhook["url"] == "http://127.0.0.1:18002/webhook/alerts"
    assert webhook["http_config"]["authorization"]["credentials_file"] == str(token)
    assert alertmanager["route"]["routes"][0]["group_wait"] == "1s"


NOTIFICATION_KEYS = {
    "receiver",
    "status",
    "alerts",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "version",
    "groupKey",
    "truncatedAlerts",
}
ALERT_KEYS = {
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "fingerprint",
}
# The metric value behind each example alert's templated annotations.
EXAMPLE_VALUES = {
    "PredictorDown": 0,
    "PredictorHighLatency": 2.31,
    "PredictorHighErrorRate": 0.125,
    "PredictorStaleMarketData": 742,
    "PredictorAccuracyDrop": 0.52,
    "PredictorHighMemory": 1.62e9,
}


def label_fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's alert fingerprint: FNV-1a 64 over sorted label names and values."""
    digest = 14695981039346656037
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in [*part.encode(), 0xFF]:
                digest = ((digest ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{digest:016x}"


def example_notifications() -> dict[str, dict[str, Any]]:
    """Every webhook notification in examples/alerts (files and stream lines)."""
    found = {
        path.name: json.loads(path.read_text())
        for path in sorted(EXAMPLES_DIR.glob("*.json"))
        if path.name != "api-v2-alerts.json"
    }
    lines = (EXAMPLES_DIR / "stream.jsonl").read_text().splitlines()
    found.update({f"stream.jsonl:{n}": json.loads(line) for n, line in enumerate(lines, 1)})
    return found


def test_example_files_are_all_present() -> None:
    names = {path.name for path in EXAMPLES_DIR.iterdir()}
    expected = {
        "predictor-down.json",
        "high-latency.json",
        "high-error-rate.json",
        "stale-market-data.json",
        "accuracy-drop.json",
        "memory-pressure.json",
        "resolved.json",
        "multi-alert-group.json",
        "other-service.json",
        "api-v2-alerts.json",
        "stream.jsonl",
        "README.md",
    }
    assert expected <= names
    assert len((EXAMPLES_DIR / "stream.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("name", sorted(example_notifications()))
def test_example_notification_is_a_version_4_webhook(name: str) -> None:
    payload = example_notifications()[name]
    assert set(payload) == NOTIFICATION_KEYS
    assert payload["version"] == "4"
    assert payload["truncatedAlerts"] == 0
    alerts = payload["alerts"]
    statuses = {alert["status"] for alert in alerts}
    assert payload["status"] == ("firing" if "firing" in statuses else "resolved")
    for alert in alerts:
        assert set(alert) == ALERT_KEYS
        assert alert["fingerprint"] == label_fingerprint(alert["labels"])
        assert (alert["endsAt"] == "0001-01-01T00:00:00Z") == (alert["status"] == "firing")
        assert alert["startsAt"].startswith("2026-11-")
    labels = [alert["labels"] for alert in alerts]
    common = {k: v for k, v in labels[0].items() if all(other.get(k) == v for other in labels)}
    assert payload["commonLabels"] == common
    group = ", ".join(f'{k}="{v}"' for k, v in sorted(payload["groupLabels"].items()))
    assert payload["groupKey"].endswith(f":{{{group}}}")


def test_example_predictor_alerts_match_alerts_yml() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name, payload in example_notifications().items():
        for alert in payload["alerts"]:
            rule = rules.get(alert["labels"]["alertname"])
            if alert["labels"].get("service") != "market-predictor":
                assert rule is None, name
                continue
            assert rule is not None, name
            assert alert["labels"]["severity"] == rule["labels"]["severity"], name
            assert alert["labels"]["job"] == "market-predictor", name
            assert set(alert["annotations"]) == set(rule["annotations"]), name


def example_predictor_alerts() -> list[dict[str, Any]]:
    """Every predictor alert in examples/alerts: notifications and the API v2 list."""
    notified = [
        alert for payload in example_notifications().values() for alert in payload["alerts"]
    ]
    listed = json.loads((EXAMPLES_DIR / "api-v2-alerts.json").read_text())
    return [a for a in [*notified, *listed] if a["labels"].get("service") == "market-predictor"]


def promtool_case(alert: dict[str, Any]) -> dict[str, Any]:
    """A promtool test feeding EXAMPLE_VALUES[alertname] to a rule whose expr is a plain series."""
    name, labels = alert["labels"]["alertname"], alert["labels"]
    selector = ", ".join(f'{k}="{labels[k]}"' for k in ("job", "instance"))
    expected = {
        "exp_labels": {k: v for k, v in labels.items() if k != "alertname"},
        "exp_annotations": alert["annotations"],
    }
    return {
        "interval": "1m",
        "input_series": [
            {"series": f"example_{name}{{{selector}}}", "values": str(EXAMPLE_VALUES[name])}
        ],
        "alert_rule_test": [{"eval_time": "0m", "alertname": name, "exp_alerts": [expected]}],
    }


def test_example_annotations_are_what_prometheus_renders(tmp_path: Path) -> None:
    """Re-render every example's annotations from alerts.yml's templates with promtool."""
    examples = example_predictor_alerts()
    assert {alert["labels"]["alertname"] for alert in examples} == set(EXAMPLE_VALUES)
    rules = [
        {**rule, "expr": f"example_{rule['alert']}", "for": "0s"}
        for rule in alert_rules()
        if rule["alert"] in EXAMPLE_VALUES
    ]
    tests = [promtool_case(alert) for alert in examples]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": rules}]}))
    (tmp_path / "test.yml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yml"], "tests": tests})
    )
    assert_ok(run_tool("promtool", "test", "rules", tmp_path / "test.yml"))


def test_example_api_v2_alerts_shape() -> None:
    alerts = json.loads((EXAMPLES_DIR / "api-v2-alerts.json").read_text())
    assert isinstance(alerts, list)
    assert alerts
    keys = {"labels", "annotations", "startsAt", "endsAt", "updatedAt", "generatorURL"}
    for alert in alerts:
        assert set(alert) == keys | {"fingerprint", "status", "receivers"}
        assert alert["fingerprint"] == label_fingerprint(alert["labels"])
        assert set(alert["status"]) == {"state", "silencedBy", "inhibitedBy"}
        assert alert["status"]["state"] in {"active", "suppressed", "unprocessed"}
        assert all(set(receiver) == {"name"} for receiver in alert["receivers"])


class WebhookRecorder:
    """A stand-in webhook receiver on 127.0.0.1 recording Alertmanager's POSTs."""

    def __init__(self, port: int) -> None:
        self.requests: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                recorder.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)}
                )
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookRecorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as exit_stack:
        yield exit_stack


def firing(alerts: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


@pytest.mark.slow
def test_real_prometheus_and_alertmanager_see_predictor_crash(
    tmp_path: Path, stack: ExitStack
) -> None:
    ports = {name: free_port() for name in ("predictor", "agent", "alertmanager", "prometheus")}
    token_file = tmp_path / "webhook-token"
    token_file.write_text("e2e-token\n")
    configs = render_monitoring_configs(
        tmp_path,
        predictor_port=ports["predictor"],
        agent_port=ports["agent"],
        alertmanager_port=ports["alertmanager"],
        token_file=token_file,
    )
    recorder = stack.enter_context(WebhookRecorder(ports["agent"]))
    predictor = stack.enter_context(start_predictor(tmp_path, ports["predictor"], traffic_rps=5))
    am = stack.enter_context(
        start_alertmanager(tmp_path, configs.alertmanager, ports["alertmanager"])
    )
    stack.enter_context(start_prometheus(tmp_path, configs.prometheus, ports["prometheus"]))
    am_url = f"http://127.0.0.1:{ports['alertmanager']}"
    prom_url = f"http://127.0.0.1:{ports['prometheus']}"

    status = httpx.get(f"{am_url}/api/v2/status", timeout=5).json()
    assert status["cluster"]["status"] == "disabled"
    assert f"127.0.0.1:{ports['agent']}/webhook/alerts" in status["config"]["original"]
    up = 'up{job="market-predictor"}'
    wait_until(
        lambda: [r for r in prometheus_query(prom_url, up) if r["value"][1] == "1"],
        20,
        message="predictor scraped (up == 1)",
    )

    response = httpx.post(
        f"http://127.0.0.1:{ports['predictor']}/admin/fault", json={"kind": "crash"}
    )
    assert response.status_code == 202
    assert predictor.wait(10) == 1

    (alert,) = wait_until(
        lambda: firing(prometheus_alerts(prom_url), "PredictorDown"), 20, message="PredictorDown"
    )
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["service"] == "market-predictor"
    assert alert["labels"]["instance"] == f"127.0.0.1:{ports['predictor']}"
    assert am.alive

    def delivered() -> list[dict[str, Any]]:
        return [
            r
            for r in recorder.requests
            if r["json"]["commonLabels"].get("alertname") == "PredictorDown"
        ]

    notification = wait_until(delivered, 20, message="PredictorDown webhook")[0]
    assert notification["path"] == "/webhook/alerts"
    assert notification["headers"]["Authorization"] == "Bearer e2e-token"
    assert notification["json"]["version"] == "4"
    assert notification["json"]["receiver"] == "market-agent"
    assert notification["json"]["status"] == "firing"
    (tmp_path / "captured-webhook.json").write_text(json.dumps(notification["json"], indent=2))
