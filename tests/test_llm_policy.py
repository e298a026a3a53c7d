"""The policy after the model, the one severity mapping and the prompt's content:
pure functions, no HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from market_agent.analysis.analyzer import default_catalog
from market_agent.analysis.policy import apply_policy
from market_agent.analysis.prompting import build_user_prompt, rule_expression, system_prompt
from market_agent.analysis.rules import RuleAnalyzer
from market_agent.analysis.severity import severity_from_label
from market_agent.inputs import read_source
from market_agent.models import Notification, Severity, Verdict
from tests.conftest import EXAMPLES

MANAGED = ({"job": "market-predictor"},)


def load(name: str) -> Notification:
    return next(read_source(str(EXAMPLES / name))).notification  # type: ignore[union-attr]


def verdict(**fields: object) -> Verdict:
    base = {
        "issue_detected": True,
        "severity": "high",
        "issue_type": "availability",
        "description": "d",
        "proposed_action": "none",
        "confidence": 0.9,
        "requires_immediate_action": False,
    }
    return Verdict.model_validate({**base, **fields})


@pytest.mark.parametrize("label", ["p1", "sev1", "crit", "fatal", "P1", " Critical "])
def test_one_severity_mapping_for_rules_and_llm_floor(label: str) -> None:
    assert severity_from_label(label) is Severity.CRITICAL  # the old LLM floor said info
    table = RuleAnalyzer().table  # type: ignore[attr-defined]
    assert table.severity_map[label.strip().lower()] is Severity.CRITICAL


@pytest.mark.parametrize(
    ("example", "model", "rule", "final", "changed"),
    [
        # firing critical, model clears everything: raised back, rules' action
        (
            "predictor-down.json",
            {"issue_detected": False, "severity": "info"},
            {"severity": "critical", "proposed_action": "restart"},
            {"issue_detected": True, "severity": "critical", "proposed_action": "restart",
             "requires_immediate_action": True},
            {"issue_detected", "severity", "proposed_action", "requires_immediate_action"},
        ),
        # critical, rules propose nothing: at least escalate
        (
            "predictor-down.json",
            {"severity": "critical"},
            {"severity": "critical", "proposed_action": "none"},
            {"proposed_action": "escalate", "requires_immediate_action": True},
            {"proposed_action", "requires_immediate_action"},
        ),
        # critical, the model's escalate is kept (never lowered to the rules' none)
        (
            "predictor-down.json",
            {"severity": "critical", "proposed_action": "escalate",
             "requires_immediate_action": True},
            {"severity": "critical", "proposed_action": "restart"},
            {"proposed_action": "escalate"},
            set(),
        ),
        # severity never below the rules'
        (
            "high-latency.json",
            {"severity": "low"},
            {"severity": "high"},
            {"severity": "high"},
            {"severity"},
        ),
        # resolved: never an action
        (
            "resolved.json",
            {"proposed_action": "restart", "requires_immediate_action": True},
            {"issue_detected": False, "severity": "info"},
            {"issue_detected": False, "severity": "info", "proposed_action": "none",
             "requires_immediate_action": False},
            {"issue_detected", "severity", "proposed_action", "requires_immediate_action"},
        ),
        # restart is not allowed for another service's alert
        (
            "other-service.json",
            {"severity": "medium", "proposed_action": "restart"},
            {"severity": "medium", "proposed_action": "none"},
            {"proposed_action": "none"},
            {"proposed_action"},
        ),
    ],
    ids=["cleared-critical", "critical-escalates", "keeps-escalate", "rules-floor",
         "resolved", "restart-other-service"],
)  # fmt: skip
def test_policy_table(example, model, rule, final, changed) -> None:
    notification = load(example)
    allowed = [a.name for a in default_catalog(MANAGED).allowed_for(notification)]
    result, overrides = apply_policy(notification, verdict(**model), verdict(**rule), allowed)
    for name, value in final.items():
        assert getattr(result, name) == value, name
    assert {o.field for o in overrides} == changed
    for o in overrides:
        assert o.final == (getattr(result, o.field).value if o.field == "severity"
                           else getattr(result, o.field))  # fmt: skip


def test_prompt_shows_time_age_suppression_managed_and_expression() -> None:
    notification = load("api-v2-alerts.json")
    now = datetime(2026, 11, 17, 9, 20, 3, tzinfo=UTC)
    prompt = build_user_prompt(notification, {}, managed_service=MANAGED, now=now)
    assert "Current time: 2026-11-17T09:20:03+00:00" in prompt
    assert '"age": "10m"' in prompt  # PostgresReplicationLag started at 09:10:02.907
    assert '"state": "suppressed"' in prompt
    assert '"silenced_by": [\n    "0f1a7c2e-5b3d-4e8a-9c61-2d4b8e7f3a90"' in prompt
    assert '"managed": true' in prompt and '"managed": false' in prompt
    assert '"rule_expression": "pg_replication_lag_seconds{job=\\"postgres\\"} > 30"' in prompt


def test_suppressed_state_reaches_the_analysis() -> None:
    from market_agent.analysis.analyzer import AnalysisService

    analysis = AnalysisService(RuleAnalyzer()).analyze(load("api-v2-alerts.json"), source="t")
    stale = [a for a in analysis.alerts if a.alertname == "PredictorStaleMarketData"]
    assert stale[0].state == "suppressed"
    assert stale[0].silenced_by == ["0f1a7c2e-5b3d-4e8a-9c61-2d4b8e7f3a90"]


def test_system_prompt_has_mapping_actions_and_managed_service() -> None:
    text = system_prompt(
        (("restart", "backend systemd: systemctl restart predictor.service"),),
        (tuple(MANAGED[0].items()),),
        False,
    )
    assert "critical <- critical, crit, page, emergency, fatal, disaster, p1, sev1" in text
    assert "- restart: backend systemd: systemctl restart predictor.service" in text
    assert '{job="market-predictor"}' in text
    assert "$" not in text  # every placeholder filled


def test_rule_expression_from_generator_url() -> None:
    url = "http://p:9090/graph?g0.expr=up%7Bjob%3D%22x%22%7D+%3D%3D+0&g0.tab=1"
    assert rule_expression(url) == 'up{job="x"} == 0'
    assert rule_expression("") == ""
