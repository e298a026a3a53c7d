"""Output: rich panels and tables on a terminal, plain text when piped, JSON Lines for machines.

Data goes to stdout; diagnostics go to stderr. On a terminal, long lines wrap under
their own text (hanging indents, real table columns), times are local and ages
relative; off a terminal, one item per line with no box drawing, no padding and
RFC 3339 UTC times, so `grep` and `cut` work. Colour follows `--color/--no-color`,
else `NO_COLOR`, else whether the stream is a terminal.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
    from rich.measure import Measurement
    from rich.text import Span, Text

    from market_agent.models import AlertSummary, Analysis, Evidence

SEVERITY_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
    "info": "green",
}
#: Alerts listed per analysis on a terminal; the rest are counted ("… and 19,990 more").
#: `--json` and piped output list every alert.
SCREEN_ALERT_LIMIT = 10

_color_choice: bool | None = None


def choose_color(choice: bool | None) -> None:
    """`--color` (True), `--no-color` (False) or auto (None) for the consoles made after."""
    global _color_choice
    _color_choice = choice


def console(*, stderr: bool = False) -> Console:
    """The one console factory: every command's output goes through it.

    Auto (no flag) colours only a terminal and honours `NO_COLOR`; `--color` forces
    colour even into a pipe (`| less -R`); `--no-color` turns it off everywhere.
    """
    from rich.console import Console

    choice = _color_choice
    return Console(
        stderr=stderr,
        highlight=False,
        soft_wrap=False,
        force_terminal=True if choice else None,
        no_color=None if choice is None else not choice,
    )


def stdout_console() -> Console:
    return console()


def stderr_console() -> Console:
    return console(stderr=True)


def on_terminal(out: Console) -> bool:
    """A person reads this console: its stream is a terminal (`--color` does not make one)."""
    isatty = getattr(out.file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def show(out: Console, renderable: RenderableType) -> None:
    """Print for the console's reader: wrapped to the terminal, or unwrapped and unpadded."""
    if on_terminal(out):
        out.print(renderable)
        return
    text = None if out.color_system else _plain(renderable)
    if text is None:
        out.print(renderable, soft_wrap=True)
    else:  # nothing to style or lay out: skip rich's per-line rendering (20,000 alerts: 5x)
        out.file.write(text + "\n")
        out.file.flush()


def _plain(renderable: RenderableType) -> str | None:
    """The text of a plain-output renderable (Text, or a Group of them), else None."""
    from rich.console import Group
    from rich.text import Text

    if isinstance(renderable, Text):
        return renderable.plain
    if isinstance(renderable, Group):
        parts = [_plain(part) for part in renderable.renderables]
        texts = [part for part in parts if part is not None]
        return "\n".join(texts) if len(texts) == len(parts) else None
    return None


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


#: How much of a failed command's output a person sees beside it (all of it is in the audit log).
FAILURE_OUTPUT_CHARS = 200


def failure_output(commands: object) -> str:
    """The last line a failed command printed (`curl: (7) Failed to connect ...`), the
    usual reason it failed; "" when none failed or it printed nothing."""
    for command in reversed(commands if isinstance(commands, list) else []):
        if not isinstance(command, dict) or command.get("ok") is not False:
            continue
        output = command.get("output")
        lines = [line.strip() for line in str(output or "").splitlines() if line.strip()]
        if lines:
            return safe(lines[-1][:FAILURE_OUTPUT_CHARS])
    return ""


def raw_lines(lines: Iterable[bytes]) -> None:
    """Audit-log lines to stdout as they are stored, one per line (`--json` of `history`)."""
    out = getattr(sys.stdout, "buffer", None)
    for line in lines:
        if out is not None:
            out.write(line.rstrip(b"\n") + b"\n")
        else:
            sys.stdout.write(line.decode("utf-8", "replace").rstrip("\n") + "\n")
    sys.stdout.flush()


def json_lines(rows: Iterable[Mapping[str, Any]]) -> None:
    for row in rows:
        json_line(row)


# Untrusted text -------------------------------------------------------------------

#: C0 and C1 controls (ESC, BEL, CR...), DEL, and the bidirectional overrides.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe(text: str) -> str:
    """Alert text and model output made inert for a terminal: tabs and line breaks become
    spaces, any other control character a visible escape (`\\x1b`), so no escape
    sequence in an alert can recolour, retitle or clear the engineer's terminal."""
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if match.group() in "\t\n\r":
        return " "
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


