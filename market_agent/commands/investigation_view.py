"""`history show ID` for an investigation (`analyze --investigate`): its tool calls as a
timeline, then the verdict they led to. `--json` prints the stored records.

Tool names, arguments, results and errors come from the model and the services it
queried: untrusted text, shown with control characters as escapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from market_agent.render import raw_lines

if TYPE_CHECKING:
    from rich.console import RenderableType

MAX_ARGUMENTS_CHARS = 300
MAX_RESULT_CHARS = 400


def show_investigation(files: list[Path], ident: str, json_output: bool) -> bool:
    """Print the investigation of analysis (or notification) `ident`; False if none."""
    from market_agent.audit.investigation import find_investigation
    from market_agent.render import stdout_console

    found = find_investigation(files, ident)
    if found is None:
        return False
    if json_output:
        origin = [found.analysis[0]] if found.analysis else []
        raw_lines([*(line for line, _ in found.steps), *origin])
    else:
        analysis = found.analysis[1] if found.analysis else None
        steps = [record for _, record in found.steps]
        stdout_console().print(investigation_timeline(found.analysis_id, steps, analysis))
    return True


def investigation_timeline(
    analysis_id: str, steps: list[dict[str, Any]], analysis: dict[str, Any] | None
) -> RenderableType:
    """One entry per tool call, in order (arguments, then result or error), then the
    verdict it led to."""
    from rich.console import Group
    from rich.padding import Padding
    from rich.text import Text

    parts: list[RenderableType] = [Text(f"investigation of analysis {inert(analysis_id[:12])}")]
    for step in steps:
        when = str(step.get("ts", ""))[11:23]
        head = f"{step.get('step', ''):>3}  {when}  {inert(step.get('tool'))}"
        parts.append(Text(f"{head}  ({_number(step.get('elapsed_ms')):.0f} ms)"))
        arguments = json.dumps(step.get("arguments") or {}, ensure_ascii=False)
        error = step.get("error")
        outcome = f"error: {error}" if error else f"-> {_spaced(str(step.get('result') or ''))}"
        for line in (
            f"args: {_clip(arguments, MAX_ARGUMENTS_CHARS)}",
            _clip(outcome, MAX_RESULT_CHARS),
        ):
            parts.append(Padding(Text(inert(line)), (0, 0, 0, 5)))
    if analysis is not None:
        parts.append(Text(inert(verdict_line(analysis))))
    return Group(*parts)


def verdict_line(analysis: dict[str, Any]) -> str:
    """What the investigation led to: the verdict, how it went, what it cites."""
    investigation = analysis.get("investigation") or {}
    line = (
        f"verdict: {analysis.get('severity')} {analysis.get('issue_type')} -> "
        f"{analysis.get('proposed_action')} (confidence {analysis.get('confidence')}, "
        f"{analysis.get('analyzer')})"
    )
    if investigation:
        line += f"; investigation {investigation.get('outcome')}, "
        line += f"{investigation.get('tool_calls')} tool calls"
        if investigation.get("limit"):
            line += f", stopped by {investigation['limit']}"
    cited = ", ".join(str(e.get("source")) for e in analysis.get("evidence") or [])
    if cited:
        line += f"; evidence: {cited}"
    if analysis.get("fallback_reason"):
        line += f"; fallback: {analysis['fallback_reason']}"
    return line


def inert(value: Any) -> str:
    """`value` as text with control characters (escape sequences) shown as escapes."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _spaced(text: str) -> str:
    """A compact JSON result with spaces after separators, so that it wraps."""
    try:
        return json.dumps(json.loads(text), ensure_ascii=False)
    except ValueError:  # a result cut to max_result_chars is no longer JSON
        return text.replace('","', '", "').replace(",{", ", {")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
