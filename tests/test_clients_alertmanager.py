"""AlertmanagerClient: unit tests against pytest-httpx, then a real Alertmanager."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from market_agent.clients import (
    AlertmanagerClient,
    ClientError,
    FailureKind,
    Matcher,
    RetryPolicy,
)
from market_agent.settings import EndpointSettings

URL = "http://alertmanager.test:9093"
ALERTS = re.compile(re.escape(f"{URL}/api/v2/alerts") + ".*")
SILENCES = re.compile(re.escape(f"{URL}/api/v2/silences") + ".*")


@pytest.fixture
def alertmanager() -> AlertmanagerClient:
    retry = RetryPolicy(initial_wait=0.01, max_wait=0.02, jitter=0)
    return AlertmanagerClient(EndpointSettings(url=URL, timeout=2.0), retry=retry)


def api_alert(name: str, state: str = "active", silenced_by: list[str] | None = None) -> dict:
    return {
        "labels": {"alertname": name, "service": "market-predictor", "severity": "critical"},
        "annotations": {"summary": f"{name} summary"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2026-01-01T01:00:00Z",
        "fingerprint": "abc",
        "status": {"state": state, "silencedBy": silenced_by or [], "inhibitedBy": []},
    }


def silence(silence_id: str, state: str, **matchers: str) -> dict:
    return {
        "id": silence_id,
        "status": {"state": state},
        "matchers": [
            {"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()
        ],
        "createdBy": "oncall",
        "comment": "deploy",
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2026-01-01T02:00:00Z",
    }


def test_status(httpx_mock, alertmanager):
    httpx_mock.add_response(url=f"{URL}/api/v2/status", json={"versionInfo": {"version": "0.27"}})
    assert alertmanager.status()["versionInfo"]["version"] == "0.27"


def test_alerts_are_filtered_by_quoted_label_matchers(httpx_mock, alertmanager):
    httpx_mock.add_response(url=ALERTS, json=[api_alert("PredictorDown")])
    [alert] = alertmanager.alerts({"service": "market-predictor", "x": 'a"b'})
    assert alert.labels["alertname"] == "PredictorDown"
    assert alert.status.state == "active"
    params = httpx_mock.get_requests()[0].url.params
    assert params.get_list("filter") == ['service="market-predictor"', 'x="a\\"b"']
    assert (params["active"], params["silenced"], params["inhibited"]) == ("true", "true", "true")


def test_is_firing_excludes_silenced_and_inhibited(httpx_mock, alertmanager):
    httpx_mock.add_response(url=ALERTS, json=[api_alert("PredictorDown")])
    httpx_mock.add_response(url=ALERTS, json=[])
    assert alertmanager.is_firing("PredictorDown", {"service": "market-predictor"}) is True
    assert alertmanager.is_firing("PredictorDown") is False
    first = httpx_mock.get_requests()[0].url.params
    assert (first["silenced"], first["inhibited"]) == ("false", "false")
    assert first.get_list("filter") == ['alertname="PredictorDown"', 'service="market-predictor"']


def test_alerts_that_are_not_alerts(httpx_mock, alertmanager):
    httpx_mock.add_response(url=ALERTS, json=[{"annotations": {}}])
    with pytest.raises(ClientError) as caught:
        alertmanager.alerts()
    assert caught.value.kind is FailureKind.INVALID_BODY
    assert "labels" in caught.value.detail


def test_silences_keep_active_ones_by_default(httpx_mock, alertmanager):
    body = [
        silence("s1", "active", service="market-predictor"),
        silence("s2", "expired", service="market-predictor"),
    ]
    httpx_mock.add_response(url=SILENCES, json=body, is_reusable=True)
    assert [s.id for s in alertmanager.silences()] == ["s1"]
    assert [s.id for s in alertmanager.silences(active_only=False)] == ["s1", "s2"]
    [active] = alertmanager.silences()
    assert (active.created_by, active.comment) == ("oncall", "deploy")
    assert [str(m) for m in active.matchers] == ['service="market-predictor"']


def test_malformed_silences(httpx_mock, alertmanager):
    httpx_mock.add_response(url=SILENCES, json=[{"matchers": []}])
    with pytest.raises(ClientError, match="not a silence"):
        alertmanager.silences()


def test_alertmanager_error_message_is_shown(httpx_mock, alertmanager):
    body = {"code": 400, "message": "bad matcher format: x=~"}
    httpx_mock.add_response(url=ALERTS, status_code=400, json=body)
    with pytest.raises(ClientError, match="bad matcher format: x=~"):
        alertmanager.alerts()


@pytest.mark.parametrize(
    ("matcher", "labels", "matches"),
    [
        (Matcher("job", "a"), {"job": "a"}, True),
        (Matcher("job", "a"), {"job": "b"}, False),
        (Matcher("job", "a", is_equal=False), {"job": "b"}, True),
        (Matcher("job", "a|b", is_regex=True), {"job": "b"}, True),
        (Matcher("job", "a", is_regex=True), {"job": "ab"}, False),  # anchored
        (Matcher("job", "a", is_regex=True, is_equal=False), {"job": "ab"}, True),
        (Matcher("job", "(", is_regex=True), {"job": "("}, False),  # invalid regex
        (Matcher("env", ""), {"job": "a"}, True),  # empty value: label absent
    ],
)
def test_matcher_semantics(matcher, labels, matches):
    assert matcher.matches(labels) is matches


def test_matcher_text():
    assert str(Matcher("a", "x", is_regex=True, is_equal=False)) == 'a!~"x"'


# A real Alertmanager -------------------------------------------------------------


@pytest.fixture(scope="module")
def real_alertmanager(tmp_path_factory):
    from tests.helpers import free_port, render_monitoring_configs, start_alertmanager

    tmp_path = tmp_path_factory.mktemp("alertmanager-client")
    port = free_port()
    configs = render_monitoring_configs(
        tmp_path,
        predictor_port=free_port(),
        agent_port=free_port(),
        alertmanager_port=port,
        token_file=tmp_path / "token",
    )
    with start_alertmanager(tmp_path, configs.alertmanager, port):
        url = f"http://127.0.0.1:{port}"
        client = AlertmanagerClient(EndpointSettings(url=url))
        yield client, url
        client.close()


@pytest.mark.slow
def test_real_alerts_silences_and_is_firing(real_alertmanager):
    client, url = real_alertmanager
    now = datetime.now(UTC)
    labels = {"alertname": "PredictorHighLatency", "service": "market-predictor", "instance": "i1"}
    alert = {"labels": labels, "startsAt": now.isoformat(), "annotations": {"summary": "slow"}}
    httpx.post(f"{url}/api/v2/alerts", json=[alert], timeout=5).raise_for_status()

    assert client.status()["versionInfo"]["version"]
    [found] = client.alerts({"service": "market-predictor"})
    assert found.labels["alertname"] == "PredictorHighLatency"
    assert client.alerts({"service": "someone-else"}) == []
    assert client.is_firing("PredictorHighLatency", {"instance": "i1"}) is True

    matchers = [{"name": "alertname", "value": "PredictorHighLatency", "isRegex": False}]
    new_silence = {
        "matchers": matchers,
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "test",
        "comment": "maintenance",
    }
    response = httpx.post(f"{url}/api/v2/silences", json=new_silence, timeout=5)
    response.raise_for_status()
    silence_id = response.json()["silenceID"]

    [active] = client.silences()
    assert (active.id, active.state, active.comment) == (silence_id, "active", "maintenance")
    assert active.matches(labels)
    assert client.is_firing("PredictorHighLatency", {"instance": "i1"}) is False
    [suppressed] = client.alerts({"alertname": "PredictorHighLatency"})
    assert suppressed.status.state == "suppressed"
    assert suppressed.status.silenced_by == [silence_id]
