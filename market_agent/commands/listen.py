"""`market-agent listen`: the Alertmanager webhook receiver."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from market_agent.commands.help import epilog
from market_agent.errors import ExitCode

if TYPE_CHECKING:
    from market_agent.settings import ListenSettings

#: The choices of `[listen]` (market_agent.settings.ListenSettings), here so that
#: `--help` does not import the settings; tests/test_cli_options.py keeps them equal.
AnalysisMode = Literal["process", "threads"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]

#: The flag behind each setting `listen` overrides, for error messages.
FLAGS = {
    "listen.host": "--host",
    "listen.port": "--port",
    "listen.token_file": "--token-file",
    "listen.insecure_no_auth": "--insecure-no-auth",
    "listen.workers": "--workers",
    "listen.analysis": "--analysis",
    "listen.queue_size": "--queue-size",
    "listen.grace_period": "--grace-period",
    "listen.log_format": "--log-format",
    "listen.log_level": "--log-level",
    "actions.auto_remediate": "--auto-remediate",
}

SHORT_HELP = "Receive Alertmanager webhooks and analyse them in the background."
EPILOG = epilog(
    [
        "market-agent listen --init-token",
        "market-agent listen --token-file /etc/market-agent/webhook-token",
        "market-agent listen --host 0.0.0.0 --port 9095 --log-format json --no-llm",
    ],
    [
        (ExitCode.OK, "stopped by SIGTERM or SIGINT after draining the queue"),
        (ExitCode.USAGE, "bad usage or configuration (e.g. no token off loopback)"),
        (ExitCode.AUDIT, "the audit log cannot be opened or written"),
    ],
)


def listen(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option("--host", metavar="ADDRESS", help="Address to bind [default: 127.0.0.1]."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", metavar="PORT", min=0, max=65535, help="TCP port [default: 9095]."),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", metavar="FILE", help="File holding the webhook bearer token."),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option("--insecure-no-auth", help="Allow a non-loopback bind without a token."),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", metavar="N", min=1, help="Analysis threads [default: 2]."),
    ] = None,
    analysis: Annotated[
        AnalysisMode | None,
        typer.Option(
            "--analysis",
            metavar="process|threads",
            help="Analyse in a process of its own (a second core) or in threads beside "
            "the HTTP server [default: process].",
        ),
    ] = None,
    queue_size: Annotated[
        int | None,
        typer.Option(
            "--queue-size",
            metavar="N",
            min=1,
            help="Notifications waiting for analysis before 503 [default: 1000].",
        ),
    ] = None,
    grace_period: Annotated[
        float | None,
        typer.Option(
            "--grace-period",
            metavar="SECONDS",
            min=0,
            help="Seconds to drain the queue on SIGTERM [default: 10].",
        ),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option("--log-format", metavar="text|json", help="Log lines on stderr."),
    ] = None,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(
            "--log-level", metavar="LEVEL", help="debug, info, warning or error [default: info]."
        ),
    ] = None,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Use the rule analyzer only.")] = False,
    init_token: Annotated[
        bool,
        typer.Option(
            "--init-token",
            help="Write a new token file (0600, new directories 0700) at --token-file "
            "or its default, print the Alertmanager receiver that reads it, and exit.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="With --init-token: replace an existing token file.")
    ] = False,
    auto_remediate: Annotated[
        bool,
        typer.Option(
            "--auto-remediate",
            help="Leave safety mode: run allowed actions through the guards "
            "[default: actions.auto_remediate, off].",
        ),
    ] = False,
) -> None:
    """Receive Alertmanager webhooks on POST /webhook/alerts and analyse them.

    Each notification is written to the audit log (fsync'd) before it is
    acknowledged, then analysed in the background; unanalysed notifications
    left by a crash are analysed at the next start, and Alertmanager re-sends
    are recognised and not analysed twice. Also serves /healthz, /readyz and
    /metrics. SIGTERM or SIGINT: stop accepting, drain the queue for the grace
    period, exit 0. The token comes from --token-file, listen.token_file or
    listen.token ($MARKET_AGENT_LISTEN__TOKEN). Every analysis goes through the
    guarded action pipeline: in safety mode (the default) proposals are only
    recorded; --auto-remediate lets allowed actions run. Analysis runs in a
    process of its own by default, so that it has a core to itself.

    Set-up: `market-agent listen --init-token` writes a new token (never shown) to
    --token-file, listen.token_file or /etc/market-agent/webhook-token, and prints
    the Alertmanager receiver that reads it; it refuses to replace an existing file
    (exit 2) unless --force is given.
    """
    from market_agent.actions.factory import reconcile_at_startup
    from market_agent.listen.http import run_listener

    state = ctx.obj
    state.override(
        {
            "listen.host": host,
            "listen.port": port,
            "listen.token_file": token_file,
            "listen.insecure_no_auth": insecure_no_auth or None,
            "listen.workers": workers,
            "listen.analysis": analysis,
            "listen.queue_size": queue_size,
            "listen.grace_period": grace_period,
            "listen.log_format": log_format,
            "listen.log_level": log_level,
            "actions.auto_remediate": True if auto_remediate else None,
        },
        flags=FLAGS,
    )
    ctx.call_on_close(state.close)
    settings = state.settings
    if init_token:
        _init_token(settings.listen, force)
        return
    if force:
        from market_agent.errors import ConfigError

        raise ConfigError("listen: --force only applies with --init-token")
    reconcile_at_startup(settings, state.audit_log)
    if settings.listen.analysis == "process":  # it builds its analyzer and remediator
        from market_agent.listen.messages import EngineSpec

        engine = EngineSpec(settings, use_llm=not no_llm)
        run_listener(settings, state.audit_log, None, engine=engine)
    else:
        service = state.analysis_service(use_llm=not no_llm)
        service.warm()  # the LLM client (and LangChain) is built before serving
        run_listener(
            settings,
            state.audit_log,
            service,
            context_for=state.context_provider(),
            remediator=state.remediator(),
        )


def _init_token(options: ListenSettings, force: bool) -> None:
    from market_agent.listen.token import (
        DEFAULT_TOKEN_FILE,
        alertmanager_snippet,
        create_token_file,
    )

    created = create_token_file(options.token_file or DEFAULT_TOKEN_FILE, force=force)
    for directory in created.created_dirs:
        typer.echo(f"created directory {directory} (0700)", err=True)
    verb = "replaced" if created.replaced else "created"
    typer.echo(f"{verb} {created.path} (0600, a new random token, not shown)", err=True)
    typer.echo(
        f"start the listener with: market-agent listen --token-file {created.path}\n"
        "Alertmanager reads the same file: if it runs as another user, give that user "
        "read access. Its receiver:",
        err=True,
    )
    typer.echo(alertmanager_snippet(created.path, options.host, options.port), nl=False)
