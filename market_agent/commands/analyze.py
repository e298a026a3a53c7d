"""`market-agent analyze`: explain saved Alertmanager notifications."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import typer

from market_agent.commands.help import epilog
from market_agent.errors import ExitCode

if TYPE_CHECKING:
    from market_agent.inputs import InputProblem
    from market_agent.models import Analysis

SEVERITIES = ["critical", "high", "medium", "low", "info"]

SHORT_HELP = "Explain saved alerts: severity, cause, what to do."
EPILOG = epilog(
    [
        "market-agent analyze examples/alerts/predictor-down.json",
        "market-agent analyze --json --fail-on warning alerts/*.json",
        "amtool --output json alert query | market-agent analyze -",
    ],
    [
        (ExitCode.OK, "analysed; nothing at or above --fail-on"),
        (ExitCode.ALERT, "an analysis at or above --fail-on"),
        (ExitCode.USAGE, "bad usage, configuration or input (the rest is analysed)"),
        (ExitCode.AUDIT, "the audit log cannot be written (--no-audit skips it)"),
        (ExitCode.INTERRUPTED, "interrupted (Ctrl-C)"),
    ],
)


def analyze(
    ctx: typer.Context,
    files: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FILE",
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
            help="Exit 1 when any analysis is at or above SEVERITY: critical, high, "
            "medium, low, info, or a severity label that maps to one (warning, p1, ...).",
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
    items = analyze_sources(
        sources, service, audit=audit, stdin=sys.stdin.buffer, context_for=context_for
    )
    outcome = _print_all(items, json_output, threshold)
    if outcome.had_problem:
        raise typer.Exit(ExitCode.USAGE)
    if outcome.tripped:
        raise typer.Exit(ExitCode.ALERT)


@dataclass
class _Outcome:
    had_problem: bool = False
    tripped: bool = False
    #: One entry per analysis: why the LLM did not answer (None when it did or was off).
    fallbacks: list[str | None] = field(default_factory=list)


def _print_all(
    items: Iterable[Analysis | InputProblem], json_output: bool, threshold: str | None
) -> _Outcome:
    """Print each analysis as it comes (JSON, a panel, or plain text when piped), and the
    input problems on stderr; after the last, one note if the LLM was wanted but not used."""
    from market_agent.inputs import InputProblem
    from market_agent.models import Severity
    from market_agent.render import (
        analysis_panel,
        error,
        fallback_note,
        json_line,
        on_terminal,
        show,
        stdout_console,
        warn,
    )

    console = None if json_output else stdout_console()
    terminal = console is not None and on_terminal(console)
    outcome = _Outcome()
    for item in items:
        if isinstance(item, InputProblem):
            error(str(item))
            outcome.had_problem = True
            continue
        if threshold is not None and item.severity.rank >= Severity(threshold).rank:
            outcome.tripped = True
        outcome.fallbacks.append(item.fallback_reason)
        if console is None:
            json_line(item.to_json_dict())
        else:
            show(console, analysis_panel(item, terminal=terminal))
    note = fallback_note(outcome.fallbacks)
    if note:
        warn(note)
    return outcome


def _parse_severity(value: str | None) -> str | None:
    """A severity, or a label that the analyzer maps to one (`warning` -> medium)."""
    if value is None:
        return None
    from market_agent.analysis.severity import severity_map

    word = value.strip().lower()
    if word in SEVERITIES:
        return word
    level = severity_map().get(word)
    if level is None:
        labels = ", ".join(sorted(set(severity_map()) - set(SEVERITIES)))
        raise typer.BadParameter(
            f"{value!r} is not a severity: use {', '.join(SEVERITIES)}, "
            f"or a label that maps to one ({labels})",
            param_hint="--fail-on",
        )
    return level.value


def _stdin_or_usage_error() -> list[str]:
    if sys.stdin is None or sys.stdin.isatty():
        raise typer.BadParameter("give one or more files, or - to read stdin", param_hint="FILE...")
    return ["-"]
