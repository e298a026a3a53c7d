"""Multi-alert groups: suppressed and other-service alerts, the order of the alert list,
and a description whose leading alert agrees with the classification."""

from __future__ import annotations

import json
from typing import Any

from market_agent.analysis.analyzer import AnalysisService
from market_agent.analysis.rules import RuleAnalyzer
from market_agent.inputs import parse_payload
from market_agent.models import IssueType, Notification, Severity
from tests.cli_helpers import run_cli
from tests.conftest import EXAMPLES

MANAGED = ({"job": "market-predictor"}, {"service": "market-predictor"})


def api_v2_example() -> Notification:
    return parse_payload(json.loads((EXAMPLES / "api-v2-alerts.json").read_text()))


def api_alert(name: str, severity: str, summary: str, *, silenced: bool = False) -> dict[str, Any]:
    """One `/api/v2/alerts` entry for the managed service, silenced or active."""
    return {
        "labels": {
            "alertname": name,
            "severity": severity,
            "job": "market-predictor",
            "instance": "127.0.0.1:8000",
        },
        "annotations": {"summary": summary},
        "fingerprint": name.lower(),
        "status": {
            "state": "suppressed" if silenced else "active",
            "silencedBy": ["s1"] if silenced else [],
            "inhibitedBy": [],
        },
    }


def analyze(notification: Notification) -> Any:
    service = AnalysisService(RuleAnalyzer(), managed_service=MANAGED)
    return service.analyze(notification, source="test")


def test_api_v2_description_leads_with_the_alert_that_gives_the_classification() -> None:
    notification = api_v2_example()
    analysis = analyze(notification)
    alone = RuleAnalyzer().judge(
        notification.model_copy(
            update={
                "alerts": [a for a in notification.alerts if a.name == "PredictorHighErrorRate"]
            }
        ),
        {},
    )
    assert analysis.description.startswith("PredictorHighErrorRate is firing")
    assert analysis.issue_type is alone.verdict.issue_type is IssueType.ERRORS
    assert "Classified as errors" in analysis.description
    assert "3 other alerts (1 silenced)" in analysis.description


def test_api_v2_alerts_are_listed_by_relevance_with_their_state() -> None:
    result = run_cli("--no-audit", "analyze", "--json", str(EXAMPLES / "api-v2-alerts.json"))
    assert result.exit_code == 0, result.stderr
    alerts = json.loads(result.stdout)["alerts"]
    assert [a["alertname"] for a in alerts] == [
        "PredictorHighErrorRate",  # managed, critical
        "PredictorHighLatency",  # managed, warning
        "PostgresReplicationLag",  # another service
        "PredictorStaleMarketData",  # silenced: last
    ]
    silenced = alerts[-1]
    assert silenced["state"] == "suppressed"
    assert silenced["silenced_by"] == ["0f1a7c2e-5b3d-4e8a-9c61-2d4b8e7f3a90"]
    assert {a["state"] for a in alerts[:-1]} == {"active"}


def test_a_silenced_outage_does_not_drive_the_verdict_over_an_active_alert() -> None:
    notification = parse_payload(
        [
            api_alert("PredictorDown", "critical", "Predictor is down", silenced=True),
            api_alert("PredictorHighLatency", "warning", "p95 latency is 2.3s"),
        ]
    )
    verdict = RuleAnalyzer().judge(notification, {}).verdict
    assert verdict.issue_type is IssueType.PERFORMANCE
    assert verdict.severity is Severity.MEDIUM
    assert verdict.proposed_action == "none"  # no restart for a silenced outage
    assert verdict.description.startswith("PredictorHighLatency is firing")
    assert "1 other alert (1 silenced)" in verdict.description


def test_when_every_alert_is_silenced_they_still_give_the_verdict() -> None:
    notification = parse_payload(
        [api_alert("PredictorDown", "critical", "Predictor is down", silenced=True)]
    )
    verdict = RuleAnalyzer().judge(notification, {}).verdict
    assert verdict.issue_type is IssueType.AVAILABILITY
    assert verdict.description.startswith("PredictorDown is firing (silenced) on")


def test_another_service_alert_does_not_classify_the_managed_service_issue() -> None:
    other = api_alert("PostgresHighLatency", "critical", "Postgres p99 latency is 3s")
    other["labels"].update(job="postgres", instance="db-1:9187")
    notification = parse_payload(
        [other, api_alert("PredictorHighErrorRate", "warning", "failing 12.5% of predictions")]
    )
    verdict = RuleAnalyzer().judge(notification, {}).verdict
    assert verdict.issue_type is IssueType.ERRORS
    assert verdict.description.startswith("PredictorHighErrorRate is firing")
    assert verdict.severity is Severity.CRITICAL  # the group's severity still counts every alert


def test_groups_of_other_services_keep_the_most_severe_alert_first() -> None:
    notification = parse_payload(
        [
            {"labels": {"alertname": "HighCpuLoad", "severity": "warning", "job": "node"}},
            {"labels": {"alertname": "HostDown", "severity": "critical", "job": "node"}},
        ]
    )
    names = [a.alertname for a in analyze(notification).alerts]
    assert names == ["HostDown", "HighCpuLoad"]
