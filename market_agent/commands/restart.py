"""`market-agent restart`: the human-approved path through the guarded pipeline."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from market_agent.commands.help import epilog
from market_agent.errors import ExitCode

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
    from market_agent.render import stderr_console

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
        stderr_console().print(preview_panel(runner.preview(request)))
        if not typer.confirm("Run it?", default=False, err=True):
            _show(runner.refuse(request, "declined at the prompt"), json_output)
            return
    _show(runner.run(request), json_output)


def _show(result: ActionResult, json_output: bool) -> None:
    from market_agent.render import json_line, stdout_console

    if json_output:
        json_line(result.to_json())
    elif result.dry_run:
        stdout_console().print(preview_panel(result.preview))
    else:
        stdout_console().print(result_text(result))
    if result.exit_code:
        raise typer.Exit(int(result.exit_code))


_MARK = {True: ("✓", "green"), False: ("✗", "red")}
_HAS = {"yes": _MARK[True], "no": _MARK[False], "unknown": ("?", "yellow")}


def preview_panel(preview: Preview) -> RenderableType:
    from rich.panel import Panel
    from rich.text import Text

    text = Text()
    plan = preview.plan
    text.append("Will run", style="bold")
    text.append(f" ({plan.backend}, within {plan.timeout:g} s):\n" if plan else ":\n")
    for line in plan.describe() if plan else ["(no plan: see the guards)"]:
        text.append(f"  $ {line}\n")
    if preview.rollback:
        text.append("On failure, roll back with:\n", style="bold")
        for line in preview.rollback.describe():
            text.append(f"  $ {line}\n")
    verification = preview.verification
    checks = ["/health healthy"] if verification["health"] else []
    if verification["query"]:
        checks.append(f"PromQL {verification['query']} holds")
    text.append("Verify: ", style="bold")
    text.append(f"{' and '.join(checks) or 'nothing'} within {verification['timeout_s']:g} s\n")
    if preview.permissions:
        text.append("Permission:\n", style="bold")
    for permission in preview.permissions:
        mark, style = _HAS[permission.has]
        text.append(f"  {mark} ", style=style)
        role = " (rollback)" if permission.role == "rollback" else ""
        text.append(f"{permission.backend}{role} needs {permission.needs}\n")
        text.append(f"      {permission.has}: {permission.detail}\n")
    text.append("Guards:\n", style="bold")
    for guard in preview.guards:
        mark, style = _MARK[guard.passed or guard.overridden]
        text.append(f"  {mark} ", style=style)
        extra = " (overridden by --force)" if guard.overridden else ""
        text.append(f"{guard.name}: {guard.detail}{extra}\n")
    blocked = preview.blocking
    title = f"{preview.action}: " + ("blocked" if blocked else "ready")
    return Panel(text, title=title, title_align="left", border_style="red" if blocked else "green")


def result_text(result: ActionResult) -> RenderableType:
    from rich.text import Text

    style = "green" if result.outcome == "verified" else "red"
    text = Text()
    text.append(f"{result.action}: {result.outcome}", style=f"bold {style}")
    text.append(f"  (action {result.action_id}; market-agent history show {result.action_id})\n")
    for step in result.steps:
        detail = step.get("detail") or ""
        name = step.get("guard") or step["step"]
        text.append(f"  {name:<16} {step['outcome']:<10} {detail}\n")
    for escalation in result.escalations:
        text.append(f"  escalated ({escalation['reason']}): {escalation['outcome']}\n")
    return text
