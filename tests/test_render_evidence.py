"""The `Evidence:` block of the `analyze` panel, as a person sees it in a real terminal
(80 columns, TZ=UTC) and piped: what the logs showed, how often, first to last seen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.terminal import ROOT, Screen, run_in_terminal

NOW = datetime.now(UTC).replace(microsecond=0)
OUT_OF_MEMORY = [
    "{t} ERROR predictor: prediction failed for symbol='AAPL'",
    "Traceback (most recent call last):",
    '  File "app.py", line 336, in _predict',
    "MemoryError: unable to allocate 2.3 GiB for the feature matrix of 'AAPL'",
]
OTHER_TROUBLE = [
    "{t} INFO predictor: starting market predictor 1.4.2 on 127.0.0.1:8000",
    "{t} ERROR feed: connect to feed.vendor.example:443 failed: connection refused",
    "{t} ERROR storage: [Errno 28] No space left on device: '/var/lib/predictor/cache'",
    "{t} ERROR feed: certificate verify failed: certificate has expired",
]


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clock(moment: datetime) -> str:
    """How the panel shows a time in TZ=UTC (`render.local_text`)."""
    same_day = moment.date() == datetime.now(UTC).date()
    return moment.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, list[datetime]]:
    """An agent config with `[logs]` on a log file, and a PredictorHighErrorRate alert."""
    times = [NOW - timedelta(seconds=90 - 10 * i) for i in range(5)]
    log = tmp_path / "predictor.log"
    with log.open("w") as handle:
        for moment in times:
            lines = OUT_OF_MEMORY + OTHER_TROUBLE
            handle.writelines(line.format(t=stamp(moment)) + "\n" for line in lines)
    config = tmp_path / "agent.toml"
    config.write_text(
        '[predictor]\nurl = "http://127.0.0.1:9"\n[prometheus]\nurl = "http://127.0.0.1:9"\n'
        f'[logs]\nbackend = "file"\npath = "{log}"\n'
    )
    alert = json.loads((ROOT / "examples" / "alerts" / "high-error-rate.json").read_text())
    for item in alert["alerts"]:
        item["startsAt"] = stamp(NOW - timedelta(minutes=2))
    alert_file = tmp_path / "alert.json"
    alert_file.write_text(json.dumps(alert))
    return config, alert_file, times


def analyze_args(config: Path, alert: Path) -> list[str]:
    return ["--config", str(config), "analyze", "--no-llm", "--context", str(alert)]


def env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path), "TZ": "UTC", "MARKET_AGENT_AUDIT__ENABLED": "false"}


def block(lines: list[str]) -> list[str]:
    """The lines from `Evidence:` to the blank line after it."""
    start = next(i for i, line in enumerate(lines) if line.strip(" │") == "Evidence:")
    end = next(i for i in range(start, len(lines)) if not lines[i].strip(" │"))
    return lines[start:end]


def test_the_panel_lists_a_few_items_with_hanging_indents(setup, tmp_path: Path) -> None:
    config, alert, times = setup
    screen: Screen = run_in_terminal(
        analyze_args(config, alert), columns=80, env=env(tmp_path), cwd=tmp_path
    )
    assert screen.exit_status == 0, screen.text
    lines = [line.strip("│")[1:].rstrip() for line in screen.lines]  # inside the panel
    evidence = block(lines)
    items = [i for i, line in enumerate(evidence) if line.startswith("  - ")]
    assert len(items) == 3, screen.text  # a few on a terminal, the count of the rest
    assert evidence[-1].strip() == "… and 2 more (--json lists all)"
    first = " ".join(line.strip() for line in evidence[items[0] : items[1]])
    assert first.startswith("- logs: out of memory: 5 log lines like ")
    seen = f"(5 times, {clock(times[0])}\N{EN DASH}{clock(times[-1])})"
    assert first.endswith(seen), first
    wrapped = evidence[items[0] + 1 : items[1]]
    assert wrapped and all(line.startswith("    ") and line[4] != " " for line in wrapped)
    assert all(len(line) <= 77 for line in evidence)


def test_piped_output_lists_every_item_one_a_line(setup, tmp_path: Path) -> None:
    config, alert, times = setup
    result = subprocess.run(
        [sys.executable, "-m", "market_agent", *analyze_args(config, alert)],
        capture_output=True,
        text=True,
        env={**os.environ, **env(tmp_path), "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    evidence = block(result.stdout.splitlines())
    assert len(evidence) == 6 and all(line.startswith("  - logs: ") for line in evidence[1:])
    assert evidence[1].endswith(f"(5 times, {clock(times[0])}\N{EN DASH}{clock(times[-1])})")
