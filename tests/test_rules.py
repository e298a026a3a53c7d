"""The deterministic rule analyzer: classification, severity, actions, context."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market_agent.analysis.rules import RuleAnalyzer, load_rule_table
from market_agent.errors import ConfigError
from market_agent.models import IssueType, Notification, Severity, Verdict

ROOT = Path(__file__).resolve().parents[1]
RULES_TOML = ROOT / "market_agent" / "analysis" / "rules" / "rules.toml"
PREDICTOR = {"job": "market-predictor", "service": "market-predictor", "instance": "10.0.0.5:8000"}
RUNBOOK = "https://runbooks.example.com/market-predictor/"


def alert(
    name: str,
    *,
    severity: str | None = "warning",
    summary: str = "",
    description: str = "",
    expr: str = "",
    status: str = "firing",
    **labels: str,
) -> dict[str, Any]:
    """One alert as it appears in a webhook payload (job/instance default to a non-managed host)."""
    all_labels = {"alertname": name, "job": "node", "instance": "web-1:9100", **labels}
    if severity is not None:
        all_labels["severity"] = severity
    annotations = {k: v for k, v in (("summary", summary), ("description", description)) if v}
    url = f"http://prometheus:9090/graph?g0.expr={quote_plus(expr)}&g0.tab=1" if expr else ""
    return {"status": status, "labels": all_labels, "annotations": annotations, "generatorURL": url}


def notify(*alerts: dict[str, Any], status: str | None = None) -> Notification:
    firing = any(a["status"] == "firing" for a in alerts)
    return Notification.model_validate(
        {"status": status or ("firing" if firing else "resolved"), "alerts": list(alerts)}
    )


def judge(*alerts: dict[str, Any], context: dict[str, Any] | None = None, **kwargs: Any) -> Verdict:
    judgement = RuleAnalyzer(**kwargs).judge(notify(*alerts), context or {})
    assert judgement.analyzer == "rules"
    return judgement.verdict


def predictor_alert(name: str, *, severity: str | None = None) -> dict[str, Any]:
    """The predictor's own alerts, as prometheus/alerts.yml renders them."""
    spec = PREDICTOR_ALERTS[name]
    payload = alert(
        name,
        severity=severity or spec["severity"],
        summary=spec["summary"],
        description=spec["description"],
        expr=spec["expr"],
        **PREDICTOR,
    )
    payload["annotations"]["runbook_url"] = RUNBOOK + name
    return payload


PREDICTOR_ALERTS: dict[str, dict[str, str]] = {
    "PredictorDown": {
        "severity": "critical",
        "expr": 'up{job="market-predictor"} == 0',
        "summary": "Market Predictor 10.0.0.5:8000 is down",
        "description": "Prometheus could not scrape 10.0.0.5:8000 (job market-predictor) for "
        "more than 1 minute: the process is not running or not answering.",
    },
    "PredictorHighErrorRate": {
        "severity": "critical",
        "expr": 'sum(rate(market_predictor_prediction_requests_total{code=~"5.."}[5m])) > 0.05',
        "summary": "Market Predictor 10.0.0.5:8000 is failing 12.5% of predictions",
        "description": "12.5% of prediction requests on 10.0.0.5:8000 returned 5xx over the "
        "last 5 minutes (threshold 5%).",
    },
    "PredictorHighLatency": {
        "severity": "warning",
        "expr": "histogram_quantile(0.95, sum by (le) (rate("
        "market_predictor_request_duration_seconds_bucket[5m]))) > 1",
        "summary": "Market Predictor 10.0.0.5:8000 p95 latency is 2.31s",
        "description": "The 95th percentile of prediction request duration on 10.0.0.5:8000 "
        "is 2.31s over the last 5 minutes (threshold 1s).",
    },
    "PredictorStaleMarketData": {
        "severity": "warning",
        "expr": 'market_predictor_feed_lag_seconds{job="market-predictor"} > 300',
        "summary": "Market data on 10.0.0.5:8000 is 12m 22s old",
        "description": "The market data feed of 10.0.0.5:8000 last updated 12m 22s ago "
        "(threshold 5m); predictions are made on stale prices.",
    },
    "PredictorAccuracyDrop": {
        "severity": "warning",
        "expr": 'market_predictor_model_accuracy{job="market-predictor"} < 0.7',
        "summary": "Model accuracy on 10.0.0.5:8000 dropped to 52%",
        "description": "The rolling accuracy of the prediction model on 10.0.0.5:8000 has "
        "been below 70% for 10 minutes (now 52%).",
    },
    "PredictorHighMemory": {
        "severity": "warning",
        "expr": 'market_predictor_memory_bytes{job="market-predictor"} > 1.5e9',
        "summary": "Market Predictor 10.0.0.5:8000 memory is high or growing fast",
        "description": "Memory of 10.0.0.5:8000 is, or is projected within 4 hours to be, "
        "1.509GiB (limit 1.5GB); a memory leak is likely.",
    },
    "PredictorRestartingTooOften": {
        "severity": "warning",
        "expr": 'changes(market_predictor_start_time_seconds{job="market-predictor"}[1h]) > 3',
        "summary": "Market Predictor 10.0.0.5:8000 restarted 5 times in 1h",
        "description": "10.0.0.5:8000 restarted 5 times in the last hour (threshold 3); it "
        "is probably crash-looping.",
    },
}

