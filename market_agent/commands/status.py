"""`market-agent status`: is the predictor healthy, and does its monitoring agree?"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from market_agent.commands.help import epilog
from market_agent.errors import ExitCode

if TYPE_CHECKING:
    from rich.console import RenderableType

    from market_agent.health import StatusReport

SHORT_HELP = "Health of the predictor, Prometheus, Alertmanager and the agent."
EPILOG = epilog(
    [
        "market-agent status",
        "market-agent status --json | jq .overall",
        "market-agent status --watch 5",
    ],
    [
        (ExitCode.OK, "all healthy"),
        (ExitCode.ALERT, "something is degraded, unhealthy or unreachable"),
        (ExitCode.USAGE, "bad usage or configuration"),
        (ExitCode.INTERRUPTED, "--watch stopped with Ctrl-C"),
    ],
)

STATE_STYLE = {
    "healthy": "green",
    "degraded": "yellow",
    "unhealthy": "bold red",
    "unreachable": "bold red",
}


def status(
    ctx: typer.Context,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON object (one per refresh with --watch)."),
    ] = False,
    watch: Annotated[
        float | None,
        typer.Option(
            "--watch", metavar="SECONDS", min=0.5, help="Refresh every SECONDS until Ctrl-C."
        ),
    ] = None,
) -> None:
    """Check the predictor, Prometheus and Alertmanager at once, and the agent itself.

    Shows the predictor's health, version, uptime and response time; its
    Prometheus scrape target; request rate, error ratio and p95 latency over 5
    minutes; active alerts and silences for it; the config file, audit log and
    last analysis. The three are probed in parallel, each within its timeout.
    """
    from market_agent.health import collect_status

    state = ctx.obj
    ctx.call_on_close(state.close)
    probe = partial(
        collect_status,
        state.settings,
        predictor=state.predictor_client(),
        prometheus=state.prometheus_client(),
        alertmanager=state.alertmanager_client(),
    )
    report = _watch(probe, watch, json_output) if watch else _show(probe(), json_output)
    raise typer.Exit(int(report.exit_code))


def _show(report: StatusReport, json_output: bool) -> StatusReport:
    from market_agent.render import json_line, stdout_console

    if json_output:
        json_line(report.to_json_dict())
    else:
        stdout_console().print(status_view(report))
    return report


def _watch(probe: Callable[[], StatusReport], seconds: float, json_output: bool) -> NoReturn:
    """Probe every `seconds` until Ctrl-C, which exits 130 like any interrupted command."""
    report = probe()
    if json_output or not sys.stdout.isatty():
        while True:
            _show(report, json_output)
            report = _next(probe, seconds)
    from rich.live import Live

    from market_agent.render import stdout_console

    with Live(status_view(report), console=stdout_console(), auto_refresh=False) as live:
        while True:
            report = _next(probe, seconds)
            live.update(status_view(report), refresh=True)


def _next(probe: Callable[[], StatusReport], seconds: float) -> StatusReport:
    _pause(seconds)
    return probe()


def _pause(seconds: float) -> None:
    time.sleep(seconds)


def status_view(report: StatusReport) -> RenderableType:
    """The report for people: one line per component, then alerts and problems."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = Text.assemble(
        "market-agent status: ",
        (report.overall.upper(), STATE_STYLE[report.overall]),
        (f"   {report.checked_at} · {report.duration_ms:.0f} ms", "dim"),
    )
    table = Table.grid(padding=(0, 2))
    for name, state, details in _rows(report):
        table.add_row(
            Text(name, style="bold"), Text(state, style=STATE_STYLE.get(state, "")), details
        )
    parts: list[RenderableType] = [title, table]
    alerts = [*report.alertmanager.alerts] or [*report.prometheus.alerts]
    if alerts:
        parts.append(Text("\nAlerts", style="bold"))
        for alert in alerts:
            style = "red" if alert.state in ("active", "firing") else "dim"
            parts.append(
                Text.assemble(
                    ("  ● ", style),
                    (alert.alertname or "(no alertname)", "bold"),
                    f"  {alert.severity or '-'}  {alert.state}  ",
                    alert.summary,
                )
            )
    for silence in report.alertmanager.silences:
        parts.append(
            Text(f"  silence {silence.id[:8]} {' '.join(silence.matchers)} until {silence.ends_at}")
        )
    if report.problems:
        parts.append(Text("\nProblems", style="bold"))
        parts.extend(Text(f"  - {problem}") for problem in report.problems)
    return Group(*parts)


def _rows(report: StatusReport) -> list[tuple[str, str, str]]:
    p, m, a, agent = report.predictor, report.prometheus, report.alertmanager, report.agent
    predictor = [
        f"v{p.version}" if p.version else None,
        f"up {_duration(p.uptime_seconds)}" if p.uptime_seconds is not None else None,
        f"{p.response_time_ms:.1f} ms" if p.response_time_ms is not None else None,
        p.url,
    ]
    target = m.target
    prometheus = [
        f"target {target.health}" + (f" ({target.instance})" if target.instance else "")
        if target
        else None,
        f"{m.request_rate:.1f} req/s" if m.request_rate is not None else None,
        f"{m.error_ratio:.1%} errors" if m.error_ratio is not None else None,
        f"p95 {m.p95_latency_seconds * 1000:.0f} ms" if m.p95_latency_seconds is not None else None,
        m.url,
    ]
    alertmanager = [
        f"v{a.version}" if a.version else None,
        f"{len(a.alerts)} alert(s), {len(a.silences)} silence(s)"
        if a.state != "unreachable"
        else None,
        a.url,
    ]
    audit = agent.audit
    size = (
        f" ({audit.size_bytes / 1024:.1f} KiB)" if audit.size_bytes is not None else " (none yet)"
    )
    last = agent.last_analysis
    agent_parts = [
        f"config {agent.config_file or '(defaults)'}",
        f"audit {audit.path}{size}" + ("" if audit.enabled else " [disabled]"),
        f"last analysis {last.severity} {','.join(last.alertnames)} at {last.created_at}"
        if last
        else "no analysis yet",
    ]
    rows = [
        ("predictor", p.state, predictor, p.error),
        ("prometheus", m.state, prometheus, m.error),
    ]
    rows.append(("alertmanager", a.state, alertmanager, a.error))
    table: list[tuple[str, str, str]] = [
        (name, state, _join(parts, error)) for name, state, parts, error in rows
    ]
    table.append(("agent", f"v{agent.version}", _join(agent_parts, None)))
    return table


def _join(parts: Sequence[str | None], error: object) -> str:
    text = " · ".join(part for part in parts if part)
    message = getattr(error, "message", None)
    return f"{message} · {text}" if message else text


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"
