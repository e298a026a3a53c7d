"""bench/bench_loop.py's arithmetic and parsing, without servers: milestones -> phases
-> the summary; Prometheus samples, relay deliveries and audit records -> milestones."""

from __future__ import annotations

import sys
from types import ModuleType

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def bench() -> tuple[ModuleType, ModuleType, ModuleType]:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_loop
        import loop_phases
        import timing_relay
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return bench_loop, loop_phases, timing_relay


T0 = 1_800_000_000.0
#: One run, seconds after the kill.
RUN = {
    "injected": 0.0,
    "scraped": 0.4,
    "firing": 0.9,
    "received": 1.9,
    "journaled": 1.901,
    "analysed": 1.907,
    "guards_passed": 1.913,
    "action_started": 1.915,
    "restarted": 2.1,
    "healthy": 2.7,
    "verified": 2.75,
    "resolved": 4.0,
}


def milestones(shift: float = 0.0, **missing: None) -> dict[str, float | None]:
    found: dict[str, float | None] = {k: T0 + v + shift for k, v in RUN.items()}
    found.update(missing)
    return found


def test_phases_are_the_gaps_between_milestones_in_ms(bench) -> None:
    _, phases, _ = bench
    found = phases.phases(milestones())
    assert found["kill/fault -> scrape saw it"] == 400.0
    assert found["received -> journaled"] == 1.0
    assert found["healthy -> verified"] == 50.0
    assert found[phases.AGENT] == 15.0
    assert found[phases.TOTAL] == 2750.0
    assert found["kill/fault -> resolved notification"] == 4000.0


def test_a_missing_milestone_leaves_only_its_phases_out(bench) -> None:
    _, phases, _ = bench
    found = phases.phases(milestones(healthy=None))
    assert found["command done -> healthy"] is None and found["healthy -> verified"] is None
    assert found[phases.TOTAL] == 2750.0


def test_summary_median_worst_and_the_agents_share(bench) -> None:
    _, phases, _ = bench
    runs = [phases.phases(milestones()) for _ in range(2)]
    slow = milestones()
    slow["action_started"] = T0 + 1.96  # the agent took 60 ms once
    slow["guards_passed"] = T0 + 1.95
    runs.append(phases.phases(slow))
    rows = phases.summarize(runs)
    agent = next(row for row in rows if row.label == phases.AGENT)
    assert (agent.median_ms, agent.worst_ms, agent.runs) == (15.0, 60.0, 3)
    share = phases.agent_share(rows)
    assert share == {"median_ms": 15.0, "worst_ms": 60.0, "percent_of_total": 0.55}
    table = phases.table("down", rows)
    assert "| agent | received -> journaled | 1.0 ms | 1.0 ms | 3 |" in table
    assert "| total | kill/fault -> verified recovery | 2,750 ms | 2,750 ms | 3 |" in table


def test_prometheus_samples_give_the_first_one_after_the_kill(bench) -> None:
    loop, phases, _ = bench
    samples = [[T0 - 1, "1"], [T0 - 0.1, "0"], [T0 + 0.6, "1"], [T0 + 1.6, "0"]]
    assert phases.first_sample_at_or_after(samples, T0, lambda v: v == 0) == T0 + 1.6
    series = [{"values": samples}, {"values": [[T0 + 0.2, "0"]]}]
    assert loop.earliest(series, T0, lambda v: v == 0) == T0 + 0.2
    assert loop.earliest([], T0) is None


def test_the_command_started_its_duration_before_it_returned(bench) -> None:
    _, phases, _ = bench
    assert phases.action_started(T0 + 2.1, 185.0) == pytest.approx(T0 + 1.915)
    assert phases.action_started(None, 185.0) is None


def test_deliveries_and_audit_records_are_matched_to_the_run(bench) -> None:
    loop, _, relay = bench

    def delivered(at: float, status: str, name: str, code: int = 200) -> object:
        alerts = [{"status": status, "labels": {"alertname": name}}]
        request = {"status": status, "alerts": alerts}
        return relay.Delivery(at, at + 0.002, code, request, {"id": f"n{at}"})

    items = [
        delivered(T0 - 5, "firing", "PredictorDown"),  # an earlier run
        delivered(T0 + 1, "firing", "PredictorRestartingTooOften"),
        delivered(T0 + 2, "firing", "PredictorDown", code=503),  # refused: retried
        delivered(T0 + 3, "firing", "PredictorDown"),
        delivered(T0 + 4, "resolved", "PredictorDown"),
    ]
    firing = loop.delivery(items, "PredictorDown", "firing", T0)
    assert firing.arrived == T0 + 3 and firing.response["id"] == f"n{T0 + 3}"
    assert loop.delivery(items, "PredictorDown", "resolved", firing.arrived).arrived == T0 + 4
    records = [
        {"kind": "action", "notification_id": "other", "step": "execute", "outcome": "started"},
        {"kind": "action", "notification_id": "n1", "step": "execute", "outcome": "started"},
        {"kind": "action", "notification_id": "n1", "step": "verify", "outcome": "passed"},
    ]
    steps = loop.action_records(records, "n1")
    assert set(steps) == {"execute/started", "verify/passed"} and loop.finished(steps) is None
    records.append({"kind": "action", "notification_id": "n1", "step": "result", "outcome": "x"})
    assert loop.finished(loop.action_records(records, "n1"))
