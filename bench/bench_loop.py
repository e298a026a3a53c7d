"""The recovery loop end to end: from the predictor's death to a verified restart.

    python bench/bench_loop.py [--runs 10] [--scenario down|unhealthy|both] [--json]
        [--scrape-interval 1s] [--evaluation-interval 1s] [--for 0s]
        [--group-wait 1s] [--group-interval 1s] [--no-verify-query]
        [--llm-delay SECONDS] [--audit-records N] [--breaker-history N]

Starts, on loopback ports, the demo predictor, Debian's `prometheus` and
`prometheus-alertmanager` with this project's `prometheus/` configs (ports and the
timings above rewritten, and printed), and `market-agent listen --auto-remediate`
(`--no-llm`, unless `--llm-delay` points it at a local stand-in model answering after
that delay) with a `command` restart action (`bench/restart_predictor.py`) that
really stops the predictor and starts a new one. Alertmanager posts through a
timing relay (`bench/timing_relay.py`), which notes when each notification arrives.

Then, N times per scenario:
- `down`: kill -9 the predictor (`PredictorDown`);
- `unhealthy`: inject the `stale_data` fault: the predictor stays up and scraped but
  its /health fails (`PredictorStaleMarketData`; a bench-only rule makes the rule
  analyzer treat it as an outage a restart fixes, as a team whose feed client hangs
  would configure);
and measures each phase from the kill or fault (bench/loop_phases.py says where each
milestone is read): detection (Prometheus' own timestamps), delivery, the agent
(receipt -> journaled -> analysed -> guards passed -> action started, from the audit
log), the action (restart -> healthy -> verified), the total, then the resolved
notification. One warm-up run comes first and is not counted. Every process is
stopped by its PID; each run is bounded (`RUN_TIMEOUT`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import loop_phases
import yaml
from common import ROOT, record
from timing_relay import Delivery, TimingRelay

sys.path.insert(0, str(ROOT))
from tests.helpers import (
    ManagedProcess,
    free_port,
    start_alertmanager,
    start_prometheus,
    wait_until,
)

RUN_TIMEOUT = 60.0
#: The agent and the restart script run this tree's code, whatever is installed.
TREE = {"PYTHONPATH": str(ROOT)}
#: Seconds past group_interval to wait for a resolved notification that may never come.
RESOLVED_GRACE = 2.0
HEALTH_POLL = 0.01
TOKEN = "bench-loop-token-8f3a"
VERIFY_QUERY = 'up{job="market-predictor"} == 1'
SCENARIOS = {
    "down": ("PredictorDown", "kill -9 the predictor"),
    "unhealthy": ("PredictorStaleMarketData", "stale_data fault: alive, /health 503"),
}
#: Makes the rule analyzer propose a restart for the stale-feed alert (scenario B).
STALE_RULE = {
    "id": "bench-stale-feed-restart",
    "issue_type": "availability",
    "weight": 5.0,
    "labels": {"alertname": "PredictorStaleMarketData"},
}
VERDICT = {
    "issue_detected": True,
    "severity": "critical",
    "issue_type": "availability",
    "description": "The Market Predictor is not serving; a restart should bring it back.",
    "recommended_actions": ["Check /health", "Restart it"],
    "proposed_action": "restart",
    "confidence": 0.9,
    "requires_immediate_action": True,
}


@dataclass(frozen=True)
class Timings:
    scrape_interval: str
    evaluation_interval: str
    alert_for: str
    down_for: str
    group_wait: str
    group_interval: str
    verify_query: str | None
    llm_delay: float | None
    audit_records: int
    breaker_history: int


@dataclass(frozen=True)
class Ports:
    predictor: int
    agent: int
    relay: int
    alertmanager: int
    prometheus: int

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{getattr(self, name)}"


# Configuration ------------------------------------------------------------------------


def render_configs(directory: Path, ports: Ports, timings: Timings, token_file: Path) -> Path:
    """The shipped prometheus/*.yml onto the bench's ports and timings; returns the
    Prometheus config (Alertmanager's is beside it)."""
    source = ROOT / "prometheus"
    prometheus = yaml.safe_load((source / "prometheus.yml").read_text())
    prometheus["global"].update(
        scrape_interval=timings.scrape_interval,
        scrape_timeout=timings.scrape_interval,
        evaluation_interval=timings.evaluation_interval,
    )
    prometheus["rule_files"] = ["alerts.yml"]
    targets = {"market-predictor": ports.predictor, "market-agent": ports.agent}
    for job in prometheus["scrape_configs"]:
        job.pop("scrape_interval", None)  # the run's timings, not the shipped ones
        job.pop("scrape_timeout", None)
        for static in job["static_configs"]:
            static["targets"] = [f"127.0.0.1:{targets[job['job_name']]}"]
    prometheus["alerting"]["alertmanagers"][0]["static_configs"] = [
        {"targets": [f"127.0.0.1:{ports.alertmanager}"]}
    ]
    alerts = yaml.safe_load((source / "alerts.yml").read_text())
    for group in alerts["groups"]:
        group.pop("interval", None)
        for rule in group["rules"]:
            if "alert" in rule:
                down = rule["alert"] == "PredictorDown"
                rule["for"] = timings.down_for if down else timings.alert_for
    alertmanager = yaml.safe_load((source / "alertmanager.yml").read_text())
    for route in [alertmanager["route"], *alertmanager["route"].get("routes", [])]:
        route.update(group_wait=timings.group_wait, group_interval=timings.group_interval)
    for receiver in alertmanager["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{ports.relay}/webhook/alerts"
            hook["http_config"]["authorization"] = {
                "type": "Bearer",
                "credentials_file": str(token_file),
            }
    for name, data in [
        ("prometheus.yml", prometheus),
        ("alerts.yml", alerts),
        ("alertmanager.yml", alertmanager),
    ]:
        (directory / name).write_text(yaml.safe_dump(data, sort_keys=False))
    return directory / "prometheus.yml"


def restart_argv(tmp: Path, ports: Ports) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "bench" / "restart_predictor.py"),
        str(tmp / "predictor.pid"),
        f"127.0.0.1:{ports.predictor}",
        str(tmp / "predictor.log"),
        "--traffic-rps",
        "5",
        "--log-level",
        "warning",
    ]


def agent_config(tmp: Path, ports: Ports, timings: Timings, llm_url: str | None) -> Path:
    restart = {
        "argv": restart_argv(tmp, ports),
        "alerts": [name for name, _ in SCENARIOS.values()],
        "timeout": 30,
        "verify_timeout": 30,
    }
    if timings.verify_query:
        restart["verify_query"] = timings.verify_query
    lines = [
        f"[predictor]\nurl = {json.dumps(ports.url('predictor'))}\ntimeout = 2",
        f"[prometheus]\nurl = {json.dumps(ports.url('prometheus'))}",
        f"[alertmanager]\nurl = {json.dumps(ports.url('alertmanager'))}",
        # One file however large the pre-filled log (no rotation in the middle of a run).
        f"[audit]\npath = {json.dumps(str(tmp / 'audit.jsonl'))}\nmax_bytes = {2**40}",
        # A long breaker history must not trip it: the bench restarts 20+ times an hour.
        '[actions]\nmax_executions = 1000000\nwindow = "1h"\ncooldown = "0s"\n'
        f"pause_file = {json.dumps(str(tmp / 'paused'))}",
        "[actions.restart]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in restart.items()),
        "[[analysis.rules]]\n"
        + "\n".join(
            f"{k} = {json.dumps(v)}"
            if k != "labels"
            else 'labels = { alertname = "' + v["alertname"] + '" }'
            for k, v in STALE_RULE.items()
        ),
    ]
    if llm_url is not None:
        lines.append(
            f'[llm]\nbase_url = {json.dumps(llm_url)}\napi_key = "sk-bench-0123456789"\n'
            "timeout = 60\nrequests_per_minute = 100000"
        )
    path = tmp / "market-agent.toml"
    path.write_text("\n\n".join(lines) + "\n")
    return path


def prefill_audit(path: Path, records: int, breaker_history: int) -> None:
    """A big audit log (bench_history's generator) and many recent restarts."""
    if records:
        from bench_history import generate

        started = time.perf_counter()
        generate(path, records)
        took = time.perf_counter() - started
        print(f"audit log: {records:,} records generated in {took:.0f} s", file=sys.stderr)
    if breaker_history:
        from market_agent.audit import AuditLog

        log = AuditLog(path)
        batch: list[tuple[str, dict[str, Any]]] = []
        for n in range(breaker_history):
            batch += fake_execution(n)
            if len(batch) >= 2000:
                log.append_many(batch)
                batch = []
        log.append_many(batch)


def fake_execution(n: int) -> list[tuple[str, dict[str, Any]]]:
    base = {
        "action": "restart",
        "action_id": f"{n:032x}",
        "alertnames": ["PredictorDown"],
        "trigger": "auto",
        "analysis_id": None,
        "notification_id": None,
    }
    key = f"{n:016x}|2026-11-17T03:14:00.318000+00:00"
    return [
        ("action", {**base, "step": "execute", "outcome": "started", "alert_keys": [key]}),
        ("action", {**base, "step": "execute", "outcome": "succeeded", "duration_ms": 5.0}),
        ("action", {**base, "step": "verify", "outcome": "passed", "duration_ms": 900.0}),
        (
            "action",
            {**base, "step": "result", "outcome": "verified", "recover_s": 1.0, "elapsed_s": 1.0},
        ),
    ]


# The stack ------------------------------------------------------------------------------


class Stack:
    def __init__(self, exits: ExitStack, tmp: Path, timings: Timings) -> None:
        self.exits = exits
        self.tmp = tmp
        self.timings = timings
        self.ports = Ports(*(free_port() for _ in range(5)))
        self.audit = tmp / "audit.jsonl"
        self.pidfile = tmp / "predictor.pid"
        self.http = exits.enter_context(httpx.Client(timeout=2.0))

    def start(self, llm_url: str | None) -> None:
        token_file = self.tmp / "webhook-token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        prefill_audit(self.audit, self.timings.audit_records, self.timings.breaker_history)
        self.restart_predictor()
        self.exits.callback(self.stop_predictor)
        wait_until(self.healthy, 30, interval=0.05, message="predictor healthy")
        config = agent_config(self.tmp, self.ports, self.timings, llm_url)
        argv = [sys.executable, "-m", "market_agent", "--config", str(config), "listen"]
        argv += ["--port", str(self.ports.agent), "--token-file", str(token_file)]
        argv += ["--auto-remediate"] + (["--no-llm"] if llm_url is None else [])
        agent = self.exits.enter_context(
            ManagedProcess(argv, log_path=self.tmp / "agent.log", cwd=self.tmp, env=TREE)
        )
        agent.wait_for_http(f"{self.ports.url('agent')}/readyz", timeout=120)
        self.relay = self.exits.enter_context(TimingRelay(self.ports.relay, self.ports.agent))
        prometheus_yml = render_configs(self.tmp, self.ports, self.timings, token_file)
        self.exits.enter_context(
            start_alertmanager(self.tmp, self.tmp / "alertmanager.yml", self.ports.alertmanager)
        )
        self.exits.enter_context(start_prometheus(self.tmp, prometheus_yml, self.ports.prometheus))

    # The predictor, through the same script the action runs.
    def restart_predictor(self) -> None:
        subprocess.run(restart_argv(self.tmp, self.ports), check=True, timeout=30,
                       stdout=subprocess.DEVNULL, env={**os.environ, **TREE})  # fmt: skip

    def predictor_pid(self) -> int:
        return int(self.pidfile.read_text())

    def stop_predictor(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = self.predictor_pid()
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)

    def healthy(self) -> bool:
        try:
            return self.http.get(f"{self.ports.url('predictor')}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = self.http.get(
            f"{self.ports.url('prometheus')}/api/v1/query", params={"query": expr}
        )
        response.raise_for_status()
        return response.json()["data"]["result"]


# One run ---------------------------------------------------------------------------------


class HealthWatch:
    """Polls the predictor's /health from before the kill: the first 200 after a
    failure is the new predictor being healthy."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.healthy_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _watch(self) -> None:
        failed = False
        with httpx.Client(timeout=0.5) as client:
            while not self._stop.is_set():
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok and failed:
                    self.healthy_at = time.time()
                    return
                failed = failed or not ok
                self._stop.wait(HEALTH_POLL)


def new_records(path: Path, offset: int) -> list[dict[str, Any]]:
    """The records appended since `offset` (all of them if the log rotated since)."""
    with path.open("rb") as handle:
        handle.seek(offset if offset <= path.stat().st_size else 0)
        data = handle.read()
    lines = data.split(b"\n")[:-1]  # a line still being written is read next time
    return [json.loads(line) for line in lines if line.strip()]


def delivery(
    deliveries: list[Delivery], alertname: str, status: str, after: float
) -> Delivery | None:
    for item in deliveries:
        if (
            item.arrived >= after
            and item.notification_status == status
            and alertname in item.alertnames
            and item.status == 200
        ):
            return item
    return None


def action_records(
    records: list[dict[str, Any]], notification_id: str
) -> dict[str, dict[str, Any]]:
    """`step/outcome` -> the action record, for the action this notification caused."""
    found = {}
    for item in records:
        if item.get("kind") == "action" and item.get("notification_id") == notification_id:
            found[f"{item['step']}/{item['outcome']}"] = item
    return found


def finished(steps: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """The steps, once the action has its result."""
    return steps if any(key.startswith("result/") for key in steps) else None


def epoch(ts: str | None) -> float | None:
    if ts is None:
        return None
    from market_agent.audit.query import epoch as parse

    return parse(ts)


def run_once(stack: Stack, scenario: str) -> dict[str, Any]:
    """Break the predictor, wait for the verified restart and the resolution; the
    milestones of the run."""
    alertname = SCENARIOS[scenario][0]
    wait_until(lambda: quiet(stack, alertname), RUN_TIMEOUT, interval=0.05, message="quiet")
    offset = stack.audit.stat().st_size
    with HealthWatch(f"{stack.ports.url('predictor')}/health") as watch:
        # At a random point of the scrape cycle: otherwise every run lands at the same
        # phase of Prometheus' schedule, and the phases that wait for it look constant.
        time.sleep(0.05 + random.uniform(0, seconds(stack.timings.scrape_interval)))
        injected = time.time()
        inject(stack, scenario)
        firing = firing_notification(stack, alertname, injected)
        nid = firing.response.get("id")
        steps = wait_until(
            lambda: finished(action_records(new_records(stack.audit, offset), nid)),
            RUN_TIMEOUT,
            interval=0.05,
            message="the action's result",
        )
        outcome = next(k for k in steps if k.startswith("result/")).split("/")[1]
        if outcome != "verified":  # bring it back by hand, or the next run cannot start
            stack.restart_predictor()
        resolved = resolution(stack, alertname, firing.arrived)
    records = new_records(stack.audit, offset)
    milestones = {
        "injected": injected,
        **detection(stack, scenario, alertname, injected),
        "received": firing.arrived,
        **agent_milestones(records, nid, steps),
        "healthy": watch.healthy_at,
        "resolved": resolved.arrived if resolved is not None else None,
    }
    return {"scenario": scenario, "outcome": outcome, "milestones": milestones}


def firing_notification(stack: Stack, alertname: str, since: float) -> Delivery:
    try:
        return wait_until(
            lambda: delivery(stack.relay.snapshot(), alertname, "firing", since),
            RUN_TIMEOUT,
            interval=0.02,
            message=f"{alertname} firing notification",
        )
    except TimeoutError:
        diagnose(stack, alertname)
        raise


def agent_milestones(
    records: list[dict[str, Any]], nid: str, steps: dict[str, dict[str, Any]]
) -> dict[str, float | None]:
    """Journaled, analysed, guards passed, action started, restarted, verified."""
    notification = next((r for r in records if r.get("id") == nid), {})
    analysis = next(
        (r for r in records if r.get("kind") == "analysis" and r.get("notification_id") == nid),
        {},
    )
    succeeded = steps.get("execute/succeeded", {})
    return {
        "journaled": epoch(notification.get("ts")),
        "analysed": epoch(analysis.get("ts")),
        "guards_passed": epoch(steps.get("execute/started", {}).get("ts")),
        "action_started": loop_phases.action_started(
            epoch(succeeded.get("ts")), succeeded.get("duration_ms")
        ),
        "restarted": epoch(succeeded.get("ts")),
        "verified": epoch(steps.get("verify/passed", {}).get("ts")),
    }


def resolution(stack: Stack, alertname: str, after: float) -> Delivery | None:
    """The resolved notification, or None when Alertmanager never sends it: a resolved
    alert that an inhibition mutes at that moment (a `PredictorDown` seen during the
    restart itself) is dropped without a notification."""
    deadline = time.monotonic() + RUN_TIMEOUT
    grace = seconds(stack.timings.group_interval) + RESOLVED_GRACE
    gone_at = None
    while time.monotonic() < deadline:
        found = delivery(stack.relay.snapshot(), alertname, "resolved", after)
        if found is not None:
            return found
        if gone_at is None and not active(stack, alertname):
            gone_at = time.monotonic()
        if gone_at is not None and time.monotonic() - gone_at > grace:
            return None
        time.sleep(0.05)
    raise TimeoutError(f"{alertname} still active after {RUN_TIMEOUT:g} s")


def active(stack: Stack, alertname: str) -> bool:
    """Pending or firing in Prometheus, or not resolved in Alertmanager."""
    if stack.query(f'ALERTS{{alertname="{alertname}"}}'):
        return True
    url = f"{stack.ports.url('alertmanager')}/api/v2/alerts"
    found = stack.http.get(url, params={"filter": f'alertname="{alertname}"'}).json()
    return bool(found)


def diagnose(stack: Stack, alertname: str) -> None:
    """What Prometheus, Alertmanager and the relay saw, when a notification never came."""
    am = stack.http.get(f"{stack.ports.url('alertmanager')}/api/v2/alerts").json()
    print(f"Prometheus ALERTS: {stack.query('ALERTS')}", file=sys.stderr)
    print(f"Alertmanager alerts: {json.dumps(am)[:3000]}", file=sys.stderr)
    seen = [(d.arrived, d.notification_status, d.alertnames) for d in stack.relay.snapshot()]
    print(f"relay, last deliveries: {seen[-6:]}", file=sys.stderr)


def quiet(stack: Stack, alertname: str) -> bool:
    return stack.healthy() and not active(stack, alertname) and not active(stack, "PredictorDown")


def inject(stack: Stack, scenario: str) -> None:
    if scenario == "down":
        os.kill(stack.predictor_pid(), signal.SIGKILL)
    else:
        fault = {"kind": "stale_data", "lag_seconds": 600}
        response = stack.http.post(f"{stack.ports.url('predictor')}/admin/fault", json=fault)
        response.raise_for_status()


def detection(stack: Stack, scenario: str, alertname: str, since: float) -> dict[str, Any]:
    """The scrape that saw it and the evaluation that fired, from Prometheus' samples."""
    window = f"{int(time.time() - since) + 10}s"
    if scenario == "down":
        expr, seen = f'up{{job="market-predictor"}}[{window}]', (lambda v: v == 0)
    else:
        expr = f'market_predictor_feed_lag_seconds{{job="market-predictor"}}[{window}]'
        seen = lambda v: v > 300  # noqa: E731
    firing = f'ALERTS{{alertname="{alertname}",alertstate="firing"}}[{window}]'
    return {
        "scraped": earliest(stack.query(expr), since, seen),
        "firing": earliest(stack.query(firing), since),
    }


def earliest(series: list[dict[str, Any]], since: float, predicate: Any = None) -> float | None:
    times = [
        loop_phases.first_sample_at_or_after(item["values"], since, predicate) for item in series
    ]
    found = [t for t in times if t is not None]
    return min(found) if found else None


# Report ------------------------------------------------------------------------------------


def report(timings: Timings, results: dict[str, list[dict[str, Any]]], as_json: bool) -> None:
    summary: dict[str, Any] = {"settings": asdict(timings), "scenarios": {}}
    for scenario, runs in results.items():
        per_run = [loop_phases.phases(run["milestones"]) for run in runs]
        rows = loop_phases.summarize(per_run)
        share = loop_phases.agent_share(rows)
        outcomes = [run["outcome"] for run in runs]
        summary["scenarios"][scenario] = {
            "alert": SCENARIOS[scenario][0],
            "runs": runs,
            "phases": [asdict(row) for row in rows],
            "agent_share": share,
            "outcomes": {o: outcomes.count(o) for o in set(outcomes)},
        }
        title = f"{scenario} ({SCENARIOS[scenario][1]}), {len(runs)} runs"
        print(loop_phases.table(title, rows), file=sys.stderr if as_json else sys.stdout)
        line = (
            f"agent's share: median {share['median_ms']} ms (worst {share['worst_ms']} ms), "
            f"{share['percent_of_total']}% of the median total; "
            f"{outcomes.count('verified')}/{len(runs)} runs verified\n"
        )
        print(line, file=sys.stderr if as_json else sys.stdout)
        record_rows(scenario, timings, rows)
    if as_json:
        json.dump(summary, sys.stdout, indent=1)
        print()


def record_rows(scenario: str, timings: Timings, rows: list[loop_phases.Row]) -> None:
    by = {row.label: row for row in rows}
    agent = by[loop_phases.AGENT].median_ms
    verify = by["healthy -> verified"].median_ms
    total = by[loop_phases.TOTAL].median_ms
    llm = f", LLM +{timings.llm_delay:g} s" if timings.llm_delay else ""
    limit = 20 + (timings.llm_delay or 0) * 1000
    if agent is not None:
        record("loop", f"{scenario}: received -> action started{llm}, median", agent, "ms",
               f"<= {limit:g} ms", met=agent <= limit)  # fmt: skip
    if verify is not None:
        scrape = seconds(timings.scrape_interval) * 1000
        bound = 150 + (scrape if timings.verify_query else 0)
        record("loop", f"{scenario}: healthy -> verified, median", verify, "ms",
               f"<= {bound:g} ms", met=verify <= bound)  # fmt: skip
    if total is not None:
        record("loop", f"{scenario}: kill/fault -> verified, median", total, "ms", "", met=None)


def seconds(duration: str) -> float:
    from market_agent.settings.actions import parse_duration

    return parse_duration(duration)


# Main ----------------------------------------------------------------------------------


@contextlib.contextmanager
def stand_in_llm(delay: float | None) -> Iterator[str | None]:
    """A local OpenAI-compatible server answering VERDICT after `delay` seconds."""
    if delay is None:
        yield None
        return
    from bench_llm import SCRIPTED

    class Delayed(SCRIPTED.ScriptedLLM):  # type: ignore[name-defined,misc]
        def _play(self, handler: Any, step: Any, body: dict[str, Any]) -> None:
            time.sleep(delay)  # outside the script's lock: calls overlap as a model's do
            super()._play(handler, step, body)

    with Delayed([SCRIPTED.Answer(VERDICT)]) as server:
        yield server.url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per scenario (default 10)")
    parser.add_argument("--scenario", choices=["down", "unhealthy", "both"], default="both")
    parser.add_argument("--scrape-interval", default="1s")
    parser.add_argument("--evaluation-interval", default="1s")
    parser.add_argument("--for", dest="alert_for", default="0s", help="the other alerts' `for`")
    parser.add_argument(
        "--down-for",
        default="2s",
        help="PredictorDown's `for`: longer than a restart's gap, or the restart of a live "
        "predictor fires it (and its inhibition can swallow a resolved notification)",
    )
    parser.add_argument("--group-wait", default="1s")
    parser.add_argument("--group-interval", default="1s")
    parser.add_argument("--no-verify-query", action="store_true", help="verify_health only")
    parser.add_argument("--llm-delay", type=float, help="use a stand-in LLM answering after S s")
    parser.add_argument("--audit-records", type=int, default=0, help="pre-fill the audit log")
    parser.add_argument("--breaker-history", type=int, default=0, help="recent fake restarts")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, tables on stderr")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()
    timings = Timings(
        args.scrape_interval,
        args.evaluation_interval,
        args.alert_for,
        args.down_for,
        args.group_wait,
        args.group_interval,
        None if args.no_verify_query else VERIFY_QUERY,
        args.llm_delay,
        args.audit_records,
        args.breaker_history,
    )
    print(f"settings: {json.dumps(asdict(timings))}", file=sys.stderr)
    scenarios = list(SCENARIOS) if args.scenario == "both" else [args.scenario]
    started = time.monotonic()
    with ExitStack() as exits:
        tmp = args.keep or Path(exits.enter_context(tempfile.TemporaryDirectory()))
        tmp.mkdir(parents=True, exist_ok=True)
        stack = Stack(exits, tmp, timings)
        stack.start(exits.enter_context(stand_in_llm(args.llm_delay)))
        wait_until(lambda: stack.query(VERIFY_QUERY), 30, message="first scrape")
        warm = run_once(stack, "down")
        print(f"warm-up run (not counted): {warm['outcome']}", file=sys.stderr)
        results = {s: [] for s in scenarios}
        for scenario in scenarios:
            for n in range(args.runs):
                results[scenario].append(run_once(stack, scenario))
                print(f"{scenario} run {n + 1}: {results[scenario][-1]['outcome']}",
                      file=sys.stderr)  # fmt: skip
        report(timings, results, args.json)
    took = time.monotonic() - started
    print(f"took {took:.0f} s; load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
