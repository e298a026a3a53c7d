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


def test_every_command_and_option_is_in_the_readme() -> None:
    root = typer.main.get_command(app)
    for path, command in _commands(root).items():
        assert f"market-agent {path}" in README, f"`market-agent {path}` is undocumented"
        for param in command.params:  # type: ignore[attr-defined]
            for flag in param.opts:
                if flag.startswith("--") and flag != "--help":
                    assert flag in README, f"{flag} of `{path}` is undocumented"
    for param in root.params:
        for flag in param.opts:
            if flag.startswith("--") and flag != "--help":
                assert flag in README, f"global {flag} is undocumented"


def test_every_exit_code_is_in_the_readme_table() -> None:
    for code in ExitCode:
        assert re.search(rf"\| {code.value} \| `{code.name}` \|", README), code
