"""`history` as a person sees it, in a real terminal: golden screens and layout rules.

The screens read `tests/screens/history-audit.jsonl`, an audit log the real CLI wrote
(three analyses, a failed and a verified manual restart) with the audit clock stepping
from a fixed time, so every time on the screens is fixed too; `TZ=UTC` makes the
local times UTC. `UPDATE_SCREENS=1 pytest tests/test_screens_history.py` writes the
screens and their README copies again (review the diff); `UPDATE_SCREENS=log` writes
the audit log first (new ids and figures: every screen changes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli
from tests.conftest import ROOT
from tests.golden import SCREENS, assert_readme_copy, assert_screen
from tests.terminal import Screen, run_in_terminal

AUDIT_LOG = SCREENS / "history-audit.jsonl"
START = datetime(2026, 11, 17, 9, 7, 0, tzinfo=UTC)
#: The verified restart's id in the log (`history show` takes a 6+ character prefix).
VERIFIED = "5d1e2f"
GOLDEN = {
    "history.txt": ["history"],
    "history-show.txt": ["history", "show", VERIFIED],
    "history-stats.txt": ["history", "stats"],
}


class SteppingClock(datetime):
    """`datetime.now()` as the audit log calls it: 1.25 s later at each call."""

    ticks = 0

    @classmethod
    def now(cls, tz: object = None) -> SteppingClock:  # type: ignore[override]
        cls.ticks += 1
        moment = START + timedelta(seconds=1.25 * cls.ticks)
        return cls.fromtimestamp(moment.timestamp(), UTC)


def restart_config(tmp_path: Path, argv: list[str]) -> str:
    path = tmp_path / f"restart-{argv[0]}.toml"
    path.write_text(
        '[predictor]\nurl = "http://127.0.0.1:18999"\ntimeout = 0.5\n'
        f'[actions]\npause_file = "{tmp_path / "paused"}"\n'
        f"[actions.restart]\nargv = {json.dumps(argv)}\nverify_health = false\n"
    )
    return str(path)


def write_audit_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log the screens show, written by the real CLI under the stepping clock."""
    import market_agent.actions.runner as runner
    import market_agent.audit.log as audit_log

    monkeypatch.setattr(audit_log, "datetime", SteppingClock)
    ids = iter(["9b07c4a3e1f24d6b8a5c2e7f0d13a958", VERIFIED + "7a90b4c3d2e1f0a9b8c7d6e5f4"])
    monkeypatch.setattr(runner, "new_id", lambda: next(ids), raising=False)
    log = str(tmp_path / "audit.jsonl")
    monkeypatch.chdir(ROOT)  # the sources are recorded as given: relative, machine-free
    for name in ("predictor-down", "high-latency", "api-v2-alerts"):
        assert run_cli("--audit-log", log, "analyze", f"examples/alerts/{name}.json").exit_code == 0
    failed = run_cli(
        "--config", restart_config(tmp_path, ["false"]), "--audit-log", log,
        "restart", "--yes", "--reason", "stuck after the 09:00 deploy",
    )  # fmt: skip
    verified = run_cli(
        "--config", restart_config(tmp_path, ["true"]), "--audit-log", log,
        "restart", "--yes", "--reason", "second try",
    )  # fmt: skip
    assert (failed.exit_code, verified.exit_code) == (7, 0), failed.stderr + verified.stderr
    shutil.copyfile(log, AUDIT_LOG)


@pytest.fixture(scope="module")
def audit_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.environ.get("UPDATE_SCREENS") == "log":
        with pytest.MonkeyPatch.context() as monkeypatch:
            write_audit_log(tmp_path_factory.mktemp("log"), monkeypatch)
    yield AUDIT_LOG


def screen(audit_log: Path, args: list[str], columns: int = 80, **env: str) -> Screen:
    return run_in_terminal(
        ["--audit-log", str(audit_log), *args],
        columns=columns,
        env={"TZ": "UTC", **env},
        cwd=ROOT,
    )


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_screens(audit_log: Path, name: str) -> None:
    shown = screen(audit_log, GOLDEN[name])
    assert shown.exit_status == 0, shown.text
    assert_screen(name, shown.text)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_readme_shows_the_golden_screens(name: str) -> None:
    command = " ".join(["market-agent", *GOLDEN[name]])
    assert_readme_copy(name, f"$ {command}\n{(SCREENS / name).read_text()}")


@pytest.mark.parametrize("columns", [80, 100, 120])
def test_one_line_per_record_and_no_word_split(audit_log: Path, columns: int) -> None:
    shown = screen(audit_log, ["history"], columns)
    records = AUDIT_LOG.read_text().count("\n")
    assert shown.lines[1] == "2026-11-17"  # the day, then its records
    assert len(shown.lines) == records + 2  # the header and the day, one line per record
    assert all(len(line) <= columns for line in shown.lines)
    names = set(re.findall(r'"alertname":"(\w+)"', AUDIT_LOG.read_text()))
    for line in shown.lines[1:]:
        for word in re.findall(r"\b(?:Predictor|Postgres)\w*…?", line):
            assert word in names or word.endswith("…"), line  # whole, or visibly cut


def test_the_summary_gets_the_spare_width(audit_log: Path) -> None:
    narrow = screen(audit_log, ["history"], 80).lines
    wide = screen(audit_log, ["history"], 120).lines
    start = narrow[0].index("summary")
    widest = max(len(line) - wide[0].index("summary") for line in wide[1:])
    assert widest > max(len(line) - start for line in narrow[1:]) + 30
    assert any("PredictorHighLatency" in line for line in wide)


def test_piped_output_is_tab_separated_without_padding(audit_log: Path) -> None:
    result = run_cli("--audit-log", str(audit_log), "history")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == AUDIT_LOG.read_text().count("\n")
    assert all(line.count("\t") == 5 and line == line.rstrip() for line in lines)
    seq, time, kind, ident, alerts, summary = lines[-1].split("\t")
    assert (seq, time, kind, alerts) == (
        "1",
        "2026-11-17T09:07:01Z",
        "notification",
        "PredictorDown",
    )
    assert len(ident) == 32 and summary == "firing from predictor-down.json"
    assert "…" not in result.stdout


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
