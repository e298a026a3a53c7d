"""`market-agent restart`: the human-approved path through the guarded pipeline."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from market_agent.commands.help import epilog
from market_agent.errors import ExitCode
from market_agent.render import (
    ShellCommand,
    columns,
    failure_output,
    json_line,
    on_terminal,
    safe,
    show,
    stderr_console,
    stdout_console,
)

if TYPE_CHECKING:
    from rich.console import RenderableType

    from market_agent.actions.runner import ActionResult, Preview

SHORT_HELP = "Restart the predictor: approved, guarded, verified, rolled back."
EPILOG = epilog(
    [
        "market-agent restart --dry-run",
        'market-agent restart --reason "stuck after deploy"',
        "market-agent restart --action failover --yes --json",
    ],
    [
        (ExitCode.OK, "done and verified"),
        (ExitCode.USAGE, "bad usage or configuration"),
        (ExitCode.AUDIT, "the audit log cannot be written"),
        (ExitCode.BLOCKED, "refused or blocked by a guard (also such a --dry-run)"),
        (ExitCode.ROLLED_BACK, "failed verification and was rolled back"),
        (ExitCode.ACTION_FAILED, "failed and not recovered (escalated)"),
        (ExitCode.INTERRUPTED, "interrupted (Ctrl-C)"),
    ],
)


def restart(
    ctx: typer.Context,
    action: Annotated[
        str, typer.Option("--action", metavar="NAME", help="The configured action to run.")
    ] = "restart",
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Show the exact commands, blocking guards and verification plan."
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Run without asking.")] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", metavar="TEXT", help="Why (recorded).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Override the circuit breaker (only it; recorded).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Restart the predictor through the configured action, verified, with rollback.

    Shows exactly what will run and asks for confirmation; without a terminal it
    refuses unless --yes is given. Single flight and the circuit breaker apply
    (--force overrides the breaker only).
    """
    from market_agent.actions.factory import reconcile_at_startup
    from market_agent.actions.runner import ActionRequest
    from market_agent.errors import AuditError

    state = ctx.obj
    runner = state.action_runner
    request = ActionRequest(action, "manual", reason=reason, force=force)
    if dry_run:
        _show(runner.dry_run(request), json_output)
        return
    if state.audit_log is None:
        raise AuditError("restart needs the audit log (circuit breaker, history): drop --no-audit")
    state.audit_log.check_writable()
    reconcile_at_startup(state.settings, state.audit_log)
    if not yes:
        if not sys.stdin.isatty():
            _show(runner.refuse(request, "no terminal to confirm on and no --yes"), json_output)
            return
        if not _confirm(runner.preview(request)):
            _show(runner.refuse(request, "declined at the prompt"), json_output)
            return
    _show(runner.run(request), json_output)


def _show(result: ActionResult, json_output: bool) -> None:
    if json_output:
        json_line(result.to_json())
    else:
        out = stdout_console()
        terminal = on_terminal(out)
        if result.dry_run:
            show(out, preview_panel(result.preview, terminal))
        else:
            show(out, result_text(result, terminal))
    if result.exit_code:
        raise typer.Exit(int(result.exit_code))


def _confirm(preview: Preview) -> bool:
    """Show on stderr exactly what will run, then ask."""
    err = stderr_console()
    show(err, preview_panel(preview, on_terminal(err)))
    return typer.confirm("Run it?", default=False, err=True)


_MARK = {True: ("✓", "green"), False: ("✗", "red")}
_HAS = {"yes": _MARK[True], "no": _MARK[False], "unknown": ("?", "yellow")}


