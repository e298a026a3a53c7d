"""The README cannot drift from the CLI, the exit codes, or CI."""

from __future__ import annotations

import re

import typer

from market_agent.cli import app
from market_agent.errors import ExitCode
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    fence = README.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(fence) == 2, "the README starts with the two fresh-machine commands"
    install_and_run, test_command = fence
    assert "analyze examples/alerts/" in install_and_run
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test_command


def _commands(group: object, prefix: str = "") -> dict[str, object]:
    found = {}
    for name, command in getattr(group, "commands", {}).items():
        path = f"{prefix}{name}"
        found[path] = command
        found.update(_commands(command, f"{path} "))
    return found


def _section(readme: str, command: str) -> str:
    """The README's `## `market-agent COMMAND`` section, up to the next `## ` heading."""
    heading = f"\n## `market-agent {command}`"
    if heading not in readme:
        return ""
    return readme.split(heading, 1)[1].split("\n## ", 1)[0]


def _long_flags(params: list[object]) -> list[str]:
    return [
        flag
        for param in params
        for flag in param.opts  # type: ignore[attr-defined]
        if flag.startswith("--") and flag != "--help"
    ]


def undocumented(readme: str) -> list[str]:
    """Each command, and each of its flags, missing from its own README section."""
    root = typer.main.get_command(app)
    missing = []
    for path, command in _commands(root).items():
        section = _section(readme, path.split()[0])
        if f"market-agent {path}" not in section:
            missing.append(f"market-agent {path}")
        for flag in _long_flags(command.params):  # type: ignore[attr-defined]
            if not re.search(rf"{flag}\b", section):
                missing.append(f"{path} {flag}")
    missing += [f"global {flag}" for flag in _long_flags(root.params) if flag not in readme]
    return missing


def test_every_command_and_option_is_in_its_own_readme_section() -> None:
    assert undocumented(README) == []


def test_a_flag_documented_only_in_another_section_is_caught() -> None:
    analyze = _section(README, "analyze")
    moved = README.replace(analyze, analyze.replace("--fail-on", "--flag-elsewhere"))
    moved += "\n## Elsewhere\n\n`--fail-on`\n"
    assert "analyze --fail-on" in undocumented(moved)


def test_every_exit_code_is_in_the_readme_table() -> None:
    for code in ExitCode:
        assert re.search(rf"\| {code.value} \| `{code.name}` \|", README), code


def test_every_audit_record_kind_is_in_the_history_section() -> None:
    from market_agent.commands.history import RecordKind

    history = _section(README, "history")
    assert [kind for kind in RecordKind if f"`{kind.value}`" not in history] == []


def test_global_options_are_documented_as_going_anywhere() -> None:
    assert "go before or after it" in README
    assert "--install-completion" in README and "--show-completion" in README