# name -> (issue type, proposed action, severity) with an empty context.
PREDICTOR_EXPECTED = {
    "PredictorDown": (IssueType.AVAILABILITY, "restart", Severity.CRITICAL),
    "PredictorHighErrorRate": (IssueType.ERRORS, "escalate", Severity.CRITICAL),
    "PredictorHighLatency": (IssueType.PERFORMANCE, "none", Severity.MEDIUM),
    "PredictorStaleMarketData": (IssueType.DATA, "none", Severity.MEDIUM),
    "PredictorAccuracyDrop": (IssueType.DATA, "none", Severity.MEDIUM),
    "PredictorHighMemory": (IssueType.RESOURCE, "none", Severity.MEDIUM),
    "PredictorRestartingTooOften": (IssueType.AVAILABILITY, "none", Severity.MEDIUM),
}


# ------------------------------------------------------------------ severity


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("critical", Severity.CRITICAL),
        ("CRITICAL", Severity.CRITICAL),
        ("page", Severity.CRITICAL),
        ("Emergency", Severity.CRITICAL),
        ("error", Severity.HIGH),
        ("high", Severity.HIGH),
        ("major", Severity.HIGH),
        ("warning", Severity.MEDIUM),
        ("Warn", Severity.MEDIUM),
        ("low", Severity.LOW),
        ("minor", Severity.LOW),
        ("info", Severity.INFO),
        ("none", Severity.INFO),
        ("bogus", Severity.INFO),
        ("", Severity.INFO),
        (None, Severity.INFO),
    ],
)
def test_severity_label_mapping(label: str | None, expected: Severity) -> None:
    verdict = judge(alert("DiskAlmostFull", severity=label, summary="Disk is 95% full"))
    assert verdict.severity is expected


def test_group_severity_is_the_highest_firing_one() -> None:
    verdict = judge(
        alert("HighCpuLoad", severity="warning", summary="CPU load above 90%"),
        alert("DiskAlmostFull", severity="critical", summary="Disk is 97% full"),
        alert("MemoryHigh", severity="page", status="resolved"),
        alert("SwapFillingUp", severity="low"),
    )
    assert verdict.severity is Severity.CRITICAL


def test_resolved_alerts_do_not_count_towards_group_severity() -> None:
    verdict = judge(
        alert("HighCpuLoad", severity="warning", summary="CPU load above 90%"),
        alert("DiskAlmostFull", severity="critical", status="resolved"),
    )
    assert verdict.severity is Severity.MEDIUM


def test_severity_is_never_lowered_by_weak_evidence() -> None:
    verdict = judge(alert("Mystery", severity="critical", summary="Something happened"))
    assert verdict.severity is Severity.CRITICAL
    assert verdict.issue_type is IssueType.UNKNOWN


def test_managed_service_outage_raises_severity() -> None:
    verdict = judge(predictor_alert("PredictorDown", severity="info"))
    assert verdict.severity is Severity.CRITICAL
    assert verdict.proposed_action == "restart"


# ------------------------------------------------------------------ resolved


def test_resolved_notification() -> None:
    payload = predictor_alert("PredictorDown")
    payload["status"] = "resolved"
    verdict = judge(payload)
    assert verdict.issue_detected is False
    assert verdict.severity is Severity.INFO
    assert verdict.proposed_action == "none"
    assert verdict.requires_immediate_action is False
    assert "PredictorDown" in verdict.description
    assert "resolved" in verdict.description.lower()


def test_firing_notification_without_firing_alerts_counts_as_resolved() -> None:
    notification = notify(alert("DiskAlmostFull", status="resolved"), status="firing")
    verdict = RuleAnalyzer().judge(notification, {}).verdict
    assert verdict.issue_detected is False
    assert verdict.proposed_action == "none"


# ------------------------------------------------------------- classification