def preview_panel(preview: Preview, terminal: bool = True) -> RenderableType:
    """What will run, its rollback, verification, permissions and guards: a panel on a
    terminal (long lines wrapped under their own text), plain lines off it."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    blocked = bool(preview.blocking)
    title = f"{preview.action}: " + ("blocked" if blocked else "ready")
    style = "red" if blocked else "green"
    body = [
        *_plan_lines(preview, terminal),
        _verify_line(preview, terminal),
        *_permission_lines(preview, terminal),
        *_guard_lines(preview, terminal),
    ]
    if not terminal:
        return Group(Text(safe(title), style=f"bold {style}"), *body)
    return Panel(Group(*body), title=safe(title), title_align="left", border_style=style)


def _plan_lines(preview: Preview, terminal: bool) -> list[RenderableType]:
    from rich.text import Text

    plan = preview.plan
    heading = f" ({plan.backend}, within {plan.timeout:g} s):" if plan else ":"
    lines: list[RenderableType] = [Text.assemble(("Will run", "bold"), heading)]
    if plan is None:
        return [*lines, Text("  (no plan: see the guards)")]
    lines += [_command(command, terminal) for command in plan.describe()]
    if preview.rollback:
        lines.append(Text("On failure, roll back with:", style="bold"))
        lines += [_command(command, terminal) for command in preview.rollback.describe()]
    return lines


def _command(command: str, terminal: bool) -> RenderableType:
    """The exact command: whole on one line off a terminal, wrapped under itself on it."""
    from rich.padding import Padding
    from rich.text import Text

    if not terminal:
        return Text(f"  $ {safe(command)}")
    return Padding(ShellCommand(command), (0, 0, 0, 2))


def _verify_line(preview: Preview, terminal: bool) -> RenderableType:
    from rich.text import Text

    verification = preview.verification
    checks = ["/health healthy"] if verification["health"] else []
    if verification["query"]:
        checks.append(f"PromQL {verification['query']} holds")
    plan = f"{' and '.join(checks) or 'nothing'} within {verification['timeout_s']:g} s"
    return columns([[Text("Verify:", style="bold"), plan]], terminal=terminal, gap=1)


def _permission_lines(preview: Preview, terminal: bool) -> list[RenderableType]:
    from rich.text import Text

    if not preview.permissions:
        return []
    rows: list[list[str | Text]] = []
    for permission in preview.permissions:
        mark, style = _HAS[permission.has]
        role = " (rollback)" if permission.role == "rollback" else ""
        needs = f"{permission.backend}{role} needs {permission.needs}"
        rows.append([Text(mark, style=style), needs])
        rows.append(["", f"{permission.has}: {permission.detail}"])
    heading = Text("Permission:", style="bold")
    return [heading, columns(rows, terminal=terminal, indent=2, gap=1)]


def _guard_lines(preview: Preview, terminal: bool) -> list[RenderableType]:
    from rich.text import Text

    rows: list[list[str | Text]] = []
    for guard in preview.guards:
        mark, style = _MARK[guard.passed or guard.overridden]
        extra = " (overridden by --force)" if guard.overridden else ""
        rows.append([Text(mark, style=style), f"{guard.name}: {guard.detail}{extra}"])
    heading = Text("Guards:", style="bold")
    return [heading, columns(rows, terminal=terminal, indent=2, gap=1)]


def result_text(result: ActionResult, terminal: bool = True) -> RenderableType:
    """The outcome, where to read more, then each step: columns whose last one wraps
    under itself on a terminal, one line a step off it."""
    from rich.console import Group
    from rich.text import Text

    style = "green" if result.outcome == "verified" else "red"
    heading = Text(f"{result.action}: {result.outcome}", style=f"bold {style}")
    where = f"(action {result.action_id}; market-agent history show {result.action_id})"
    rows: list[list[str | Text]] = []
    for step in result.steps:
        name = step.get("guard") or step["step"]
        detail = str(step.get("detail") or "")
        said = failure_output(step.get("commands"))
        rows.append([str(name), str(step["outcome"]), f"{detail}: {said}" if said else detail])
    escalations = [
        Text(safe(f"  escalated ({escalation['reason']}): {escalation['outcome']}"))
        for escalation in result.escalations
    ]
    return Group(
        columns([[heading, where]], terminal=terminal, gap=2),
        columns(rows, terminal=terminal, indent=2, gap=1),
        *escalations,
    )
