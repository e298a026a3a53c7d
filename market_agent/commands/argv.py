"""Global options anywhere on the command line, the way `gh` and `kubectl` take them."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any


def split_global_options(argv: list[str], root: Any) -> tuple[list[str], list[str]]:
    """(the root command's options with their values, the rest of `argv`): given back
    in that order to the parser, global options work after the command too
    (`history verify --audit-log X`).

    The set comes from the root's own parameters, so a new global option needs no code
    here. An option of the command being parsed wins over a global one of the same
    name, option values are skipped over, and nothing after `--` moves.
    """
    global_options = _value_flags(root, skip_help=True)
    hoisted: list[str] = []
    kept: list[str] = []
    command, index = root, 0
    while index < len(argv):
        if argv[index] == "--":
            kept += argv[index:]
            break
        local = _value_flags(command, skip_help=False) if command is not root else {}
        flag, width = _option_at(argv[index], local)
        if flag is None:
            flag, width = _option_at(argv[index], global_options)
            if flag is not None:
                hoisted += argv[index : index + width]
                index += width
                continue
            command = getattr(command, "commands", {}).get(argv[index], command)
        kept += argv[index : index + width]
        index += width
    return hoisted, kept


def _option_at(arg: str, flags: Mapping[str, bool]) -> tuple[str | None, int]:
    """The flag of `flags` that `arg` is (else None), and how many args it spans:
    2 for `--audit-log X`, 1 for `--audit-log=X`, `-cFILE` or a flag without value."""
    name, equals, _ = arg.partition("=")
    if name in flags:
        return name, 2 if flags[name] and not equals else 1
    if not arg.startswith("--") and flags.get(arg[:2]):
        return arg[:2], 1
    return None, 1


@functools.cache
def _value_flags(command: Any, *, skip_help: bool) -> dict[str, bool]:
    """Each option flag of `command` -> whether it takes a value."""
    flags: dict[str, bool] = {}
    for param in command.params:
        if param.param_type_name != "option" or (skip_help and param.name == "help"):
            continue
        for flag in (*param.opts, *param.secondary_opts):
            flags[flag] = not (param.is_flag or param.count)
    return flags
