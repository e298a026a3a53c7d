"""Fault injection: the predictor restarts but stays unhealthy.

The demo predictor runs with the `errors` fault (its /health answers 503), and the
`command` restart action, like its rollback, relaunches it with the same fault.
Expected outcome: each `market-agent restart` is rolled back, fails verification
again and is escalated to the notifier (exit 7, `action_failed`); once
`max_executions` restarts are spent, the circuit breaker blocks the next one (exit 5,
the guard recorded) and the predictor is left alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import free_port, start_predictor, wait_until
from tests.test_prometheus_configs import WebhookRecorder
from tests.test_restart_real import (  # noqa: F401 - pidfile is a fixture
    audit,
    market_agent,
    pidfile,
    restart_argv,
    write_config,
)

pytestmark = pytest.mark.slow

MAX_EXECUTIONS = 2
#: Appended to the predictor's argv in the restart script (Python source).
UNHEALTHY = ', "--start-fault", "errors"'


def unhealthy_restart_argv(tmp_path: Path, pidfile: Path) -> list[str]:  # noqa: F811
    """`restart_argv`'s script, relaunching the predictor with the `errors` fault."""
    argv = restart_argv(tmp_path, pidfile)
    script = Path(argv[1])
    healthy = '"--log-level", "warning"]'
    assert healthy in script.read_text(), "tests.test_restart_real.RESTART_SCRIPT changed"
    script.write_text(script.read_text().replace(healthy, healthy[:-1] + UNHEALTHY + "]"))
    return argv


def test_restart_into_an_unhealthy_predictor_rolls_back_escalates_then_trips_the_breaker(
    tmp_path: Path,
    pidfile: Path,  # noqa: F811 - the fixture
) -> None:
    port, sink_port = free_port(), free_port()
    argv = json.dumps(unhealthy_restart_argv(tmp_path, pidfile))
    config = write_config(
        tmp_path,
        port,
        f"max_executions = {MAX_EXECUTIONS}\n"
        f'[actions.restart]\nargv = {argv}\nparams = {{ instance = "127.0.0.1:{port}" }}\n'
        "timeout = 30\nverify_timeout = 2.5\n"
        f"[actions.restart.rollback]\nargv = {argv}\ntimeout = 30\n"
        f'[notifiers.oncall]\nurl = "http://127.0.0.1:{sink_port}/escalations"\n',
    )
    with (
        WebhookRecorder(sink_port) as sink,
        start_predictor(tmp_path, port, traffic_rps=5, start_faults=["errors"]) as original,
    ):
        pidfile.write_text(str(original.pid))
        runs = [market_agent(config, "restart", "--yes", "--json") for _ in range(MAX_EXECUTIONS)]
        wait_until(lambda: len(sink.requests) == MAX_EXECUTIONS, 10, message="escalations")
        still_running = int(pidfile.read_text())
        blocked = market_agent(config, "restart", "--yes", "--json")
        assert int(pidfile.read_text()) == still_running  # the breaker kept it from running

    for run in runs:
        assert run.returncode == 7, run.stderr + run.stdout
        result = json.loads(run.stdout)
        assert result["outcome"] == "failed"
        steps = [(s["step"], s["outcome"]) for s in result["steps"]]
        assert steps == [
            ("execute", "started"),
            ("execute", "succeeded"),
            ("verify", "failed"),
            ("rollback", "started"),
            ("rollback", "succeeded"),
            ("rollback_verify", "failed"),
            ("result", "failed"),
        ]
        assert "unhealthy" in result["steps"][2]["detail"]  # up again, and still failing
    assert [r["json"]["reason"] for r in sink.requests] == ["action_failed"] * MAX_EXECUTIONS
    assert {r["json"]["action_id"] for r in sink.requests} == {
        json.loads(run.stdout)["action_id"] for run in runs
    }

    assert blocked.returncode == 5, blocked.stderr + blocked.stdout
    assert json.loads(blocked.stdout)["outcome"] == "blocked"
    records = audit(tmp_path)
    guards = [r for r in records if r["kind"] == "action" and r["step"] == "guard"]
    assert [(g["guard"], g["outcome"]) for g in guards] == [("circuit_breaker", "blocked")]
    executed = [r for r in records if r.get("step") == "execute" and r["outcome"] == "started"]
    assert len(executed) == MAX_EXECUTIONS
    assert len([r for r in records if r["kind"] == "escalation"]) == MAX_EXECUTIONS
