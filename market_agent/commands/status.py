"""`market-agent status`: is the predictor healthy, and does its monitoring agree?"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from market_agent.commands.help import epilog
from market_agent.errors import ExitCode

if TYPE_CHECKING:
    from datetime import datetime

    from rich.console import RenderableType
    from rich.text import Text

    from market_agent.health import AgentStatus, AlertBrief, SilenceBrief, StatusReport

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
    from market_agent.render import json_line, on_terminal, show, stdout_console

    if json_output:
        json_line(report.to_json_dict())
    else:
        console = stdout_console()
        show(console, status_view(report, terminal=on_terminal(console)))
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


def status_view(
    report: StatusReport, *, terminal: bool = True, now: datetime | None = None
) -> RenderableType:
    """The report for people: one line per component, then alerts, silences and problems.

    On a terminal: local time, relative ages, `~` for the home directory, wrapped
    lines under their own column. Off it: one line each, RFC 3339 UTC, full paths.
    """
    from rich.console import Group
    from rich.text import Text

    from market_agent.render import columns, local_text, now_utc, utc_text

    now = now or now_utc()
    checked = local_text(report.checked_at, now) if terminal else utc_text(report.checked_at)
    title = Text.assemble(
        "market-agent status: ",
        (report.overall.upper(), STATE_STYLE[report.overall]),
        (f"   checked {checked} · {report.duration_ms:.0f} ms", "dim"),
    )
    rows: list[list[str | Text]] = [
        [Text(name, style="bold"), Text(state, style=STATE_STYLE.get(state, "")), details]
        for name, state, details in _rows(report, terminal, now)
    ]
    parts: list[RenderableType] = [title, columns(rows, terminal=terminal)]
    alerts = [*report.alertmanager.alerts] or [*report.prometheus.alerts]
    if alerts:
        parts += [Text("\nAlerts", style="bold"), _alert_table(alerts, terminal, now)]
    if report.alertmanager.silences:
        silences = [_silence_row(s, terminal, now) for s in report.alertmanager.silences]
        parts += [Text("\nSilences", style="bold"), columns(silences, terminal=terminal, indent=2)]
    if report.problems:
        problems = [("-", problem) for problem in report.problems]
        parts += [
            Text("\nProblems", style="bold"),
            columns(problems, terminal=terminal, indent=2, gap=1),
        ]
    return Group(*parts)


def _alert_table(alerts: Sequence[AlertBrief], terminal: bool, now: datetime) -> RenderableType:
    from market_agent.render import columns

    row = _alert_row if terminal else _plain_alert_row
    return columns([row(alert, now) for alert in alerts], terminal=terminal, indent=2, gap=1)


def _silenced(alert: AlertBrief) -> str:
    # Short ids, as in the Silences section; --json has them in full.
    ids = ", ".join(silence[:8] for silence in alert.silenced_by)  # made safe by the caller
    return f"silenced by {ids}" if ids else ""


def _alert_row(alert: AlertBrief, now: datetime) -> list[str | Text]:
    from rich.text import Text

    from market_agent.render import age, safe

    style = "red" if alert.state in ("active", "firing") else "dim"
    started = age(alert.starts_at, now)
    meta = " · ".join(
        part for part in (f"for {started}" if started else "", _silenced(alert)) if part
    )
    detail = Text(safe(alert.summary))
    if meta:
        detail.append(("\n" if alert.summary else "") + safe(meta), style="dim")
    return [
        Text("●", style=style),
        Text(safe(alert.alertname) or "(no alertname)", style="bold"),
        alert.severity or "-",
        Text(safe(alert.state), style=style),
        detail,
    ]


def _plain_alert_row(alert: AlertBrief, now: datetime) -> list[str | Text]:
    from rich.text import Text

    from market_agent.render import safe, utc_text

    silenced = _silenced(alert)
    summary = alert.summary + (f" [{silenced}]" if silenced else "")
    name = Text(safe(alert.alertname) or "(no alertname)", style="bold")
    return [name, alert.severity or "-", alert.state, utc_text(alert.starts_at), summary]


def _silence_row(silence: SilenceBrief, terminal: bool, now: datetime) -> list[str | Text]:
    from rich.text import Text

    from market_agent.render import duration, parse_time, safe, utc_text

    ends = parse_time(silence.ends_at)
    if not terminal or ends is None:
        until = f"until {utc_text(silence.ends_at)}"
    else:
        until = f"ends in {duration((ends - now).total_seconds())}"
    note = f"{silence.created_by}: {silence.comment}" if silence.comment else silence.created_by
    matchers = " ".join(silence.matchers)
    if not terminal:
        return [silence.id[:8], until, f"{matchers} ({note})" if note else matchers]
    detail = Text(safe(matchers)).append("\n" + safe(note) if note else "", style="dim")
    return [silence.id[:8], until, detail]


def _rows(report: StatusReport, terminal: bool, now: datetime) -> list[tuple[str, str, str]]:
    from market_agent.render import duration

    p, m, a, agent = report.predictor, report.prometheus, report.alertmanager, report.agent
    predictor = [
        f"v{p.version}" if p.version else None,
        f"up {duration(p.uptime_seconds)}" if p.uptime_seconds is not None else None,
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
    rows = [
        ("predictor", p.state, predictor, p.error),
        ("prometheus", m.state, prometheus, m.error),
    ]
    rows.append(("alertmanager", a.state, alertmanager, a.error))
    table: list[tuple[str, str, str]] = [
        (name, state, _join(parts, error)) for name, state, parts, error in rows
    ]
    table.append(("agent", f"v{agent.version}", _agent_details(agent, terminal, now)))
    return table


def _agent_details(agent: AgentStatus, terminal: bool, now: datetime) -> str:
    from market_agent.render import age, utc_text

    path = _home_relative if terminal else str
    audit = agent.audit
    size = (
        f" ({audit.size_bytes / 1024:.1f} KiB)" if audit.size_bytes is not None else " (none yet)"
    )
    last = agent.last_analysis
    if last is None:
        last_text = "no analysis yet"
    else:
        ago = age(last.created_at, now) if terminal else None
        when = f"{ago} ago" if ago else f"at {utc_text(last.created_at)}"
        last_text = f"last analysis {last.severity} {','.join(last.alertnames)} {when}"
    return _join(
        [
            f"config {path(agent.config_file) if agent.config_file else '(defaults)'}",
            f"audit {path(audit.path)}{size}" + ("" if audit.enabled else " [disabled]"),
            last_text,
        ],
        None,
    )


def _home_relative(path: str) -> str:
    """`~/.local/state/...` for a path under the home directory: shorter on a screen."""
    home = str(Path("~").expanduser())
    if home not in ("", "/") and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home) :]
    return path


def _join(parts: Sequence[str | None], error: object) -> str:
    text = " · ".join(part for part in parts if part)
    message = getattr(error, "message", None)
    return f"{message} · {text}" if message else text
