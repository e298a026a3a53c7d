"""Output: rich panels and tables for people, JSON Lines for machines.

Data goes to stdout; diagnostics go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from market_agent.models import AlertSummary, Analysis

SEVERITY_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
    "info": "green",
}


def stdout_console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def error(message: str) -> None:
    """One line on stderr: `error: ...`."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def json_line(data: Mapping[str, Any]) -> None:
    # ASCII-only: U+2028, U+0085 and friends stay escaped, so every consumer splits lines right.
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


def json_lines(rows: Iterable[Mapping[str, Any]]) -> None:
    for row in rows:
        json_line(row)


def analysis_panel(analysis: Analysis) -> RenderableType:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    style = SEVERITY_STYLE[analysis.severity.value]
    title = Text.assemble(
        (f" {analysis.severity.value.upper()} ", style),
        f" {analysis.issue_type.value} · {analysis.status}",
    )
    alerts = Table.grid(padding=(0, 1))
    for alert in analysis.alerts:
        alerts.add_row(
            Text("●", style="red" if alert.status == "firing" else "green"),
            Text(alert.alertname or "(no alertname)", style="bold"),
            Text(alert.severity or "-", style="dim"),
            Text(alert.summary),
            Text(_suppression(alert), style="magenta"),
        )
    body: list[RenderableType] = [alerts, Text(""), Text(analysis.description)]
    if analysis.recommended_actions:
        body.append(Text("\nWhat to do:", style="bold"))
        body.extend(
            Text(f"  {n}. {step}") for n, step in enumerate(analysis.recommended_actions, 1)
        )
    body.append(Text.assemble("\nProposed action: ", (analysis.proposed_action, "bold")))
    if analysis.policy_overrides:
        body.append(Text("\nPolicy overrode the model:", style="bold"))
        body.extend(
            Text(f"  {o.field}: {o.model} -> {o.final} (rules: {o.rule})")
            for o in analysis.policy_overrides
        )
    return Panel(Group(*body), title=title, title_align="left", subtitle=_footer(analysis))


def _suppression(alert: AlertSummary) -> str:
    """`silenced (id)` / `inhibited (by ...)` for a suppressed alert, else ''."""
    parts = []
    if alert.silenced_by:
        parts.append("silenced by " + ", ".join(alert.silenced_by))
    if alert.inhibited_by:
        parts.append("inhibited by " + ", ".join(alert.inhibited_by))
    if not parts and alert.state == "suppressed":
        parts.append("suppressed")
    return "; ".join(parts)


def _footer(analysis: Analysis) -> str:
    who = analysis.analyzer + (f" ({analysis.model})" if analysis.model else "")
    parts = [f"{who}", f"confidence {analysis.confidence:.2f}", analysis.source]
    if analysis.fallback_reason:
        parts.append(f"fallback: {analysis.fallback_reason}")
    return " · ".join(parts)
