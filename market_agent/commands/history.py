"""`market-agent history`: read the audit log back (list, stats, show, verify)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from market_agent.commands.help import Command, Group, epilog
from market_agent.errors import ExitCode
from market_agent.render import raw_lines

if TYPE_CHECKING:
    from market_agent.audit.query import FileVerdict

Summary = dict[str, Any]


class RecordKind(StrEnum):
    """Every `kind` of audit record, as its writers name it (tests/test_cli_options.py
    checks the source for kinds missing here)."""

    NOTIFICATION = "notification"
    ANALYSIS = "analysis"
    ANALYSIS_ATTEMPT = "analysis_attempt"
    ANALYSIS_FAILED = "analysis_failed"
    ACTION = "action"
    ESCALATION = "escalation"
    JOURNAL_RESUMED = "journal_resumed"
    ROTATION = "rotation"
    INVESTIGATION_STEP = "investigation_step"


_READ_CODES = [
    (ExitCode.OK, "done"),
    (ExitCode.USAGE, "bad usage or configuration"),
    (ExitCode.AUDIT, "the audit log cannot be read"),
]

history_app = typer.Typer(
    name="history",
    cls=Group,
    help="Read the audit log: records, action effectiveness, one action's chain, integrity.",
    short_help="Read the audit log: records, effectiveness, one action, integrity.",
    epilog=epilog(
        [
            "market-agent history --alert PredictorDown --since 2h",
            "market-agent history --kind analysis_failed --json --limit 10",
            "market-agent history verify",
        ],
        _READ_CODES,
    ),
    no_args_is_help=False,
    rich_markup_mode=None,
)

TABLE_LIMIT = 50
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", metavar="WHEN", help="From a duration ago (2h, 7d), a date or a time."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON Lines output.")]


def _audit_path(ctx: typer.Context) -> Path:
    return Path(ctx.obj.settings.audit.path).expanduser()


def _audit_files(ctx: typer.Context) -> list[Path]:
    """The log and its rotated files; a note on stderr when there is none yet."""
    from market_agent.audit.query import log_files

    files = log_files(_audit_path(ctx))
    if not files:
        from market_agent.commands.history_view import note

        note(f"no audit log at {_audit_path(ctx)} yet")
    for path in files:
        _refuse_a_file_that_is_not_an_audit_log(path)
    return files


def _refuse_a_file_that_is_not_an_audit_log(path: Path) -> None:
    """A mistyped --audit-log (README.md) read as an empty log would look healthy."""
    from market_agent.audit.format import BODY_AT, looks_like_audit_record
    from market_agent.errors import AuditError

    try:
        with path.open("rb") as handle:
            head = handle.read(BODY_AT)
    except OSError as exc:
        raise AuditError(f"audit log {path}: cannot be read: {exc.strerror or exc}") from None
    if head and not looks_like_audit_record(head):
        raise AuditError(
            f"audit log {path}: the file is not an audit log (its first line is not an "
            "audit record): check --audit-log / audit.path"
        )


@history_app.callback(invoke_without_command=True)
def history(
    ctx: typer.Context,
    kind: Annotated[
        list[RecordKind] | None,
        typer.Option(
            "--kind",
            metavar="KIND",
            help=f"Only records of this kind (repeatable): {', '.join(RecordKind)}.",
        ),
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
        kinds=frozenset(k.value for k in kind or ()),
        alert=alert,
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
        limit=limit if limit is not None or json_output else TABLE_LIMIT,
    )
    files = _audit_files(ctx)
    found = select(files, query)
    if json_output:
        raw_lines(line for line, _ in found)
        return
    from market_agent.commands.history_view import note, print_records
    from market_agent.render import stdout_console

    if not print_records(stdout_console(), (record for _, record in found)) and files:
        note("no records match")


@history_app.command(
    "stats",
    cls=Command,
    short_help="Effectiveness per alert and action: attempts, successes, recovery.",
    epilog=epilog(
        ["market-agent history stats --since 7d", "market-agent history stats --json"], _READ_CODES
    ),
)
def stats(ctx: typer.Context, since: SinceOpt = None, json_output: JsonOpt = False) -> None:
    """Action effectiveness per (alertname, action): attempts, successes, time to recover."""
    from market_agent.audit.effectiveness import compute
    from market_agent.audit.query import parse_time
    from market_agent.render import json_lines

    files = _audit_files(ctx)
    rows = compute(files, parse_time(since) if since else None)
    if json_output:
        json_lines(row.to_json() for row in rows)
        return
    from market_agent.commands.history_view import note, print_stats
    from market_agent.render import stdout_console

    if rows:
        print_stats(stdout_console(), rows)
    elif files:
        note("no actions recorded yet" + (f" since {since}" if since else ""))


@history_app.command(
    "show",
    cls=Command,
    short_help="One action with its whole chain, from notification to outcome.",
    epilog=epilog(
        ["market-agent history show 3f2a9c", "market-agent history show 3f2a9c --json"],
        _READ_CODES,
    ),
)
def show(
    ctx: typer.Context,
    action_id: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="Action id, or an analysis or notification id for its investigation "
            "(or a unique prefix).",
        ),
    ],
    json_output: JsonOpt = False,
) -> None:
    """One action with its whole chain: notification, analysis, guards, steps, escalations;
    an investigation (analyze --investigate) as a timeline of its tool calls."""
    from market_agent.audit.query import action_chain
    from market_agent.commands.investigation_view import show_investigation
    from market_agent.errors import InputError

    files = _audit_files(ctx)
    try:
        chain = action_chain(files, action_id)
    except InputError:
        if show_investigation(files, action_id, json_output) or _show_record(
            files, action_id, json_output
        ):
            return
        raise
    if json_output:
        raw_lines(line for line, _ in chain.records)
    else:
        from market_agent.commands.history_view import print_chain
        from market_agent.render import stdout_console

        print_chain(stdout_console(), chain.action_id, [record for _, record in chain.records])
    analysis = next((r for _, r in chain.records if r.get("kind") == "analysis"), None)
    if analysis is not None and analysis.get("investigation"):
        show_investigation(files, str(analysis.get("id")), json_output)


def _show_record(files: list[Path], ident: str, json_output: bool) -> bool:
    """An analysis or notification that led to no action and no investigation."""
    from market_agent.audit.query import find_record

    found = find_record(files, ident)
    if found is None:
        return False
    if json_output:
        raw_lines([found[0]])
        return True
    from market_agent.commands.history_view import print_record
    from market_agent.render import stdout_console

    print_record(stdout_console(), found[1])
    return True


@history_app.command(
    "verify",
    cls=Command,
    short_help="Check the audit log's hash chain across rotated files.",
    epilog=epilog(
        [
            "market-agent history verify",
            "market-agent history verify --expect-head HASH --json",
        ],
        [*_READ_CODES, (ExitCode.TAMPERED, "the hash chain is broken, or HASH is not in it")],
    ),
)
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
    from market_agent.audit.query import log_files, verify_files
    from market_agent.errors import AuditError, ExitCode
    from market_agent.render import error, json_line

    settings = ctx.obj.settings.audit
    expected = _head_hash(expect_head) if expect_head is not None else None
    key = load_key(settings.key_file) if settings.key_file is not None else None
    files = log_files(_audit_path(ctx))
    if not files:
        raise AuditError(
            f"no audit log at {_audit_path(ctx)}: nothing to verify "
            "(check --audit-log or audit.path)"
        )
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