# Alerts of common exporters that are NOT in the dev set (written from their
# usual names and annotations): a check that the signals are general.
GENERAL_ALERTS = [
    ("MysqlDown", "MySQL down", "MySQL instance is down on db-1", IssueType.AVAILABILITY),
    ("BlackboxProbeFailed", "Blackbox probe failed", "Probe failed", IssueType.AVAILABILITY),
    (
        "PrometheusTargetMissing",
        "Prometheus target missing",
        "A Prometheus target has disappeared. An exporter might be crashed.",
        IssueType.AVAILABILITY,
    ),
    ("MinioDiskOffline", "Minio disk offline", "Minio disk is offline", IssueType.AVAILABILITY),
    (
        "ZookeeperMissingLeader",
        "Zookeeper missing leader",
        "Zookeeper cluster has no node marked as leader",
        IssueType.AVAILABILITY,
    ),
    (
        "NodeFilesystemAlmostOutOfSpace",
        "Filesystem has less than 5% space left.",
        "Filesystem on /dev/sda1 has only 3% available space left.",
        IssueType.RESOURCE,
    ),
    (
        "ContainerHighMemoryUsage",
        "Container High Memory usage",
        "Container Memory usage is above 80%",
        IssueType.RESOURCE,
    ),
    ("CPUThrottlingHigh", "Elevated CPU throttling", "42% CPU throttling", IssueType.RESOURCE),
    ("JvmMemoryFillingUp", "JVM memory filling up", "JVM memory is filling up", IssueType.RESOURCE),
    (
        "PostgresqlReplicationLag",
        "Postgresql replication lag",
        "PostgreSQL replication lag is going up (> 30s)",
        IssueType.PERFORMANCE,
    ),
    (
        "KafkaConsumersGroupLag",
        "Kafka consumer group",
        "Consumer lag is high",
        IssueType.PERFORMANCE,
    ),
    (
        "CassandraCompactionTaskPending",
        "Cassandra compaction task pending",
        "Many Cassandra compaction tasks are pending",
        IssueType.PERFORMANCE,
    ),
    (
        "NginxHighHttp5xxErrorRate",
        "Nginx high HTTP 5xx error rate",
        "Too many HTTP requests with status 5xx (> 5%)",
        IssueType.ERRORS,
    ),
    (
        "HaproxyServerResponseErrors",
        "HAProxy server response errors",
        "Too many response errors to server (> 5%).",
        IssueType.ERRORS,
    ),
    (
        "BlackboxSslCertificateWillExpireSoon",
        "Blackbox SSL certificate will expire soon",
        "SSL certificate expires in less than 20 days",
        IssueType.CONFIGURATION,
    ),
    (
        "PrometheusConfigurationReloadFailure",
        "Prometheus configuration reload failure",
        "Prometheus configuration reload error",
        IssueType.CONFIGURATION,
    ),
    (
        "SshBruteForceAttempts",
        "Many failed SSH logins",
        "More than 100 failed SSH login attempts from one source in 5 minutes.",
        IssueType.SECURITY,
    ),
    ("disk_almost_full", "Disk almost full on web-1", "", IssueType.RESOURCE),
    ("api-latency-high", "API p99 latency above 2s", "", IssueType.PERFORMANCE),
    (
        "Watchdog",
        "An alert that should always be firing.",
        "This is an alert meant to ensure that the entire alerting pipeline is functional.",
        IssueType.UNKNOWN,
    ),
]


@pytest.mark.parametrize(("name", "summary", "description", "expected"), GENERAL_ALERTS)
def test_general_alerts_are_classified(
    name: str, summary: str, description: str, expected: IssueType
) -> None:
    verdict = judge(alert(name, summary=summary, description=description))
    assert verdict.issue_type is expected, verdict.description


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ServiceDown", IssueType.AVAILABILITY),
        ("service_down", IssueType.AVAILABILITY),
        ("service-unreachable", IssueType.AVAILABILITY),
        ("HTTP5xxErrorRateHigh", IssueType.ERRORS),
        ("OOMKilled", IssueType.AVAILABILITY),
        ("SSLCertExpiresSoon", IssueType.CONFIGURATION),
    ],
)
def test_alertname_words_are_split(name: str, expected: IssueType) -> None:
    """CamelCase (with acronyms and digits), snake_case and kebab-case all split into words."""
    assert judge(alert(name)).issue_type is expected


def test_expression_signals_count() -> None:
    verdict = judge(alert("ExporterGone", expr='absent(up{job="exporter"} == 1)'))
    assert verdict.issue_type is IssueType.AVAILABILITY


def test_semantic_labels_count() -> None:
    verdict = judge(alert("Rule42", category="security"))
    assert verdict.issue_type is IssueType.SECURITY


def test_slowing_down_is_not_an_outage() -> None:
    verdict = judge(alert("RequestsSlow", description="HTTP requests slowing down, p99 over 1s"))
    assert verdict.issue_type is IssueType.PERFORMANCE


def test_weak_signals_get_low_confidence() -> None:
    weak = judge(alert("Rule42", description="the exporter may be down"))
    unknown = judge(alert("Rule42", description="something happened"))
    assert weak.issue_type is IssueType.AVAILABILITY
    assert weak.confidence <= 0.6
    assert unknown.issue_type is IssueType.UNKNOWN
    assert unknown.confidence <= 0.3


def test_multi_alert_group_weighs_the_severe_alerts_most() -> None:
    verdict = judge(
        predictor_alert("PredictorHighErrorRate"),
        predictor_alert("PredictorHighLatency"),
    )
    assert verdict.issue_type is IssueType.ERRORS
    assert verdict.severity is Severity.CRITICAL
    assert "PredictorHighErrorRate" in verdict.description
    assert "1 other alert" in verdict.description


