"""`market-agent analyze`: explain saved Alertmanager notifications."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from market_agent.errors import ExitCode

SEVERITIES = ["critical", "high", "medium", "low", "info"]


def analyze(
    ctx: typer.Context,
    files: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FILE...",
            help="Webhook JSON, /api/v2/alerts JSON or JSON Lines files; - is stdin.",
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per notification (JSON Lines).")
    ] = False,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Use the rule analyzer only.")] = False,
    fail_on: Annotated[
        str | None,
        typer.Option(
            "--fail-on",
            metavar="SEVERITY",
            help="Exit 1 when any analysis is at or above SEVERITY "
            "(critical|high|medium|low|info).",
        ),
    ] = None,
    context: Annotated[
        bool | None,
        typer.Option(
            "--context/--no-context",
            help="Gather live predictor health and metrics for alerts about it "
            "(default: analysis.context).",
        ),
    ] = None,
    investigate: Annotated[
        bool,
        typer.Option(
            "--investigate",
            help="Let the LLM query Prometheus, logs and Alertmanager (read-only, bounded, "
            "audited) before its verdict (analysis.mode = investigate).",
        ),
    ] = False,
) -> None:
    """Analyse saved Alertmanager notifications: severity, issue type, what to do.

    Reads files (or stdin with -, or when no file is given and stdin is not a
    terminal). Each notification gets one analysis; the LLM answers when
    configured, the rule analyzer otherwise or whenever the LLM fails.
    """
    from market_agent.analysis.run import analyze_sources
    from market_agent.inputs import InputProblem
    from market_agent.models import Severity
    from market_agent.render import analysis_panel, error, json_line, stdout_console

    state = ctx.obj
    threshold = _parse_severity(fail_on)
    if investigate:
        if no_llm:
            raise typer.BadParameter("needs the LLM: drop --no-llm", param_hint="--investigate")
        state.override({"analysis.mode": "investigate"})
    sources = files or _stdin_or_usage_error()
    audit = state.audit_log
    if audit is not None:
        audit.check_writable()
    service = state.analysis_service(use_llm=not no_llm)
    context_for = state.context_provider(context)
    ctx.call_on_close(state.close)
    console = None if json_output else stdout_console()
    had_problem, tripped = False, False
    items = analyze_sources(
        sources, service, audit=audit, stdin=sys.stdin.buffer, context_for=context_for
    )
    for item in items:
        if isinstance(item, InputProblem):
            error(str(item))
            had_problem = True
            continue
        if threshold is not None and item.severity.rank >= Severity(threshold).rank:
            tripped = True
        if console is None:
            json_line(item.to_json_dict())
        else:
            console.print(analysis_panel(item))
    if had_problem:
        raise typer.Exit(ExitCode.USAGE)
    if tripped:
        raise typer.Exit(ExitCode.ALERT)


def _parse_severity(value: str | None) -> str | None:
    if value is None:
        return None
    normalized = value.strip().lower()
    if normalized not in SEVERITIES:
        raise typer.BadParameter(
            f"{value!r} is not one of {', '.join(SEVERITIES)}", param_hint="--fail-on"
        )
    return normalized


def _stdin_or_usage_error() -> list[str]:
    if sys.stdin is None or sys.stdin.isatty():
        raise typer.BadParameter("give one or more files, or - to read stdin", param_hint="FILES")
    return ["-"]