# Layout helpers ---------------------------------------------------------------------


def columns(
    rows: Sequence[Sequence[str | Text]], *, terminal: bool, indent: int = 0, gap: int = 2
) -> RenderableType:
    """Rows of cells in aligned columns.

    On a terminal, a grid whose last column wraps under itself (a hanging indent),
    never splitting a word that fits. Off it, each row on one line: every column but
    the last padded to its width, the last never padded.
    """
    from rich.padding import Padding
    from rich.table import Table

    rows = [[safe(cell) if isinstance(cell, str) else cell for cell in row] for row in rows]
    if not terminal:
        return _plain_columns(rows, indent, gap)
    grid = Table.grid(padding=(0, gap))
    for _ in range(max((len(row) for row in rows), default=0)):
        grid.add_column(overflow="fold")
    for row in rows:
        grid.add_row(*row)
    # Not expanded: lines padded to the full width leave stale rows in `status --watch`.
    return Padding(grid, (0, 0, 0, indent), expand=False) if indent else grid


def _plain_columns(rows: Sequence[Sequence[str | Text]], indent: int, gap: int) -> Text:
    """One Text for all rows; built from strings, as it may hold 20,000 of them."""
    from rich.cells import cell_len
    from rich.text import Span, Text

    texts = [[cell if isinstance(cell, str) else cell.plain for cell in row] for row in rows]
    widths: list[int] = []
    for row_texts in texts:
        for index, text in enumerate(row_texts[:-1]):
            width = cell_len(text)
            if index == len(widths):
                widths.append(width)
            elif width > widths[index]:
                widths[index] = width
    lines: list[str] = []
    spans: list[Span] = []
    offset = 0
    for row, row_texts in zip(rows, texts, strict=True):
        parts, position, line_spans = [" " * indent], offset + indent, []
        for index, (cell, text) in enumerate(zip(row, row_texts, strict=True)):
            if not isinstance(cell, str):
                line_spans += _shifted_spans(cell, position)
            parts.append(text)
            position += len(text)
            if index < len(row) - 1:
                padding = " " * (widths[index] - cell_len(text) + gap)
                parts.append(padding)
                position += len(padding)
        line = "".join(parts).rstrip()
        end = offset + len(line)
        spans += [Span(s.start, min(s.end, end), s.style) for s in line_spans if s.start < end]
        lines.append(line)
        offset = end + 1
    return Text("\n".join(lines), spans=spans)


def _shifted_spans(cell: Text, position: int) -> list[Span]:
    from rich.text import Span

    spans = [Span(position, position + len(cell.plain), cell.style)] if cell.style else []
    return spans + [span.move(position) for span in cell.spans]


# Commands ---------------------------------------------------------------------------


def command_lines(command: str, width: int) -> list[str]:
    """`command` (as `shlex.join` writes it) in lines of at most `width` cells.

    Broken only between arguments, each broken line ending in ` \\`, so the lines paste
    into a shell as they are; an argument wider than a line is cut into pieces that
    fill it (no shell can continue a quoted word on the next line).
    """
    from rich.cells import cell_len, chop_cells

    width = max(width, 4)
    if cell_len(command) <= width:
        return [command]
    lines: list[str] = []
    line = ""
    for word in shell_words(command):
        joined = f"{line} {word}" if line else word
        if cell_len(joined) <= width - 2:
            line = joined
            continue
        if line:
            lines.append(line + " \\")
        *full, line = chop_cells(word, width) if cell_len(word) > width - 2 else [word]
        lines += full
    return [*lines, line]