# ----------------------------------------------------------- predictor alerts


@pytest.mark.parametrize("name", sorted(PREDICTOR_EXPECTED))
def test_predictor_alerts(name: str) -> None:
    issue_type, action, severity = PREDICTOR_EXPECTED[name]
    verdict = judge(predictor_alert(name))
    assert (verdict.issue_type, verdict.proposed_action, verdict.severity) == (
        issue_type,
        action,
        severity,
    ), verdict.description
    assert verdict.issue_detected is True
    assert 2 <= len(verdict.recommended_actions) <= 5
    assert verdict.recommended_actions[0] == f"Follow the runbook: {RUNBOOK}{name}"


def test_predictor_down_is_confident_enough_for_the_restart_guard() -> None:
    verdict = judge(predictor_alert("PredictorDown"))
    assert verdict.confidence >= 0.85
    assert verdict.requires_immediate_action is True
    steps = " ".join(verdict.recommended_actions)
    assert "/health" in steps
    assert "market-agent status" in steps
    assert "market-agent restart --dry-run" in steps


def test_bare_predictor_down_alertname_is_enough() -> None:
    verdict = judge(alert("PredictorDown", severity="critical", **PREDICTOR))
    assert verdict.proposed_action == "restart"
    assert verdict.confidence >= 0.85


def test_restart_loop_is_not_restarted() -> None:
    warning = judge(predictor_alert("PredictorRestartingTooOften"))
    critical = judge(predictor_alert("PredictorRestartingTooOften", severity="critical"))
    assert warning.issue_type is IssueType.AVAILABILITY
    assert warning.proposed_action == "none"
    assert critical.proposed_action == "escalate"
    assert "loop" in warning.description
    assert any("Do not restart" in step for step in warning.recommended_actions)


def test_restart_advice_in_a_description_does_not_block_a_restart() -> None:
    payload = predictor_alert("PredictorDown")
    payload["annotations"]["description"] += " Restart it if it does not come back."
    assert judge(payload).proposed_action == "restart"


def test_data_issues_recommend_the_feed_or_the_model_not_a_restart() -> None:
    stale = judge(predictor_alert("PredictorStaleMarketData"))
    accuracy = judge(predictor_alert("PredictorAccuracyDrop"))
    assert "feed" in " ".join(stale.recommended_actions)
    assert "retrain" in " ".join(accuracy.recommended_actions)


def test_shipped_alert_rules_are_classified() -> None:
    """Every rule of prometheus/alerts.yml, rendered as Prometheus would send it."""
    yaml = pytest.importorskip("yaml")
    path = ROOT / "prometheus" / "alerts.yml"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    rules = [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
    assert rules
    for rule in rules:
        labels = {k: v for k, v in rule.get("labels", {}).items() if k != "severity"}
        payload = alert(
            rule["alert"],
            severity=rule.get("labels", {}).get("severity"),
            summary=_render(rule["annotations"].get("summary", "")),
            description=_render(rule["annotations"].get("description", "")),
            expr=rule["expr"],
            **{**PREDICTOR, **labels},
        )
        verdict = judge(payload)
        expected = PREDICTOR_EXPECTED.get(rule["alert"])
        if expected:
            assert verdict.issue_type is expected[0], rule["alert"]
            assert verdict.proposed_action == expected[1], rule["alert"]
        else:
            assert verdict.issue_type is not IssueType.UNKNOWN, rule["alert"]


def _render(template: str) -> str:
    return template.replace("{{ $labels.instance }}", "10.0.0.5:8000").replace(
        "{{ $labels.job }}", "market-predictor"
    )


# ----------------------------------------------------------- actions & text


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"job": "market-predictor"}, "restart"),
        ({"job": "api", "service": "market-predictor"}, "restart"),
        ({"job": "postgres", "service": "db"}, "escalate"),
    ],
)
def test_restart_only_for_the_managed_service(labels: dict[str, str], expected: str) -> None:
    verdict = judge(alert("ServiceDown", severity="critical", summary="It is down", **labels))
    assert verdict.issue_type is IssueType.AVAILABILITY
    assert verdict.proposed_action == expected


def test_other_services_never_get_restart_and_warnings_get_none() -> None:
    verdict = judge(alert("PostgresDown", severity="warning", summary="Postgres is down"))
    assert verdict.proposed_action == "none"
    assert verdict.requires_immediate_action is False


def test_managed_service_matchers_need_all_their_labels() -> None:
    managed = [{"app": "pricing", "env": "prod"}]
    prod = judge(alert("PricingDown", app="pricing", env="prod"), managed_service=managed)
    staging = judge(alert("PricingDown", app="pricing", env="staging"), managed_service=managed)
    assert prod.proposed_action == "restart"
    assert staging.proposed_action == "none"


