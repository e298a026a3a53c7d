"""The `market-agent` command line: a table of contents over `market_agent.commands`.

Errors are caught once, in `main()`: a one-line message on stderr and a documented
exit code (`market_agent.errors.ExitCode`); tracebacks only with `--debug`.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from market_agent import __version__
from market_agent.commands import analyze, listen, restart, status
from market_agent.commands.argv import split_global_options
from market_agent.commands.help import Command, Group
from market_agent.commands.history import history_app
from market_agent.errors import ExitCode
from market_agent.state import AppState

if TYPE_CHECKING:
    from typer._click.exceptions import ClickException, UsageError

app = typer.Typer(
    name="market-agent",
    help="On-call companion for the Market Predictor: analyse alerts, watch health, "
    "restart safely, keep an audit trail.",
    cls=Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich formatting costs ~0.1 s of start-up
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command(cls=Command, short_help=analyze.SHORT_HELP, epilog=analyze.EPILOG)(analyze.analyze)
app.command(cls=Command, short_help=listen.SHORT_HELP, epilog=listen.EPILOG)(listen.listen)
app.command(cls=Command, short_help=status.SHORT_HELP, epilog=status.EPILOG)(status.status)
app.command(cls=Command, short_help=restart.SHORT_HELP, epilog=restart.EPILOG)(restart.restart)
app.add_typer(history_app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"market-agent {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            metavar="PATH",
            help="TOML config file [default: $MARKET_AGENT_CONFIG, else ./market-agent.toml, "
            "else config.toml in $XDG_CONFIG_HOME/market-agent].",
        ),
    ] = None,
    audit_log: Annotated[
        Path | None,
        typer.Option("--audit-log", metavar="PATH", help="Audit log path (JSON Lines)."),
    ] = None,
    no_audit: Annotated[
        bool, typer.Option("--no-audit", help="Do not write the audit log (pure CI use).")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    color: Annotated[
        bool | None,
        typer.Option(
            "--color/--no-color",
            help="Colour always / never (default: on a terminal, unless NO_COLOR is set).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Settings are loaded once, lazily, and shared by the command through ctx.obj.

    Global options go before or after the command (`analyze f.json --no-audit`).
    """
    overrides: dict[str, object] = {"audit.path": audit_log}
    if no_audit:
        overrides["audit.enabled"] = False
    flags = {"audit.path": "--audit-log", "audit.enabled": "--no-audit"}
    ctx.obj = AppState(
        config_path=config,
        debug=debug or _env_debug(),
        overrides=overrides,
        flags=flags,
        color=color,
    )
    from market_agent.render import choose_color

    choose_color(color)


def _env_debug() -> bool:
    return os.environ.get("MARKET_AGENT_DEBUG", "").lower() in {"1", "true", "yes"}


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _skip_unused_optional_imports()
    sys.exit(run(argv))


def _skip_unused_optional_imports() -> None:
    """Start-up is a promise: don't pay for optional imports this process never uses.

    httpx imports its own command line (click, rich, pygments) and httpcore imports
    trio whenever they happen to be installed; both are guarded by `except
    ImportError`, and market-agent uses neither. Together they cost ~0.15 s. Pydantic
    looks for plugins among the entry points of every installed distribution when
    the first model is built (~25 ms); market-agent uses none (Typer turns them off
    for its own parameters too). Setting PYDANTIC_DISABLE_PLUGINS yourself wins.
    """
    for name in ("trio", "httpx._main"):
        # None blocks the import (documented); typeshed types sys.modules without it.
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


@functools.cache
def _command() -> Any:
    """The click command behind the Typer app: built once per process."""
    return typer.main.get_command(app)


def _click_exceptions() -> tuple[type[Exception], type[ClickException], type[UsageError]]:
    """Typer >= 0.20 vendors click; older ones use the real package (same interface;
    mypy checks against the installed Typer's)."""
    if not TYPE_CHECKING:
        try:
            from typer._click.exceptions import ClickException, UsageError
        except ImportError:  # pragma: no cover - depends on the installed Typer
            from click.exceptions import ClickException, UsageError
    return typer.Abort, ClickException, UsageError


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (the testable core of `main`)."""
    from market_agent.errors import MarketAgentError
    from market_agent.render import error

    abort, click_exception, _ = _click_exceptions()
    command = _command()
    options, rest = split_global_options(sys.argv[1:] if argv is None else argv, command)
    debug = "--debug" in options or _env_debug()
    try:
        result = command.main(
            args=[*options, *rest], prog_name="market-agent", standalone_mode=False
        )
    except MarketAgentError as exc:
        _maybe_traceback(debug)
        error(exc.message)
        return int(exc.exit_code)
    except abort:
        error("aborted")
        return int(ExitCode.INTERRUPTED)
    except click_exception as exc:
        _in_plain_words(exc).show()
        return int(ExitCode.USAGE)
    except KeyboardInterrupt:
        error("interrupted")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        _silence_broken_pipe()
        return int(ExitCode.OK)
    except SystemExit as exc:
        # Typer catches a broken pipe itself and exits 1, which is ALERT here.
        if not _is_broken_pipe(exc.__context__):
            raise
        _silence_broken_pipe()
        return int(ExitCode.OK)
    except Exception as exc:  # the one place that turns bugs into a message
        _maybe_traceback(debug)
        error(f"internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)")
        return int(ExitCode.INTERNAL)
    code = int(result or 0) if isinstance(result, int) else 0
    if code == ExitCode.INTERRUPTED:  # Typer turns Ctrl-C into a silent Exit(130)
        error("interrupted")
    return code


def _maybe_traceback(debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc(file=sys.stderr)


def _is_broken_pipe(error: BaseException | None) -> bool:
    import errno

    return isinstance(error, OSError) and error.errno == errno.EPIPE


def _silence_broken_pipe() -> None:
    # stdout's reader went away (e.g. `| head`): don't let the interpreter complain at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


#: Units for the numbers a metavar names, for messages ("at least 0.5 seconds").
_UNITS = {"SECONDS": "seconds", "BYTES": "bytes"}


def _in_plain_words(exc: ClickException) -> ClickException:
    """A bad option value in this project's words, not the validation library's:
    `--watch must be at least 0.5 seconds (got 0.1)`."""
    from market_agent.commands.help import argument_name
    from market_agent.errors import describe_problem

    param = getattr(exc, "param", None)
    errors = getattr(exc.__cause__, "errors", None)
    if param is None or not callable(errors):
        return exc
    if param.param_type_name == "argument":
        subject = argument_name(param)
    else:
        subject = max(param.opts, key=len)
    unit = _UNITS.get(str(param.metavar), "")
    message = "; ".join(describe_problem(e, subject, unit=unit) for e in errors())
    usage_error = _click_exceptions()[2]
    return usage_error(message, ctx=getattr(exc, "ctx", None))
