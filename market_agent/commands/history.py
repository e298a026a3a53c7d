"""`market-agent history`: read the audit log back (list, stats, show, verify)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import RenderableType

    from market_agent.audit.effectiveness import Stat
    from market_agent.audit.query import FileVerdict

Summary = dict[str, Any]

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
    from market_agent.audit.query import log_files

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
    from market_agent.audit.query import Query, parse_time, select

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
    from market_agent.audit.effectiveness import compute
    from market_agent.audit.query import parse_time
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
    from market_agent.audit.query import action_chain

    chain = action_chain(_audit_files(ctx), action_id)
    if json_output:
        _write_raw(line for line, _ in chain.records)
    else:
        _print(chain_table(chain.action_id, [record for _, record in chain.records]))


@history_app.command("verify")
def verify(
    ctx: typer.Context,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            metavar="HASH",
            help="A head hash seen earlier (market_agent_audit_head_info in Prometheus): "
            "it must still be in the chain.",
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Check the hash chain across rotated files; exit 8 naming the first bad file and
    line (edited, deleted, inserted, truncated), or when --expect-head is not found.

    With audit.key_file set, keyed records are authenticated (HMAC-SHA256).
    """
    from market_agent.audit import load_key
    from market_agent.audit.query import verify_files
    from market_agent.errors import ExitCode
    from market_agent.render import error, json_line

    settings = ctx.obj.settings.audit
    expected = _head_hash(expect_head) if expect_head is not None else None
    key = load_key(settings.key_file) if settings.key_file is not None else None
    files = _audit_files(ctx)
    verdicts = verify_files(files, key)
    bad = next((v for v in verdicts if not v.ok), None)
    summary = _verify_summary(verdicts, bad, key is not None)
    if expected is not None:
        summary["head"] = _find_head(files, verdicts, expected)
    if json_output:
        json_line(summary)
    else:
        _print_verify(summary)
    if bad is not None:
        error(f"audit log {bad.path}: line {bad.line}: {bad.problem}")
    if expected is not None and not summary["head"]["found"]:
        error(
            f"head {expected} is not in the audit log: it was truncated or rewritten after "
            "that hash was seen (or the record was rotated away by audit.keep)"
        )
    if bad is not None or (expected is not None and not summary["head"]["found"]):
        raise typer.Exit(int(ExitCode.TAMPERED))


def _head_hash(value: str) -> str:
    from market_agent.errors import InputError

    text = value.strip().lower()
    if len(text) != 64 or text.strip("0123456789abcdef"):
        raise InputError("--expect-head: expected a hash of 64 hexadecimal digits")
    return text


def _verify_summary(verdicts: list[FileVerdict], bad: FileVerdict | None, keyed: bool) -> Summary:
    records = sum(v.records for v in verdicts)
    summary: Summary = {
        "ok": bad is None,
        "records": records,
        "files": len(verdicts),
        "keyed": sum(v.keyed for v in verdicts),
        "authenticated": keyed,
        "new_chains": [str(v.path) for v in verdicts if v.new_chain],
    }
    if bad is not None:
        summary.update(file=str(bad.path), line=bad.line, problem=bad.problem)
    return summary


def _find_head(files: list[Path], verdicts: list[FileVerdict], digest: str) -> Summary:
    from market_agent.audit.query import locate_hash

    found = locate_hash(files, digest)
    if found is None:
        return {"hash": digest, "found": False}
    path, line = found
    before = 0
    for verdict in verdicts:
        if verdict.path == path:
            break
        before += verdict.records
    after = sum(v.records for v in verdicts) - before - line
    return {"hash": digest, "found": True, "file": str(path), "line": line, "after": after}


def _print_verify(summary: Summary) -> None:
    if summary["ok"]:
        typer.echo(
            f"ok: {summary['records']} records in {summary['files']} file(s), hash chain intact"
        )
    keyed, total = summary["keyed"], summary["records"]
    if summary["authenticated"]:
        typer.echo(f"key: {keyed} records authenticated, {total - keyed} written without a key")
    elif keyed:
        typer.echo(f"key: {keyed} keyed records not authenticated (set audit.key_file to check)")
    for path in summary["new_chains"]:
        typer.echo(f"note: {path} starts a chain of its own (not linked to the file before)")
    head = summary.get("head")
    if head is not None and head["found"]:
        typer.echo(
            f"head {head['hash'][:16]}...: {head['file']} line {head['line']}, "
            f"{head['after']} records after it"
        )


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

    from market_agent.audit.query import alertnames_of

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
    table.caption = "TTR: median time to recover, from the alert's startsAt / the action's start"
    table.add_column("alert", no_wrap=True)
    table.add_column("action", no_wrap=True)
    for column in ("attempts", "verified", "success", "TTR from alert", "TTR from action"):
        table.add_column(column)
    table.add_column("recent")
    for row in rows:
        rate = f"{row.success_rate:.0%}" if row.success_rate is not None else "-"
        recent = "".join("✓" if ok else "✗" for ok in row.recent)
        table.add_row(
            row.alertname,
            row.action,
            str(row.attempts),
            str(row.successes),
            rate,
            _seconds(row.median_recover_from_alert_s),
            _seconds(row.median_recover_s),
            recent,
        )
    return table


def _seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "-"


def _recovery_caption(records: list[dict[str, Any]]) -> str | None:
    """Time to recover of a verified action, from the alert's start and from its own."""
    from market_agent.audit.effectiveness import recovery_times

    result = next((r for r in records if r.get("step") == "result"), None)
    times = recovery_times(result) if result is not None else {}
    if times.get("from_action_s") is None:
        return None
    return (
        f"time to recover: {_seconds(times['from_alert_s'])} from the alert's start, "
        f"{_seconds(times['from_action_s'])} from the action's start"
    )


def chain_table(action_id: str, records: list[dict[str, Any]]) -> RenderableType:
    from rich.table import Table

    table = Table(
        title=f"action {action_id}",
        caption=_recovery_caption(records),
        show_edge=False,
        pad_edge=False,
    )
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