def test_restart_action_name_is_configurable() -> None:
    verdict = judge(predictor_alert("PredictorDown"), restart_action="restart-predictor")
    assert verdict.proposed_action == "restart-predictor"


def test_empty_managed_service_matcher_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="managed_service"):
        RuleAnalyzer(managed_service=[{}])


def test_requires_immediate_action() -> None:
    assert judge(alert("Mystery", severity="critical")).requires_immediate_action is True
    assert judge(alert("Mystery", severity="warning")).requires_immediate_action is False
    outage = judge(alert("PredictorDown", severity="warning", **PREDICTOR))
    assert outage.requires_immediate_action is True


def test_description_says_what_where_and_how_classified() -> None:
    verdict = judge(
        alert(
            "NodeFilesystemAlmostOutOfSpace",
            summary="Filesystem /var on web-1 has 3% space left",
            job="node",
            instance="web-1:9100",
        )
    )
    text = verdict.description
    for part in ("NodeFilesystemAlmostOutOfSpace", "web-1:9100", "job node", "3% space left"):
        assert part in text
    assert "resource" in text
    assert text.count(". ") <= 2


@pytest.mark.parametrize("issue_type", list(IssueType))
def test_every_issue_type_has_two_to_five_steps(issue_type: IssueType) -> None:
    table = load_rule_table()
    for group in ("generic", "managed"):
        steps = table.actions[group][issue_type.value]
        assert 2 <= len(steps) <= 5, (group, issue_type)


def test_generic_steps_name_the_target() -> None:
    verdict = judge(alert("HostOutOfMemory", summary="Host out of memory", instance="db-7:9100"))
    assert 2 <= len(verdict.recommended_actions) <= 5
    assert any("db-7:9100" in step for step in verdict.recommended_actions)


# ------------------------------------------------------------------- context


def test_unreachable_predictor_is_an_outage() -> None:
    context = {"predictor": {"reachable": False, "healthy": None, "error": "connection refused"}}
    verdict = judge(predictor_alert("PredictorHighLatency"), context=context)
    assert verdict.issue_type is IssueType.AVAILABILITY
    assert verdict.severity is Severity.CRITICAL
    assert verdict.proposed_action == "restart"
    assert "unreachable" in verdict.description
    assert "connection refused" in verdict.description


def test_unreachable_predictor_does_not_affect_other_services() -> None:
    context = {"predictor": {"reachable": False}}
    verdict = judge(alert("HighCpuLoad", summary="CPU load above 90%"), context=context)
    assert verdict.issue_type is IssueType.RESOURCE
    assert verdict.severity is Severity.MEDIUM


@pytest.mark.parametrize(
    ("name", "metrics"),
    [
        ("PredictorHighLatency", {"p95_latency_seconds": 0.3}),
        ("PredictorHighErrorRate", {"error_ratio": 0.01}),
        ("PredictorDown", {"up": 1.0}),
    ],
)
def test_cleared_condition_lowers_confidence_not_severity(
    name: str, metrics: dict[str, float]
) -> None:
    before = judge(predictor_alert(name))
    after = judge(predictor_alert(name), context={"metrics": metrics})
    assert after.severity is before.severity
    assert after.confidence < before.confidence
    assert after.confidence < 0.8  # below the restart guard
    assert "cleared" in after.description


@pytest.mark.parametrize(
    ("name", "metrics"),
    [
        ("PredictorHighLatency", {"p95_latency_seconds": 2.5}),
        ("PredictorHighErrorRate", {"error_ratio": 0.2}),
        ("PredictorDown", {"up": 0.0}),
    ],
)
def test_condition_still_present_keeps_confidence(name: str, metrics: dict[str, float]) -> None:
    before = judge(predictor_alert(name))
    after = judge(predictor_alert(name), context={"metrics": metrics})
    assert after.confidence == before.confidence
    assert "cleared" not in after.description


@pytest.mark.parametrize(
    "name", ["PredictorStaleMarketData", "PredictorHighErrorRate", "PredictorAccuracyDrop"]
)
def test_stale_feed_is_a_data_issue_not_a_restart(name: str) -> None:
    context = {"metrics": {"feed_lag_seconds": 900.0, "accuracy": 0.5}}
    verdict = judge(predictor_alert(name), context=context)
    assert verdict.issue_type is IssueType.DATA
    assert verdict.proposed_action != "restart"
    assert "feed" in verdict.description
    assert any("feed" in step for step in verdict.recommended_actions)


def test_low_accuracy_with_fresh_feed_is_a_model_problem() -> None:
    context = {"metrics": {"feed_lag_seconds": 12.0, "accuracy": 0.55}}
    verdict = judge(predictor_alert("PredictorAccuracyDrop"), context=context)
    assert verdict.issue_type is IssueType.DATA
    assert verdict.proposed_action == "none"
    assert "model" in verdict.description
    steps = " ".join(verdict.recommended_actions)
    assert "Roll back" in steps
    assert "retrain" in steps


