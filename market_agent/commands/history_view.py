"""What `history` shows: records, one action's chain, the effectiveness table.

On a terminal: one line per record in aligned columns that fit the width, the spare
width given to the summary, long cells cut with `…` (never wrapped, never split
mid-word), local times. Off a terminal: one line per row, fields separated by tabs,
nothing cut or padded, RFC 3339 UTC times, no header, so `cut -f` and `awk` work.
Record text is untrusted: control and format characters become spaces.
"""

from __future__ import annotations

import shlex
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from market_agent.render import (
    failure_output,
    local_text,
    now_utc,
    on_terminal,
    parse_time,
    utc_text,
)

if TYPE_CHECKING:
    from rich.console import Console

    from market_agent.audit.effectiveness import Stat

Record = dict[str, Any]

#: Alert names a manual action is listed under (it has none of its own).
MANUAL = "(manual)"
GAP = "  "
#: Characters of the record ids shown on a terminal (`history show` takes 6 or more).
SHORT_ID = 8
#: The alerts column's widest and narrowest; the summary gets what is left.
ALERTS_MAX, ALERTS_MIN = 24, 14
SUMMARY_MIN = 24
STATS_HEADERS = (
    "alert",
    "action",
    "attempts",
    "verified",
    "success",
    "TTR alert",
    "TTR action",
    "recent",
)
#: Below the stats table on a terminal: what the two medians measure.
STATS_CAPTION = "TTR: median time to recover from the alert's startsAt / the action's start"
CHAIN_HEADERS = ("time", "kind", "step", "outcome", "detail")


def note(message: str) -> None:
    """One line on stderr for the person, outside the data."""
    sys.stderr.write(f"note: {message}\n")
    sys.stderr.flush()


# Text ---------------------------------------------------------------------------------


def clean(value: Any) -> str:
    """`value` as one line of text: control, format and line-break characters as spaces."""
    text = "" if value is None else str(value)
    if text.isascii() and text.isprintable():
        return text
    return "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in text)