def shell_words(command: str) -> list[str]:
    """The arguments of a `shlex.join` line, each still quoted as written."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    for char in command:
        if char == " " and not quote:
            if current:
                words.append("".join(current))
                current = []
            continue
        if char in "'\"" and quote in ("", char):
            quote = "" if quote else char
        current.append(char)
    if current:
        words.append("".join(current))
    return words


class ShellCommand:
    """`$ command` on a terminal: wrapped by `command_lines`, under its own text."""

    PROMPT = "$ "

    def __init__(self, command: str) -> None:
        self.command = safe(command)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        indent = " " * len(self.PROMPT)
        lines = command_lines(self.command, options.max_width - len(self.PROMPT))
        for number, line in enumerate(lines):
            yield Text((self.PROMPT if number == 0 else indent) + line, no_wrap=True)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        from rich.cells import cell_len
        from rich.measure import Measurement

        widest = len(self.PROMPT) + cell_len(self.command)
        return Measurement(min(widest, len(self.PROMPT) + 4), widest)


# Times ------------------------------------------------------------------------------


def parse_time(value: object) -> datetime | None:
    """A timezone-aware datetime from a datetime or an RFC 3339 string; None if neither
    (an audit record's `ts` may be anything)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`: how a person says a span."""
    whole = max(0, int(seconds))
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def age(value: object, now: datetime) -> str | None:
    """How long ago `value` was (`12 min`); None when unknown or in the future."""
    when = parse_time(value)
    if when is None or when > now:
        return None
    return duration((now - when).total_seconds())


def utc_text(value: object) -> str:
    """RFC 3339 UTC to the second (`2026-11-17T09:06:45Z`), for plain output; `-` if unknown."""
    when = parse_time(value)
    if when is None:
        return "-" if value is None else str(value)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_text(value: object, now: datetime, *, seconds: bool = False) -> str:
    """Local time: `14:03:12` today, `2026-11-17 09:06` another day (with `seconds`, to
    the second there too)."""
    when = parse_time(value)
    if when is None:
        return "-" if value is None else str(value)
    local = when.astimezone()
    if local.date() == now.astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def now_utc() -> datetime:
    return datetime.now(UTC)


# Analysis ---------------------------------------------------------------------------


def analysis_panel(
    analysis: Analysis, *, terminal: bool = True, now: datetime | None = None
) -> RenderableType:
    """One analysis: a panel on a terminal, plain lines (every alert listed) off it."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    now = now or now_utc()
    severity = analysis.severity.value
    style = SEVERITY_STYLE[severity]
    heading = f"{analysis.issue_type.value} · {analysis.status}"  # enums: safe
    body = _analysis_body(analysis, terminal, now)
    if terminal:
        title = Text.assemble((f" {severity.upper()} ", style), f" {heading}")
        return Panel(Group(*body), title=title, title_align="left")
    return Group(Text.assemble((severity.upper(), style), f" · {heading}"), *body, Text(""))


def _analysis_body(analysis: Analysis, terminal: bool, now: datetime) -> list[RenderableType]:
    from rich.text import Text

    body: list[RenderableType] = [*_alert_list(analysis.alerts, terminal, now)]
    body += [Text(""), Text(safe(analysis.description))]
    body += _evidence_block(analysis.evidence, terminal, now)
    if analysis.recommended_actions:
        steps = [(f"{n}.", step) for n, step in enumerate(analysis.recommended_actions, 1)]
        body += [Text(""), Text("What to do:", style="bold")]
        body.append(columns(steps, terminal=terminal, indent=2, gap=1))
    action = safe(analysis.proposed_action)
    body += [Text(""), Text.assemble("Proposed action: ", (action, "bold"))]
    if analysis.policy_overrides:
        overrides = [
            ("-", f"{o.field}: {o.model} -> {o.final} (rules: {o.rule})")
            for o in analysis.policy_overrides
        ]
        body += [Text(""), Text("Policy overrode the model:", style="bold")]
        body.append(columns(overrides, terminal=terminal, indent=2, gap=1))
    body.append(Text(safe(_analysed_by(analysis)), style="dim"))
    if analysis.fallback_reason:
        reason = [(Text("LLM not used:", style="yellow"), analysis.fallback_reason)]
        body.append(columns(reason, terminal=terminal, gap=1))
    return body


#: Evidence items on a terminal; piped output lists them all, `--json` too.
SCREEN_EVIDENCE_LIMIT = 3


def _evidence_block(
    evidence: Sequence[Evidence], terminal: bool, now: datetime
) -> list[RenderableType]:
    """`Evidence:`, one item a line: `source: summary (count, first to last seen)`."""
    from rich.text import Text

    if not evidence:
        return []
    shown = evidence[:SCREEN_EVIDENCE_LIMIT] if terminal else evidence
    rows = [("-", f"{item.source}: {item.summary}{_seen(item, now)}") for item in shown]
    parts = [
        Text(""),
        Text("Evidence:", style="bold"),
        columns(rows, terminal=terminal, indent=2, gap=1),
    ]
    if hidden := len(evidence) - len(shown):
        parts.append(Text(f"  … and {hidden} more (--json lists all)", style="dim"))
    return parts


def _seen(item: Evidence, now: datetime) -> str:
    """` (2,400 times, 13:58:00-13:59:59)` (an en dash) in local time; '' if unknown."""
    parts = [_count(item.count, "time")] if item.count is not None else []
    first, last = (local_text(t, now) if t else None for t in (item.first_seen, item.last_seen))
    if first and last and first != last:
        parts.append(f"{first}\N{EN DASH}{last}")
    elif first or last:
        parts.append(first or last or "")
    return f" ({', '.join(parts)})" if parts else ""


def _alert_list(
    alerts: Sequence[AlertSummary], terminal: bool, now: datetime
) -> list[RenderableType]:
    from rich.text import Text

    shown = alerts[:SCREEN_ALERT_LIMIT] if terminal else alerts
    rows = [_alert_row(alert, terminal, now) for alert in shown]
    parts = [columns(rows, terminal=terminal, gap=1)]
    hidden = len(alerts) - len(shown)
    if hidden:
        parts.append(Text(f"… and {hidden:,} more (--json lists every alert)", style="dim"))
    return parts


def _alert_row(alert: AlertSummary, terminal: bool, now: datetime) -> list[str | Text]:
    from rich.text import Text

    state = alert_state(alert)
    name = Text(safe(alert.alertname) or "(no alertname)", style="bold")
    severity = Text(safe(alert.severity or "-"), style="dim")
    suppression = safe(suppressed_by(alert))
    if not terminal:
        summary = alert.summary + (f" [{suppression}]" if suppression else "")
        return [name, severity, state, utc_text(alert.starts_at), summary]
    marker = Text("●", style=MARKER_STYLE.get(state, "red"))
    detail = Text(safe(alert.summary))
    meta = _alert_meta(state, age(alert.starts_at, now), suppression)
    if meta:
        detail.append(("\n" if alert.summary else "") + meta, style="dim")
    return [marker, name, severity, detail]


MARKER_STYLE = {"firing": "red", "active": "red", "resolved": "green", "suppressed": "magenta"}


def alert_state(alert: AlertSummary) -> str:
    """`suppressed` (silenced or inhibited in Alertmanager), else `firing` or `resolved`."""
    if alert.state == "suppressed" or alert.silenced_by or alert.inhibited_by:
        return "suppressed"
    return alert.status


def suppressed_by(alert: AlertSummary) -> str:
    """`silenced by ID` / `inhibited by ...` for a suppressed alert, else ''."""
    parts = []
    if alert.silenced_by:
        parts.append("silenced by " + ", ".join(alert.silenced_by))
    if alert.inhibited_by:
        parts.append("inhibited by " + ", ".join(alert.inhibited_by))
    return "; ".join(parts)


def _alert_meta(state: str, started: str | None, suppression: str) -> str:
    if state == "firing":
        text = f"firing for {started}" if started else "firing"
    else:
        text = state + (f" · started {started} ago" if started else "")
    return text + (f" · {suppression}" if suppression else "")


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def _analysed_by(analysis: Analysis) -> str:
    who = analysis.analyzer + (f" ({analysis.model})" if analysis.model else "")
    return f"{who} · confidence {analysis.confidence:.2f} · {analysis.source}"


def fallback_note(reasons: Iterable[str | None]) -> str | None:
    """One line for the whole run when the LLM was wanted and the rules answered, and why.

    `reasons` has one entry per analysis (None where the LLM answered or was not wanted).
    """
    counted = list(reasons)
    fallbacks = Counter(safe(reason) for reason in counted if reason)
    if not fallbacks:
        return None
    total = sum(fallbacks.values())
    if len(fallbacks) == 1:
        why = next(iter(fallbacks))
    else:
        why = "; ".join(
            f"{reason} ({_count(n, 'notification')})" for reason, n in fallbacks.most_common()
        )
    if len(counted) == 1:
        return f"LLM not used, the rules answered: {why}"
    return f"LLM not used, the rules answered {total} of {len(counted)} notifications: {why}"