def test_failed_restarts_escalate() -> None:
    recent = [True, False, True, False, False]
    context = {"effectiveness": {"PredictorDown": {"restart": {"recent": recent}}}}
    verdict = judge(predictor_alert("PredictorDown"), context=context)
    assert verdict.proposed_action == "escalate"
    assert "failed in 3 of the last 5" in verdict.description


@pytest.mark.parametrize(
    "recent",
    [
        [True, False, True, True, False],  # 2 of 5 failed
        [False, False, False, True, True, True, True, True],  # old failures only
        [],
    ],
)
def test_restart_history_below_threshold_keeps_restart(recent: list[bool]) -> None:
    context = {"effectiveness": {"PredictorDown": {"restart": {"recent": recent}}}}
    assert judge(predictor_alert("PredictorDown"), context=context).proposed_action == "restart"


def test_restart_history_matters_only_for_the_managed_service() -> None:
    context = {"effectiveness": {"PostgresDown": {"restart": {"recent": [False] * 5}}}}
    payload = alert("PostgresDown", severity="warning", summary="Postgres is down")
    verdict = judge(payload, context=context)
    assert verdict.proposed_action == "none"
    assert "failed" not in verdict.description


def test_healthy_predictor_clears_an_outage_alert() -> None:
    context = {"predictor": {"reachable": True, "healthy": True, "error": None}}
    verdict = judge(predictor_alert("PredictorDown"), context=context)
    assert verdict.confidence < 0.8
    assert "healthy now" in verdict.description


def test_restart_history_of_another_alert_is_ignored() -> None:
    context = {"effectiveness": {"PredictorHighMemory": {"restart": {"recent": [False] * 5}}}}
    assert judge(predictor_alert("PredictorDown"), context=context).proposed_action == "restart"


@pytest.mark.parametrize(
    "context",
    [
        {"predictor": "yes", "metrics": [1, 2], "effectiveness": 5},
        {"predictor": {"reachable": "no"}, "metrics": {"up": "1", "accuracy": math.nan}},
        {"metrics": {"p95_latency_seconds": True, "feed_lag_seconds": math.inf}},
        {"effectiveness": {"PredictorDown": {"restart": {"recent": "FFFFF"}}}},
        {"effectiveness": {"PredictorDown": {"restart": {"recent": [None, 0, "x", {}]}}}},
        {"effectiveness": {"PredictorDown": ["restart"]}},
    ],
)
def test_odd_context_shapes_mean_unknown(context: dict[str, Any]) -> None:
    verdict = judge(predictor_alert("PredictorDown"), context=context)
    assert verdict.proposed_action == "restart"
    assert verdict.confidence >= 0.85


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3)
    ),
    max_leaves=10,
)
_KEYS = st.sampled_from(["predictor", "metrics", "effectiveness", "PredictorDown", "restart"])


@settings(max_examples=150, deadline=None)
@given(
    context=st.dictionaries(
        _KEYS, _JSON | st.dictionaries(_KEYS | st.sampled_from(["recent", "up"]), _JSON)
    )
)
def test_any_context_shape_gives_a_valid_verdict(context: dict[str, Any]) -> None:
    notification = notify(predictor_alert("PredictorDown"), predictor_alert("PredictorHighLatency"))
    verdict = RuleAnalyzer().judge(notification, context).verdict
    assert 0.0 <= verdict.confidence <= 1.0
    assert verdict.proposed_action in ("restart", "escalate", "none")


# --------------------------------------------------------- the rule table


def test_builtin_table_is_loaded_once() -> None:
    assert load_rule_table() is load_rule_table()