def clip(text: str, width: int) -> str:
    """`text` within `width` cells; when cut, at a word boundary if one is near, then `…`."""
    from rich.cells import cell_len, set_cell_size

    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    cut = set_cell_size(text, width - 1)
    whole_words = cut.endswith(" ") or text[len(cut) : len(cut) + 1] == " "
    cut = cut.rstrip()
    space = cut.rfind(" ")
    if not whole_words and space >= max(1, len(cut) * 3 // 4):  # a boundary keeping most
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


# Columns ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    #: Narrowest it may be made to leave room for the `rest` column (None: never
    #: narrowed), and widest (None: as wide as its widest cell).
    minimum: int | None = None
    maximum: int | None = None
    #: Takes whatever width the others leave (one column at most).
    rest: bool = False


def fit(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """Column widths within `width`: each as wide as its cells (up to its maximum); the
    `rest` column gets the width left, the columns with a minimum narrowed towards it
    when that is less than the rest column's own minimum."""
    from rich.cells import cell_len

    natural = [
        max([cell_len(c.header), *(cell_len(row[i]) for row in rows)])
        for i, c in enumerate(columns)
    ]
    widths = [min(n, c.maximum) if c.maximum else n for n, c in zip(natural, columns, strict=True)]
    rest = next((i for i, c in enumerate(columns) if c.rest), len(columns) - 1)
    wanted = min(natural[rest], columns[rest].minimum or 1)
    room = width - sum(widths) + widths[rest] - len(GAP) * (len(columns) - 1)
    for i, column in enumerate(columns):
        if i != rest and column.minimum is not None and room < wanted:
            taken = max(0, min(wanted - room, widths[i] - column.minimum))
            widths[i] -= taken
            room += taken
    # Too narrow for all of it: the rest column keeps its minimum; `aligned` cuts the line.
    widths[rest] = min(natural[rest], max(room, wanted))
    return widths


def aligned(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[str]:
    """Header and rows in columns that fit `width`, each cell clipped to its column (and
    each line to `width` on a terminal too narrow for every column: one line per row)."""
    from rich.cells import set_cell_size

    widths = fit(columns, rows, width)
    lines = []
    for row in [[c.header for c in columns], *rows]:
        cells = [set_cell_size(clip(cell, w), w) for cell, w in zip(row, widths, strict=True)]
        lines.append(clip(GAP.join(cells).rstrip(), width))
    return lines


def print_lines(out: Console, lines: Iterable[str], *, header: bool = False) -> None:
    """Lines as they are (fitted to the terminal or tab-separated): no wrapping, no markup,
    tabs kept (rich would expand them)."""
    from rich.text import Text

    for number, line in enumerate(lines):
        if header and number == 0:
            out.print(Text(line, style="bold"), soft_wrap=True)
        else:
            out.file.write(line + "\n")
    out.file.flush()


def tab_separated(rows: Iterable[Sequence[str]]) -> list[str]:
    return ["\t".join(row) for row in rows]


# Records ------------------------------------------------------------------------------


def summarize(record: Record) -> str:
    """One line about a record, whatever its kind."""
    kind = record.get("kind")
    if kind == "notification":
        return f"{record.get('status')} from {_source(record.get('source'))}"
    if kind == "analysis":
        return (
            f"{record.get('severity')} {record.get('issue_type')} -> "
            f"{record.get('proposed_action')} ({record.get('analyzer')}, "
            f"confidence {_number(record.get('confidence'))})"
        )
    if kind == "action":
        step = record.get("guard") or record.get("step")
        outcome, detail = record.get("outcome"), record.get("detail") or ""
        text = f"{record.get('action')} {step} {outcome}"
        return f"{text}: {detail}" if detail and detail != outcome else text
    if kind == "escalation":
        message = record.get("message") or ""
        text = f"{record.get('reason')} -> {record.get('outcome')}"
        return f"{text}: {message}" if message else text
    return ""


def _source(source: Any) -> str:
    """A file's name (the whole path is in `history show` and --json), else the source."""
    text = clean(source)
    return Path(text).name if "/" in text and not text.startswith("http") else text


def _number(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else clean(value)


def record_id(record: Record) -> str:
    for key in ("action_id", "id", "escalation_id"):
        if isinstance(record.get(key), str):
            return str(record[key])
    return ""


def alert_names(record: Record) -> list[str]:
    from market_agent.audit.query import alertnames_of

    names = alertnames_of(record)
    if not names and record.get("kind") == "action" and record.get("trigger") == "manual":
        return [MANUAL]
    return names


def alerts_cell(names: Sequence[str], width: int) -> str:
    """`FirstName +3`, the first name clipped so that the count always shows."""
    if not names:
        return ""
    more = f" +{len(names) - 1}" if len(names) > 1 else ""
    return clip(clean(names[0]), max(1, width - len(more))) + more


RECORD_COLUMNS = (
    Column("time"),
    Column("kind"),
    Column("id"),
    Column("alerts", ALERTS_MIN, ALERTS_MAX),
    Column("summary", SUMMARY_MIN, rest=True),
)


def print_records(out: Console, records: Iterable[Record]) -> int:
    """The records, newest first, one line each; returns how many.

    On a terminal the time column is the local time of day, and a line with the date
    comes before each day's first record (newest first), which leaves the width to
    the summary.
    """
    from rich.text import Text

    found = list(records)
    if not on_terminal(out):
        print_lines(out, tab_separated(_plain_row(r) for r in found))
        return len(found)
    if not found:
        return 0
    names = [alert_names(r) for r in found]
    rows = [
        [
            _local(r.get("ts"), "%H:%M:%S"),
            clean(r.get("kind")),
            record_id(r)[:SHORT_ID],
            clean(", ".join(n)),  # its natural width; cut by `alerts_cell` below
            clean(summarize(r)),
        ]
        for r, n in zip(found, names, strict=True)
    ]
    widths = fit(RECORD_COLUMNS, rows, out.width)
    for row, n in zip(rows, names, strict=True):
        row[3] = alerts_cell(n, widths[3])
    header, *lines = aligned(RECORD_COLUMNS, rows, out.width)
    print_lines(out, [header], header=True)
    day = None
    for record, line in zip(found, lines, strict=True):
        if (date := _local(record.get("ts"), "%Y-%m-%d")) != day:
            out.print(Text(date, style="bold"), soft_wrap=True)
            day = date
        print_lines(out, [line])
    return len(found)


def _plain_row(record: Record) -> list[str]:
    return [
        str(record.get("seq", "")),
        clean(utc_text(record.get("ts"))),
        clean(record.get("kind")),
        record_id(record),
        clean(",".join(alert_names(record))),
        clean(summarize(record)),
    ]


def _local(ts: Any, layout: str) -> str:
    when = parse_time(ts)
    return when.astimezone().strftime(layout) if when else clean(ts)


# One action ---------------------------------------------------------------------------


def action_facts(records: Sequence[Record]) -> list[tuple[str, str]]:
    """What `history show` says first: the action, its outcome, trigger, reason, alerts,
    the planned command and what ran."""
    from market_agent.audit.query import alertnames_of

    steps = [r for r in records if r.get("kind") == "action"]
    first = steps[0] if steps else {}
    result = next((r for r in reversed(steps) if r.get("step") == "result"), None)
    facts = [
        ("action", clean(first.get("action"))),
        ("outcome", clean(result.get("outcome")) if result else "no result recorded"),
        ("trigger", _trigger(first, records)),
        ("reason", _reason(steps, records)),
        ("alerts", clean(", ".join(alertnames_of(first))) or "-"),
    ]
    plan = next((r["plan"] for r in steps if isinstance(r.get("plan"), dict)), None)
    if plan is not None:
        facts.append(("backend", clean(plan.get("backend")) or "-"))
        facts += [("command", command) for command in _planned(plan)]
    facts += [("ran", ran) for ran in _ran(steps)]
    if result is not None:
        facts += _recovery(result)
    return facts


def _recovery(result: Record) -> list[tuple[str, str]]:
    """Time to recover of a verified action, from the alert's start and from its own."""
    from market_agent.audit.effectiveness import recovery_times

    times = recovery_times(result)
    if times.get("from_action_s") is None:
        return []
    from_action = f"{seconds_text(times['from_action_s'])} from the action's start"
    if times.get("from_alert_s") is None:
        return [("recovered in", from_action)]
    return [
        (
            "recovered in",
            f"{seconds_text(times['from_alert_s'])} from the alert's start, {from_action}",
        )
    ]


def _trigger(first: Record, records: Sequence[Record]) -> str:
    trigger = clean(first.get("trigger")) or "-"
    analysis = next((r for r in records if r.get("kind") == "analysis"), None)
    if analysis is not None and isinstance(analysis.get("id"), str):
        return f"{trigger}, analysis {analysis['id'][:SHORT_ID]}: {clean(summarize(analysis))}"
    return trigger


def _reason(steps: Sequence[Record], records: Sequence[Record]) -> str:
    given = next((r["reason"] for r in steps if isinstance(r.get("reason"), str)), None)
    if given:
        return clean(given)
    analysis = next((r for r in records if r.get("kind") == "analysis"), None)
    description = analysis.get("description") if analysis else None
    return clean(description) if isinstance(description, str) else "-"


def _planned(plan: Record) -> list[str]:
    steps = plan.get("steps")
    found = []
    for step in steps if isinstance(steps, list) else []:
        if not isinstance(step, dict):
            continue
        argv = step.get("argv")
        if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
            found.append(clean(shlex.join(argv)))
        elif isinstance(step.get("url"), str):
            found.append(clean(f"{step.get('method') or 'POST'} {step['url']}"))
    return found


def _ran(steps: Sequence[Record]) -> list[str]:
    """`true: exit 0` for each command (or request) that ran, with its outcome."""
    found = []
    for record in steps:
        commands = record.get("commands")
        for command in commands if isinstance(commands, list) else []:
            if isinstance(command, dict):
                step, detail = clean(command.get("step")), clean(command.get("detail"))
                said = clean(failure_output([command]))
                detail = f"{detail}: {said}" if said else detail
                found.append(f"{step}: {detail}" if detail else step)
    return found


def chain_rows(records: Sequence[Record], now: datetime, terminal: bool) -> list[list[str]]:
    rows = []
    for record in records:
        kind = clean(record.get("kind"))
        step = record.get("guard") or record.get("step") or ""
        outcome = record.get("outcome") or record.get("status") or ""
        detail = record.get("detail") if kind == "action" else summarize(record)
        ts = record.get("ts")
        when = local_text(ts, now, seconds=True) if terminal else utc_text(ts)
        rows.append([clean(when), kind, clean(step), clean(outcome), clean(detail)])
    return rows


def print_record(out: Console, record: Record) -> None:
    """One analysis or notification on its own: what it was, when, about which alerts."""
    from market_agent.audit.query import alertnames_of

    terminal = on_terminal(out)
    when = record.get("ts")
    facts = [
        ("time", local_text(when, now_utc(), seconds=True) if terminal else utc_text(when)),
        ("alerts", clean(", ".join(alertnames_of(record))) or "-"),
        ("summary", clean(summarize(record))),
    ]
    if isinstance(record.get("description"), str):
        facts.append(("description", clean(record["description"])))
    if isinstance(record.get("notification_id"), str):
        facts.append(("notification", clean(record["notification_id"])))
    facts.append(("actions", "none (an action's id shows its whole chain)"))
    title = f"{clean(record.get('kind'))} {clean(record.get('id'))}"
    if not terminal:
        print_lines(out, tab_separated([["id", title], *facts]))
        return
    print_facts(out, title, facts)


def print_facts(out: Console, title: str, facts: Sequence[tuple[str, str]]) -> None:
    """A bold title, then label/value rows; values wrap under themselves."""
    from rich.table import Table
    from rich.text import Text

    out.print(Text(title, style="bold"))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(width=max(len(label) for label, _ in facts), no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in facts:
        grid.add_row(Text(label, style="dim"), Text(value))
    out.print(grid)


def print_chain(out: Console, action_id: str, records: Sequence[Record]) -> None:
    """One action: its facts, then every record of its chain, oldest first."""
    now = now_utc()
    terminal = on_terminal(out)
    facts = action_facts(records)
    rows = chain_rows(records, now, terminal)
    if not terminal:
        print_lines(out, tab_separated([["id", action_id], *facts]))
        print_lines(out, [""])
        print_lines(out, tab_separated(rows))
        return
    from rich.table import Table

    name, facts = facts[0][1], facts[1:]
    print_facts(out, f"action {action_id}: {name}", facts)
    out.print()
    table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 2, 0, 0))
    for header in CHAIN_HEADERS:
        table.add_column(header, no_wrap=header != "detail", overflow="fold", header_style="bold")
    for row in rows:
        table.add_row(*row)
    out.print(table)


# Effectiveness ------------------------------------------------------------------------


def stats_rows(rows: Sequence[Stat]) -> list[list[str]]:
    found = []
    for row in rows:
        rate = f"{row.success_rate:.0%}" if row.success_rate is not None else "-"
        recent = "".join("✓" if ok else "✗" for ok in row.recent)
        name = clean(row.alertname) or MANUAL
        found.append(
            [
                name,
                clean(row.action),
                str(row.attempts),
                str(row.successes),
                rate,
                seconds_text(row.median_recover_from_alert_s),
                seconds_text(row.median_recover_s),
                recent,
            ]
        )
    return found


def seconds_text(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "-"


def print_stats(out: Console, rows: Sequence[Stat]) -> None:
    if not on_terminal(out):
        print_lines(out, tab_separated(stats_rows(rows)))
        return
    columns = [Column(h) for h in STATS_HEADERS]
    columns[0] = Column("alert", ALERTS_MIN, rest=True)
    print_lines(out, aligned(columns, stats_rows(rows), out.width), header=True)
    print_lines(out, ["", STATS_CAPTION])
