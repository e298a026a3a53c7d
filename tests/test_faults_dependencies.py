"""Fault injection: Prometheus or Alertmanager is down while `listen` analyses and acts.

Expected outcome: the analysis is still recorded, with the missing source named in
its `context["sources"]`; an automatic action that needs the missing service before
it runs (Alertmanager's re-check that the alert still fires, Prometheus for the
action's `verify_query`) is not run blind: it is blocked, the guard is recorded, and
a human gets an escalation (`alertmanager_unreachable`, `prometheus_unreachable`).

The pipeline is `listen`'s, in-process: `Listener` with the services `AppState` builds
from a config file (rule analysis, live context, remediator); the demo predictor,
Alertmanager and the escalation sink are real local servers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from market_agent.listen.admission import Listener
from market_agent.models import Notification
from market_agent.state import AppState
from tests.helpers import free_port, start_predictor
from tests.test_actions_guards import touch_action
from tests.test_clients_alertmanager import real_alertmanager  # noqa: F401 - a fixture
from tests.test_listen_pipeline import admit, records
from tests.test_prometheus_configs import WebhookRecorder

pytestmark = pytest.mark.slow

ALERTMANAGER_TIMEOUT = 1.0
VERIFY_QUERY = 'up{job="market-predictor"} == 1'


def closed() -> str:
    """The URL of a loopback port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


def write_config(
    tmp_path: Path, *, predictor: str, prometheus: str, alertmanager: str, sink: str, action: str
) -> Path:
    path = tmp_path / "market-agent.toml"
    path.write_text(
        f'[predictor]\nurl = "{predictor}"\ntimeout = 2\n'
        f'[prometheus]\nurl = "{prometheus}"\ntimeout = 2\n'
        f'[alertmanager]\nurl = "{alertmanager}"\ntimeout = {ALERTMANAGER_TIMEOUT}\n'
        "[analysis]\ncontext = true\ncontext_timeout = 2\n"
        f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\nfsync = false\n'
        f'[actions]\nauto_remediate = true\ncooldown = 0\npause_file = "{tmp_path / "p"}"\n'
        f"[actions.restart]\n{action}\n"
        f'[notifiers.oncall]\nurl = "{sink}/escalations"\n'
    )
    return path


def restart_action(marker: Path, *extra: str) -> str:
    """The `[actions.restart]` body: creates `marker` when it runs (it must not)."""
    spec = touch_action(marker)
    lines = [f"argv = {json.dumps(spec['argv'])}", 'alerts = ["PredictorDown"]', *extra]
    return "\n".join([*lines, "verify_timeout = 1"])


def alert_labels(alertname: str, instance: str) -> dict[str, str]:
    return {
        "alertname": alertname,
        "job": "market-predictor",
        "service": "market-predictor",
        "instance": instance,
        "severity": "critical",
    }


def firing(labels: dict[str, str]) -> Notification:
    """No fingerprint: Alertmanager's re-check then matches the alert by its labels."""
    alert = {"status": "firing", "labels": labels, "startsAt": datetime.now(UTC).isoformat()}
    return Notification.model_validate({"status": "firing", "alerts": [alert]})


def listen_to(
    config: Path, notification: Notification, *, remediate: bool = True, use_llm: bool = False
) -> Path:
    """Admit one notification to a listener wired as `listen` wires it; drain; stop;
    returns the audit log's path."""
    state = AppState(config_path=config)
    audit = state.audit_log
    assert audit is not None
    listener = Listener(
        audit,
        state.analysis_service(use_llm=use_llm),
        context_for=state.context_provider(),
        remediator=state.remediator() if remediate else None,
    )
    listener.start()
    try:
        [admission] = admit(listener, notification)
        assert admission.status == "accepted"
    finally:
        assert listener.stop(30) == 0
        state.close()
    return audit.path


def kind(path: Path, name: str) -> list[dict[str, Any]]:
    return [r for r in records(path) if r["kind"] == name]


