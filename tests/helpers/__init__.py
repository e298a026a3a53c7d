"""Shared support for tests that run real servers (predictor, Prometheus, Alertmanager).

Processes (all on 127.0.0.1, stopped by PID):

- ``free_port() -> int``
- ``wait_for_http(url, timeout=15, *, status=200, alive=None) -> httpx.Response``
- ``wait_until(probe, timeout, *, interval=0.1, message=...)``: poll until truthy
- ``ManagedProcess(argv, *, log_path, env=None, cwd=None)``: ``.start()``,
  ``.stop(grace=5)`` (SIGTERM then SIGKILL), ``.kill()``, ``.pid``, ``.alive``,
  ``.returncode``, ``.wait(timeout)``, ``.wait_for_http(url)``, ``.log_tail()``;
  a context manager that stops the process on exit.

Packages and servers:

- ``ensure_debian_packages(*binaries) -> {binary: path}``: apt-installs
  ``prometheus`` / ``prometheus-alertmanager`` when missing (fails, never skips).
- ``render_monitoring_configs(tmp_path, *, predictor_port, agent_port,
  alertmanager_port, token_file, interval="1s", alert_for="0s") -> MonitoringConfigs``:
  the project's own ``prometheus/*.yml`` rewritten onto test ports and timings.
- ``start_predictor(tmp_path, port, *, traffic_rps=20, admin_token=None,
  start_faults=(), extra_args=())``, ``start_prometheus(tmp_path, config, port)``,
  ``start_alertmanager(tmp_path, config, port)``: started and ready
  ``ManagedProcess`` objects; use them in ``with`` or stop them in teardown.
- ``start_monitoring_stack(exit_stack, tmp_path, *, token=..., traffic_rps=20,
  agent_argv=None) -> MonitoringStack``: all of the above on free ports, in order
  predictor, agent (``agent_argv(stack)``, e.g. ``market-agent listen``, ready on
  ``/readyz``), Alertmanager, Prometheus; the token file (0600) is written and
  every process is registered on the ``ExitStack``. ``MonitoringStack`` has
  ``ports`` and ``urls`` by name (``STACK_PORTS``), ``configs``, ``token_file``,
  ``predictor`` and ``agent`` (``None`` without ``agent_argv``).
- ``prometheus_query(base_url, expr)``, ``prometheus_alerts(base_url)``,
  ``alert_rules(path)``.

Tests that start processes are marked ``@pytest.mark.slow``.
"""

from tests.helpers.debian import ensure_debian_packages
from tests.helpers.monitoring import (
    PROMETHEUS_DIR,
    REPO_ROOT,
    STACK_PORTS,
    MonitoringConfigs,
    MonitoringStack,
    alert_rules,
    prometheus_alerts,
    prometheus_query,
    render_monitoring_configs,
    scraped_predictor,
    start_alertmanager,
    start_monitoring_stack,
    start_predictor,
    start_prometheus,
)
from tests.helpers.net import free_port, wait_for_http, wait_until
from tests.helpers.processes import ManagedProcess

__all__ = [
    "PROMETHEUS_DIR",
    "REPO_ROOT",
    "STACK_PORTS",
    "ManagedProcess",
    "MonitoringConfigs",
    "MonitoringStack",
    "alert_rules",
    "ensure_debian_packages",
    "free_port",
    "prometheus_alerts",
    "prometheus_query",
    "render_monitoring_configs",
    "scraped_predictor",
    "start_alertmanager",
    "start_monitoring_stack",
    "start_predictor",
    "start_prometheus",
    "wait_for_http",
    "wait_until",
]