def test_importing_does_no_work() -> None:
    code = (
        "import market_agent.analysis.rules.table as t; "
        "assert t._builtin_table.cache_info().currsize == 0"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_user_rules_take_precedence() -> None:
    rules = [{"id": "nightly-batch", "issue_type": "performance", "keywords": ["nightly"]}]
    payload = alert("NightlyBatchDown", summary="Nightly batch is down")
    assert judge(payload).issue_type is IssueType.AVAILABILITY
    assert judge(payload, extra_rules=rules).issue_type is IssueType.PERFORMANCE


def test_user_rule_replaces_builtin_rule_of_the_same_id() -> None:
    rules = [{"id": "down", "issue_type": "errors", "keywords": ["gone"]}]
    assert judge(alert("ServiceDown"), extra_rules=rules).issue_type is not IssueType.AVAILABILITY
    assert judge(alert("ServiceGone"), extra_rules=rules).issue_type is IssueType.ERRORS


def test_user_rule_on_labels_with_severity_and_action() -> None:
    rules = [
        {
            "id": "payments-team",
            "issue_type": "errors",
            "labels": {"team": "payments"},
            "severity": "critical",
            "proposed_action": "page-payments",
            "recommended_actions": ["Call the payments on-call."],
        }
    ]
    verdict = judge(alert("Anything", team="payments"), extra_rules=rules)
    assert verdict.issue_type is IssueType.ERRORS
    assert verdict.severity is Severity.CRITICAL
    assert verdict.proposed_action == "page-payments"
    assert verdict.recommended_actions[0] == "Call the payments on-call."
    other = judge(alert("Anything", team="search"), extra_rules=rules)
    assert other.issue_type is IssueType.UNKNOWN


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"issue_type": "errors", "keywords": ["x"]}, r"analysis\.rules\[0\]: key 'id'"),
        ({"id": "r", "issue_type": "bogus", "keywords": ["x"]}, r"\(id 'r'\): key 'issue_type'"),
        ({"id": "r", "issue_type": "errors", "keyword": ["x"]}, r"unknown key 'keyword'"),
        ({"id": "r", "issue_type": "errors", "keywords": "x"}, r"key 'keywords' must be a list"),
        ({"id": "r", "issue_type": "errors", "patterns": ["("]}, r"key 'patterns': bad regex"),
        ({"id": "r", "issue_type": "errors", "keywords": ["x"], "weight": "2"}, r"key 'weight'"),
        ({"id": "r", "issue_type": "errors"}, r"\(id 'r'\): needs at least one of"),
        ({"id": "r", "issue_type": "errors", "keywords": ["x"], "fields": ["body"]}, "'fields'"),
        ({"id": "r", "issue_type": "errors", "keywords": ["*"]}, "has no word to match"),
        (
            {"id": "r", "issue_type": "errors", "keywords": ["x"], "clears_when": {"metric": "x"}},
            "clears_when.metric",
        ),
        ({"id": "r", "issue_type": "errors", "keywords": ["x"], "severity": "huge"}, "'severity'"),
        ("not a table", r"analysis\.rules\[0\] must be a table"),
        ({"id": "r", "issue_type": "errors", "keywords": ["x", 2]}, r"'keywords' item 1 must be a"),
        (
            {"id": "r", "issue_type": "errors", "labels": {"team": 1}},
            r"key 'labels\.team' must be a string \(got 1\)",
        ),
        (
            {"id": "r", "issue_type": "errors", "keywords": ["x"], "clears_when": {"metric": "up"}},
            r"key 'clears_when': needs exactly one of below, at_least",
        ),
        (
            {"id": "r", "issue_type": "errors", "keywords": ["x"], "weight": math.nan},
            r"key 'weight' must be a finite number",
        ),
        ({"id": " ", "issue_type": "errors", "keywords": ["x"]}, r"\]: key 'id' must not be empty"),
    ],
)
def test_bad_user_rules_name_the_rule_and_key(rule: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_rule_table([rule])
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["rules"][2].update(weight="x"),
            r"^rules\.toml rules\[2\] \(id '.+'\): key 'weight'",
        ),
        (lambda d: d["settings"].update(min_score="x"), r"^rules\.toml: key 'settings\.min_score'"),
        (lambda d: d.update(extra=1), r"^rules\.toml: unknown key 'extra'"),
    ],
)
def test_a_bad_builtin_table_names_the_file_rule_and_key(change: Any, message: str) -> None:
    from market_agent.analysis.rules.table import _table_from_data

    data = tomllib.loads(RULES_TOML.read_text(encoding="utf-8"))
    change(data)
    with pytest.raises(ConfigError, match=message):
        _table_from_data(data)


def test_package_data_ships_the_rule_table() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["market_agent"]
    shipped = {path for glob in globs for path in (ROOT / "market_agent").glob(glob)}
    assert RULES_TOML in shipped


def test_duplicate_user_rule_ids_are_rejected() -> None:
    rule = {"id": "r", "issue_type": "errors", "keywords": ["x"]}
    with pytest.raises(ConfigError, match="duplicate rule id 'r'"):
        load_rule_table([rule, rule])


# ------------------------------------------------- matching internals (speed)
# The matcher compiles every keyword and phrase into one word automaton, memoises
# per word, filters patterns with literal pre-checks and tokenises ASCII text with
# bytes.translate. These tests pin all of it to the plain definitions of rules.toml.

_NAME_SPLIT = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+[a-z]*")
_LOWER_WORD = re.compile(r"[a-z0-9]+")
# Rules that exercise what the built-in table does not: wildcards at the end, shared
# prefixes, prefix elements inside phrases, overlapping phrases, field limits.
TRICKY_RULES = [
    {"id": "t-wild", "issue_type": "errors", "phrases": ["too * *", "x* * z", "a b *"]},
    {"id": "t-overlap", "issue_type": "data", "phrases": ["a b c", "b c d", "a a b"]},
    {"id": "t-prefix", "issue_type": "security", "keywords": ["sec*", "a"], "phrases": ["fo* ba*"]},
    {"id": "t-fields", "issue_type": "resource", "keywords": ["zap"], "fields": ["expr", "labels"]},
    {"id": "t-pattern", "issue_type": "performance", "patterns": [r"(foo|ba[rz])+\s*=", r"q?z{2}"]},
]
_VOCABULARY = sorted(
    {
        word
        for rule in load_rule_table(TRICKY_RULES).rules
        for element in (*rule.keywords, *(e for phrase in rule.phrases for e in phrase))
        for word in (element[0], element[0] + "ing")
        if word
    }
    | {"the", "is", "not", "down", "x", "0", "42", "5xx", "z", "foo=", "zz"}
)
_TEXT = st.lists(
    st.sampled_from(_VOCABULARY) | st.text("abcxyzAZ09_-. ", max_size=6), max_size=14
).map(" ".join)


