"""Help screens in the words of the command line, not of the Python types behind it.

Typer shows an argument as `FILE... <list[str]>` and its usage as `{ID}`, truncates
command descriptions with "...", and prints ranges as `[x>=0.5]`. The command and
group classes here print `FILE...`, `ID`, whole one-line descriptions and
`[at least 0.5]`, and `epilog()` builds the examples and exit codes every command
ends with (click's `\\b` keeps their line breaks).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from typer.core import TyperCommand, TyperGroup

from market_agent.errors import ExitCode

_RANGES = (
    (re.compile(r"([^\s\[;]+)<=x<=([^\s\];]+)"), r"\1 to \2"),
    (re.compile(r"x>=([^\s\];]+)"), r"at least \1"),
    (re.compile(r"x<=([^\s\];]+)"), r"at most \1"),
)


def argument_name(param: Any) -> str:
    """How help, usage and errors name an argument: `FILE...`, `ID`."""
    name = str(param.metavar or param.name.upper())
    return f"{name}..." if param.nargs != 1 else name


def plain_ranges(text: str) -> str:
    """`[default: 2; x>=1]` -> `[default: 2; at least 1]`."""
    for pattern, words in _RANGES:
        text = pattern.sub(words, text)
    return text


def _help_records(command: Any, ctx: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    arguments, options = [], []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        name, text = record
        if param.param_type_name == "argument":
            arguments.append((argument_name(param), plain_ranges(text)))
        else:
            options.append((name, plain_ranges(text)))
    return arguments, options


def _format_params(command: Any, ctx: Any, formatter: Any) -> None:
    arguments, options = _help_records(command, ctx)
    for title, rows in (("Arguments", arguments), ("Options", options)):
        if rows:
            with formatter.section(title):
                formatter.write_dl(rows)


def _usage_pieces(command: Any, ctx: Any) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if param.param_type_name != "argument":
            pieces.extend(param.get_usage_pieces(ctx))
        elif param.required:
            pieces.append(argument_name(param))
        else:
            name = str(param.metavar or param.name.upper())
            pieces.append(f"[{name}]..." if param.nargs != 1 else f"[{name}]")
    return pieces


class Command(TyperCommand):
    """A command whose help names arguments and ranges as a user types them."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_params(self, ctx, formatter)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(self, ctx)


class Group(TyperGroup):
    """A group whose help lists each command's whole one-line description."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_params(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*_usage_pieces(self, ctx), self.subcommand_metavar]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [
            (name, command.short_help or command.get_short_help_str(limit=1000))
            for name, command in self.commands.items()
            if not command.hidden
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def epilog(examples: Sequence[str], exit_codes: Sequence[tuple[ExitCode, str]]) -> str:
    """Examples, then exit codes: one line each, kept as written (`\\b`)."""
    width = max(len(str(int(code))) for code, _ in exit_codes)
    lines = ["\b", "Examples:", *(f"  {example}" for example in examples), ""]
    lines += ["\b", "Exit codes:"]
    lines += [f"  {int(code):<{width}}  {meaning}" for code, meaning in exit_codes]
    return "\n".join(lines)
