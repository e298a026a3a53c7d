"""Render the project's Prometheus/Alertmanager configs for tests and start the servers."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import yaml

from tests.helpers.debian import ensure_debian_packages
from tests.helpers.net import free_port, wait_until
from tests.helpers.processes import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "prometheus"
#: The names of a monitoring stack's ports and URLs.
STACK_PORTS = ("predictor", "agent", "alertmanager", "prometheus")


@dataclass(frozen=True)
class MonitoringConfigs:
    """Paths of rendered configs (all in one directory; rule files are relative)."""

    directory: Path
    prometheus: Path
    alerts: Path
    alertmanager: Path


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def render_monitoring_configs(
    tmp_path: Path,
    *,
    predictor_port: int,
    agent_port: int,
    alertmanager_port: int,
    token_file: Path,
    interval: str = "1s",
    alert_for: str | None = "0s",
) -> MonitoringConfigs:
    """Copy ``prometheus/*.yml`` into ``tmp_path/monitoring`` with test values.

    Prometheus scrapes ``market-predictor`` and ``market-agent`` on the given
    loopback ports every ``interval`` and alerts to Alertmanager on
    ``alertmanager_port``; every alert's ``for:`` becomes ``alert_for`` (None
    keeps it); Alertmanager's webhooks point at ``agent_port`` with
    ``token_file`` as bearer credentials (not created here) and every route
    waits ``interval`` (group_wait, group_interval).
    """
    out = tmp_path / "monitoring"
    out.mkdir(parents=True, exist_ok=True)
    configs = MonitoringConfigs(
        out, out / "prometheus.yml", out / "alerts.yml", out / "alertmanager.yml"
    )
    prometheus = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    ports = {"market-predictor": predictor_port, "market-agent": agent_port}
    _render_prometheus(prometheus, ports, alertmanager_port, interval, configs.alerts.name)
    alerts = load_yaml(PROMETHEUS_DIR / "alerts.yml")
    for group in alerts["groups"]:
        if "interval" in group:
            group["interval"] = interval
    if alert_for is not None:
        for rule in _alert_rules(alerts):
            rule["for"] = alert_for
    alertmanager = load_yaml(PROMETHEUS_DIR / "alertmanager.yml")
    _render_alertmanager(alertmanager, agent_port, token_file, interval)
    for path, data in [
        (configs.prometheus, prometheus),
        (configs.alerts, alerts),
        (configs.alertmanager, alertmanager),
    ]:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return configs


def _render_prometheus(
    config: dict[str, Any], ports: dict[str, int], am_port: int, interval: str, rules: str
) -> None:
    config["global"].update(
        scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval
    )
    config["rule_files"] = [rules]
    for job in config["scrape_configs"]:
        for key in ("scrape_interval", "scrape_timeout"):
            if key in job:  # a job's own timing would override the test's
                job[key] = interval
        if job["job_name"] in ports:
            for static in job["static_configs"]:
                static["targets"] = [f"127.0.0.1:{ports[job['job_name']]}"]
    for alertmanager in config["alerting"]["alertmanagers"]:
        for static in alertmanager["static_configs"]:
            static["targets"] = [f"127.0.0.1:{am_port}"]


def _render_alertmanager(
    config: dict[str, Any], agent_port: int, token_file: Path, interval: str
) -> None:
    for route in _routes(config["route"]):
        route["group_wait"] = interval
        route["group_interval"] = interval
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            parts = urlsplit(webhook["url"])
            webhook["url"] = urlunsplit(parts._replace(netloc=f"127.0.0.1:{agent_port}"))
            authorization = webhook.get("http_config", {}).get("authorization")
            if authorization and "credentials_file" in authorization:
                authorization["credentials_file"] = str(token_file)


def _routes(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield route
    for child in route.get("routes", []):
        yield from _routes(child)


def _alert_rules(rules_file: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in rules_file["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                yield rule


def alert_rules(path: Path = PROMETHEUS_DIR / "alerts.yml") -> list[dict[str, Any]]:
    """The alerting rules (not recording rules) of a rules file, in file order."""
    return list(_alert_rules(load_yaml(path)))


def start_predictor(
    tmp_path: Path,
    port: int,
    *,
    traffic_rps: float = 20.0,
    admin_token: str | None = None,
    start_faults: Iterable[str] = (),
    extra_args: Iterable[str] = (),
    timeout: float = 15.0,
) -> ManagedProcess:
    """Start ``python -m examples.predictor`` on 127.0.0.1:port; returns once /status is up."""
    argv = [sys.executable, "-m", "examples.predictor", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--traffic-rps", str(traffic_rps), "--log-level", "warning"]
    if admin_token:
        argv += ["--admin-token", admin_token]
    for kind in start_faults:
        argv += ["--start-fault", kind]
    argv += list(extra_args)
    process = ManagedProcess(argv, log_path=tmp_path / f"predictor-{port}.log", cwd=REPO_ROOT)
    return _started(process, f"http://127.0.0.1:{port}/status", timeout)


def start_prometheus(
    tmp_path: Path, config: Path, port: int, *, timeout: float = 30.0
) -> ManagedProcess:
    """Start Prometheus with ``config`` on 127.0.0.1:port; returns once /-/ready is 200."""
    binary = ensure_debian_packages("prometheus")["prometheus"]
    url = f"http://127.0.0.1:{port}"
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / f'prometheus-{port}-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={url}",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]
    process = ManagedProcess(argv, log_path=tmp_path / f"prometheus-{port}.log", cwd=tmp_path)
    return _started(process, f"{url}/-/ready", timeout)


def start_alertmanager(
    tmp_path: Path, config: Path, port: int, *, timeout: float = 30.0
) -> ManagedProcess:
    """Start Alertmanager (clustering off) on 127.0.0.1:port; returns once /-/ready is 200."""
    binary = ensure_debian_packages("prometheus-alertmanager")["prometheus-alertmanager"]
    url = f"http://127.0.0.1:{port}"
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={tmp_path / f'alertmanager-{port}-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={url}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    process = ManagedProcess(argv, log_path=tmp_path / f"alertmanager-{port}.log", cwd=tmp_path)
    return _started(process, f"{url}/-/ready", timeout)


def _started(process: ManagedProcess, ready_url: str, timeout: float) -> ManagedProcess:
    process.start()
    try:
        process.wait_for_http(ready_url, timeout)
    except BaseException:
        process.stop()
        raise
    return process


@dataclass(frozen=True)
class MonitoringStack:
    """A running stack (see :func:`start_monitoring_stack`); names as in ``STACK_PORTS``."""

    ports: Mapping[str, int]
    urls: Mapping[str, str]
    configs: MonitoringConfigs
    token_file: Path
    predictor: ManagedProcess
    #: The agent started from ``agent_argv``, if any.
    agent: ManagedProcess | None = None


def start_monitoring_stack(
    exit_stack: ExitStack,
    tmp_path: Path,
    *,
    token: str = "monitoring-stack-token",
    traffic_rps: float = 20.0,
    agent_argv: Callable[[MonitoringStack], Sequence[str]] | None = None,
) -> MonitoringStack:
    """Start the predictor, an agent (optional), Alertmanager and Prometheus, in that order.

    Picks free loopback ports, writes ``token`` to ``tmp_path/webhook-token`` (mode
    0600) and renders the configs onto them (:func:`render_monitoring_configs`).
    ``agent_argv(stack)`` (called once the predictor is ready, so it may also note
    its PID) gives the command of an agent serving ``ports["agent"]``; it is started
    (log ``tmp_path/agent.log``) and ready on ``/readyz`` before Alertmanager, whose
    first webhook then finds it. Every process is registered on ``exit_stack``.
    """
    ports = {name: free_port() for name in STACK_PORTS}
    token_file = _write_token(tmp_path / "webhook-token", token)
    configs = render_monitoring_configs(
        tmp_path,
        predictor_port=ports["predictor"],
        agent_port=ports["agent"],
        alertmanager_port=ports["alertmanager"],
        token_file=token_file,
    )
    predictor = exit_stack.enter_context(
        start_predictor(tmp_path, ports["predictor"], traffic_rps=traffic_rps)
    )
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    stack = MonitoringStack(ports, urls, configs, token_file, predictor)
    if agent_argv is not None:
        stack = _start_agent(exit_stack, stack, agent_argv(stack), tmp_path / "agent.log")
    exit_stack.enter_context(
        start_alertmanager(tmp_path, configs.alertmanager, ports["alertmanager"])
    )
    exit_stack.enter_context(start_prometheus(tmp_path, configs.prometheus, ports["prometheus"]))
    return stack


def _start_agent(
    exit_stack: ExitStack, stack: MonitoringStack, argv: Sequence[str], log_path: Path
) -> MonitoringStack:
    agent = exit_stack.enter_context(ManagedProcess(argv, log_path=log_path))
    agent.wait_for_http(f"{stack.urls['agent']}/readyz", timeout=20)
    return dataclasses.replace(stack, agent=agent)


def _write_token(path: Path, token: str) -> Path:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(token + "\n")
    return path


@contextmanager
def scraped_predictor(
    tmp_path: Path, *, traffic_rps: float = 20
) -> Iterator[tuple[int, int, ManagedProcess]]:
    """The demo predictor and a real Prometheus scraping it, once its first scrape is in:
    yields (predictor port, Prometheus port, the predictor's process)."""
    from market_agent.clients import PrometheusClient
    from market_agent.settings import EndpointSettings

    predictor_port, prometheus_port = free_port(), free_port()
    configs = render_monitoring_configs(
        tmp_path,
        predictor_port=predictor_port,
        agent_port=free_port(),
        alertmanager_port=free_port(),
        token_file=tmp_path / "token",
    )
    with (
        start_predictor(tmp_path, predictor_port, traffic_rps=traffic_rps) as predictor,
        start_prometheus(tmp_path, configs.prometheus, prometheus_port),
    ):
        url = f"http://127.0.0.1:{prometheus_port}"
        with PrometheusClient(EndpointSettings(url=url)) as client:
            wait_until(
                lambda: client.holds('up{job="market-predictor"} == 1'),
                30,
                message="predictor scraped",
            )
        yield predictor_port, prometheus_port, predictor


def prometheus_query(base_url: str, expr: str) -> list[dict[str, Any]]:
    """Instant query; returns the ``result`` vector (``[{"metric": ..., "value": [t, v]}]``)."""
    response = httpx.get(f"{base_url}/api/v1/query", params={"query": expr}, timeout=5.0)
    response.raise_for_status()
    return response.json()["data"]["result"]


def prometheus_alerts(base_url: str) -> list[dict[str, Any]]:
    """Active (pending or firing) alerts from Prometheus's ``/api/v1/alerts``."""
    response = httpx.get(f"{base_url}/api/v1/alerts", timeout=5.0)
    response.raise_for_status()
    return response.json()["data"]["alerts"]