def _reference_matches(table: Any, index: int, text: str) -> set[int]:
    """Rules matching field `index`, straight from the definitions in rules.toml (slow)."""
    from market_agent.analysis.rules.matcher import expr_of

    if index == 0:  # name: CamelCase, snake_case and kebab-case words
        low = " ".join(_NAME_SPLIT.findall(text)).lower()
    else:
        low = expr_of(text) if index == 3 else text.lower()
    words = _LOWER_WORD.findall(low)

    def fits(element: tuple[str, bool], word: str) -> bool:
        return word.startswith(element[0]) if element[1] else word == element[0]

    def phrase_at(phrase: tuple[tuple[str, bool], ...], i: int) -> bool:
        rest = words[i : i + len(phrase)]
        return len(rest) == len(phrase) and all(map(fits, phrase, rest))

    found = set()
    for r, rule in enumerate(table.rules):
        if not rule.fields >> index & 1:
            continue
        if (
            any(fits(k, w) for k in rule.keywords for w in words)
            or any(phrase_at(p, i) for p in rule.phrases for i in range(len(words)))
            or any(p.search(low) for p in rule.patterns)
        ):
            found.add(r)
    return found


def _bits(found: int) -> set[int]:
    return {r for r in range(found.bit_length()) if found >> r & 1}


@settings(max_examples=300, deadline=None)
@given(text=_TEXT, index=st.sampled_from([1, 2, 4]))
def test_word_matching_agrees_with_the_rule_definitions(text: str, index: int) -> None:
    for table in (load_rule_table(), load_rule_table(TRICKY_RULES)):
        assert _bits(table.matcher._scan(index, text)) == _reference_matches(table, index, text)


@settings(max_examples=150, deadline=None)
@given(words=st.lists(st.sampled_from(_VOCABULARY), max_size=6), expr=_TEXT)
def test_name_and_expression_matching_agrees_with_the_rule_definitions(
    words: list[str], expr: str
) -> None:
    name = "".join(word.capitalize() for word in words)
    url = f"http://prometheus:9090/graph?g0.expr={quote_plus(expr)}&g0.tab=1"
    for table in (load_rule_table(), load_rule_table(TRICKY_RULES)):
        matcher = table.matcher
        assert _bits(matcher._scan(0, name)) == _reference_matches(table, 0, name)
        assert _bits(matcher._scan(3, url)) == _reference_matches(table, 3, url)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40) | _TEXT)
def test_fast_tokenising_equals_the_regex(text: str) -> None:
    from market_agent.analysis.rules.matcher import words_of

    assert words_of(text) == _LOWER_WORD.findall(text.lower())


@pytest.mark.parametrize(
    "pattern",
    [
        *(p.pattern for rule in load_rule_table().rules for p in rule.patterns),
        r"(foo|ba[rz])+\s*=",
        r"x?abc",
        r"ab(?i:cd)ef",
        r"(?i)abc",
        r"(ab|cd)e{2,}",
        r"(?=abc)a",
        r"a|b",
    ],
)
@settings(max_examples=200, deadline=None)
@given(text=st.text("abcdeforuxz_=(){}<!01 ", max_size=30))
def test_pattern_prefilter_never_skips_a_match(pattern: str, text: str) -> None:
    from market_agent.analysis.rules.matcher import needed

    compiled = re.compile(pattern)
    needs = needed(compiled)
    if compiled.search(text):
        assert any(need in text for need in needs), needs


def test_judging_with_cold_memos_equals_judging_with_warm_ones() -> None:
    payloads = [alert(name, summary=s, description=d) for name, s, d, _ in GENERAL_ALERTS]
    payloads += [predictor_alert(name) for name in PREDICTOR_ALERTS]
    payloads.append(alert("ServiceGone", expr='absent(up{job="x"})', category="availability"))
    analyzer = RuleAnalyzer(extra_rules=TRICKY_RULES)
    warm = [analyzer.judge(notify(p), {}).verdict for p in payloads * 2][len(payloads) :]
    cold = []
    for payload in payloads:
        analyzer.table.matcher.forget_alerts()
        cold.append(analyzer.judge(notify(payload), {}).verdict)
    assert cold == warm
    assert [
        RuleAnalyzer(extra_rules=TRICKY_RULES).judge(notify(p), {}).verdict for p in payloads
    ] == cold