def assert_not_run_but_escalated(path: Path, marker: Path, guard: str, reason: str) -> None:
    assert not marker.exists()
    steps = [(r["step"], r["outcome"]) for r in kind(path, "action")]
    assert ("execute", "started") not in steps
    assert steps[-1] == ("result", "blocked")
    assert [r["guard"] for r in kind(path, "action") if r["step"] == "guard"] == [guard]
    (escalation,) = kind(path, "escalation")
    assert (escalation["reason"], escalation["outcome"]) == (reason, "sent")
    (analysis,) = kind(path, "analysis")
    assert escalation["analysis_id"] == analysis["id"]


@pytest.fixture
def sink() -> Iterator[tuple[str, WebhookRecorder]]:
    port = free_port()
    with WebhookRecorder(port) as recorder:
        yield f"http://127.0.0.1:{port}", recorder


def test_prometheus_and_alertmanager_down_during_analysis_the_gap_is_recorded(tmp_path, sink):
    port = free_port()
    with start_predictor(tmp_path, port, traffic_rps=5):
        config = write_config(
            tmp_path,
            predictor=f"http://127.0.0.1:{port}",
            prometheus=closed(),
            alertmanager=closed(),
            sink=sink[0],
            action=restart_action(tmp_path / "ran"),
        )
        labels = alert_labels("PredictorHighErrorRate", f"127.0.0.1:{port}")
        path = listen_to(config, firing(labels), remediate=False)
    (analysis,) = kind(path, "analysis")
    assert analysis["analyzer"] == "rules" and analysis["issue_detected"] is True
    sources = analysis["context"]["sources"]
    assert sources["predictor"] == {"ok": True, "error": None, "kind": None}
    assert sources["prometheus"]["ok"] is False
    assert sources["prometheus"]["kind"] == "connection_refused"
    assert analysis["context"]["predictor"]["healthy"] is True
    assert {analysis["context"]["metrics"][name] for name in ("up", "error_ratio")} == {None}


@pytest.mark.parametrize("how", ["refused", "hanging"])
def test_alertmanager_down_before_an_action_escalates_instead_of_acting(
    tmp_path,
    sink,
    silent_llm,
    how,
):
    marker = tmp_path / "ran"
    predictor = closed()  # the predictor is down: the analysis asks for a restart
    config = write_config(
        tmp_path,
        predictor=predictor,
        prometheus=closed(),
        alertmanager=closed() if how == "refused" else silent_llm.removesuffix("/v1"),
        sink=sink[0],
        action=restart_action(marker),
    )
    started = time.monotonic()
    path = listen_to(config, firing(alert_labels("PredictorDown", predictor[7:])))
    # Context gathering and the re-check are each bounded by their timeouts.
    assert time.monotonic() - started < 2 + ALERTMANAGER_TIMEOUT + 5
    (analysis,) = kind(path, "analysis")
    assert (analysis["proposed_action"], analysis["requires_immediate_action"]) == (
        "restart",
        True,
    )
    assert_not_run_but_escalated(path, marker, "alert_state", "alertmanager_unreachable")
    (event,) = [r["json"] for r in sink[1].requests]
    assert event["reason"] == "alertmanager_unreachable"


def test_prometheus_down_before_an_action_with_a_verify_query_escalates_instead(
    tmp_path,
    sink,
    real_alertmanager,  # noqa: F811 - the fixture
):
    marker = tmp_path / "ran"
    predictor = closed()
    labels = alert_labels("PredictorDown", predictor[7:])
    _, alertmanager = real_alertmanager
    ends = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    alert = {"labels": labels, "endsAt": ends}
    httpx.post(f"{alertmanager}/api/v2/alerts", json=[alert], timeout=5).raise_for_status()
    config = write_config(
        tmp_path,
        predictor=predictor,
        prometheus=closed(),
        alertmanager=alertmanager,  # up, and the alert is firing there
        sink=sink[0],
        action=restart_action(marker, f"verify_query = {json.dumps(VERIFY_QUERY)}"),
    )
    path = listen_to(config, firing(labels))
    assert_not_run_but_escalated(path, marker, "verification", "prometheus_unreachable")
    (event,) = [r["json"] for r in sink[1].requests]
    assert "Prometheus did not answer" in event["message"]
