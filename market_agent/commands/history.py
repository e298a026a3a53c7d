"""`market-agent history`: read the audit log back (list, stats, show, verify)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import RenderableType

    from market_agent.actions.effectiveness import Stat

history_app = typer.Typer(
    name="history",
    help="Read the audit log: records, action effectiveness, one action's chain, integrity.",
    no_args_is_help=False,
    rich_markup_mode=None,
)

TABLE_LIMIT = 50
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", metavar="WHEN", help="From a duration ago (2h, 7d), a date or a time."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON Lines output.")]


def _audit_files(ctx: typer.Context) -> list[Path]:
    from market_agent.history import log_files

    return log_files(ctx.obj.settings.audit.path.expanduser())


@history_app.callback(invoke_without_command=True)
def history(
    ctx: typer.Context,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", metavar="KIND", help="notification, analysis, action, escalation."),
    ] = None,
    alert: Annotated[
        str | None, typer.Option("--alert", metavar="NAME", help="Only records about this alert.")
    ] = None,
    since: SinceOpt = None,
    until: Annotated[
        str | None, typer.Option("--until", metavar="WHEN", help="Up to (same forms as --since).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", metavar="N", min=0, help=f"At most N [default: {TABLE_LIMIT}; --json: all]."
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """List audit records, newest first: a table, or the stored lines with --json.

    --json prints each record exactly as stored (JSON Lines, the audit log's own
    schema). Rotated files (audit.jsonl.1, .2, ...) are read too.
    """
    if ctx.invoked_subcommand is not None:
        return
    from market_agent.history import Query, parse_time, select

    query = Query(
        kinds=frozenset(kind or ()),
        alert=alert,
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
        limit=limit if limit is not None or json_output else TABLE_LIMIT,
    )
    found = select(_audit_files(ctx), query)
    if json_output:
        _write_raw(line for line, _ in found)
    else:
        _print(records_table(record for _, record in found))


@history_app.command("stats")
def stats(ctx: typer.Context, since: SinceOpt = None, json_output: JsonOpt = False) -> None:
    """Action effectiveness per (alertname, action): attempts, successes, time to recover."""
    from market_agent.actions.effectiveness import compute
    from market_agent.history import parse_time
    from market_agent.render import json_lines

    rows = compute(_audit_files(ctx), parse_time(since) if since else None)
    if json_output:
        json_lines(row.to_json() for row in rows)
    else:
        _print(stats_table(rows))


@history_app.command("show")
def show(
    ctx: typer.Context,
    action_id: Annotated[str, typer.Argument(metavar="ID", help="Action id (or a unique prefix).")],
    json_output: JsonOpt = False,
) -> None:
    """One action with its whole chain: notification, analysis, guards, steps, escalations."""
    from market_agent.history import action_chain

    chain = action_chain(_audit_files(ctx), action_id)
    if json_output:
        _write_raw(line for line, _ in chain.records)
    else:
        _print(chain_table(chain.action_id, [record for _, record in chain.records]))


@history_app.command("verify")
def verify(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Check the hash chain; exit 8 naming the first bad line (edited, deleted, inserted,
    truncated)."""
    from market_agent.errors import ExitCode
    from market_agent.history import verify_files
    from market_agent.render import error, json_line

    verdicts = verify_files(_audit_files(ctx))
    bad = next((v for v in verdicts if not v.ok), None)
    records = sum(v.records for v in verdicts)
    summary: dict[str, Any] = {"ok": bad is None, "records": records, "files": len(verdicts)}
    if bad is not None:
        summary.update(file=str(bad.path), line=bad.line, problem=bad.problem)
    if json_output:
        json_line(summary)
    elif bad is None:
        typer.echo(f"ok: {records} records in {len(verdicts)} file(s), hash chain intact")
    if bad is not None:
        error(f"audit log {bad.path}: line {bad.line}: {bad.problem}")
        raise typer.Exit(int(ExitCode.TAMPERED))


# Rendering ---------------------------------------------------------------------------


def _write_raw(lines: Iterable[bytes]) -> None:
    out = getattr(sys.stdout, "buffer", None)
    for line in lines:
        if out is not None:
            out.write(line.rstrip(b"\n") + b"\n")
        else:
            sys.stdout.write(line.decode("utf-8", "replace").rstrip("\n") + "\n")
    sys.stdout.flush()


def _print(renderable: RenderableType) -> None:
    from market_agent.render import stdout_console

    stdout_console().print(renderable)


def summarize(record: dict[str, Any]) -> str:
    """One line about a record, whatever its kind."""
    kind = record.get("kind")
    if kind == "notification":
        return f"{record.get('status')} from {record.get('source')}"
    if kind == "analysis":
        return (
            f"{record.get('severity')} {record.get('issue_type')} -> "
            f"{record.get('proposed_action')} (confidence {record.get('confidence')}, "
            f"{record.get('analyzer')})"
        )
    if kind == "action":
        step = record.get("guard") or record.get("step")
        detail = record.get("detail") or ""
        return f"{record.get('action')} {step} {record.get('outcome')}: {detail}".rstrip(": ")
    if kind == "escalation":
        return f"{record.get('reason')} -> {record.get('outcome')}: {record.get('message', '')}"
    return ""


def _link(record: dict[str, Any]) -> str:
    for key in ("action_id", "id", "escalation_id"):
        if isinstance(record.get(key), str):
            return str(record[key])[:12]
    return ""


def records_table(records: Iterable[dict[str, Any]]) -> RenderableType:
    from rich.table import Table

    from market_agent.history import alertnames_of

    table = Table(show_edge=False, pad_edge=False)
    for column in ("seq", "time (UTC)", "kind", "alerts", "id", "summary"):
        table.add_column(column, overflow="fold")
    for record in records:
        table.add_row(
            str(record.get("seq", "")),
            str(record.get("ts", ""))[:19].replace("T", " "),
            str(record.get("kind", "")),
            ", ".join(alertnames_of(record)),
            _link(record),
            summarize(record),
        )
    return table


def stats_table(rows: list[Stat]) -> RenderableType:
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for column in ("alert", "action", "attempts", "verified", "success", "median TTR", "recent"):
        table.add_column(column)
    for row in rows:
        rate = f"{row.success_rate:.0%}" if row.success_rate is not None else "-"
        ttr = f"{row.median_recover_s:.1f} s" if row.median_recover_s is not None else "-"
        recent = "".join("✓" if ok else "✗" for ok in row.recent)
        table.add_row(
            row.alertname, row.action, str(row.attempts), str(row.successes), rate, ttr, recent
        )
    return table


def chain_table(action_id: str, records: list[dict[str, Any]]) -> RenderableType:
    from rich.table import Table

    table = Table(title=f"action {action_id}", show_edge=False, pad_edge=False)
    for column in ("time (UTC)", "kind", "step", "outcome", "detail"):
        table.add_column(column, overflow="fold")
    for record in records:
        kind = str(record.get("kind"))
        step = record.get("guard") or record.get("step") or ""
        outcome = record.get("outcome") or record.get("status") or ""
        table.add_row(
            str(record.get("ts", ""))[:23].replace("T", " "),
            kind,
            str(step),
            str(outcome),
            summarize(record) if kind != "action" else str(record.get("detail") or ""),
        )
    return table
