"""What an on-call engineer sees: `analyze` and `status` in a real terminal at 80 and 120
columns, piped output, colour choices, and the golden screens the README shows.

Golden screens (tests/screens/*.txt, 80 columns) are compared line for line, and
with their README copies (tests/golden.py); regenerate both with
`UPDATE_SCREENS=1 python -m pytest tests/test_screens_analyze.py`.
Ages on screen are relative to now, so the example alerts are copied with their
`startsAt` moved to a fixed distance before now (12 min 20 s for the newest), and
TZ=UTC; the only part normalised is the status time of check and its duration.
`status` runs against stand-in Prometheus and Alertmanager servers on 127.0.0.2
(ports 9090 and 9093, so the URLs on screen do not change between runs).
"""

from __future__ import annotations

import fcntl
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.golden import SCREENS, assert_readme_copy, assert_screen
from tests.terminal import ROOT
from tests.user_runs import BOX, conversation, panel_lines, piped, terminal

if TYPE_CHECKING:
    from ptyprocess import PtyProcess

EXAMPLES = ROOT / "examples" / "alerts"
#: The newest example alert started this long before the command runs.
NEWEST_ALERT_AGE = timedelta(minutes=12, seconds=20)
WIDTHS = [80, 120]


# Running commands ---------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh user: HOME with the XDG defaults under it, where the commands run."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return home


def recent_copy(name: str, directory: Path, newest: timedelta = NEWEST_ALERT_AGE) -> Path:
    """`examples/alerts/NAME` in `directory`, every time moved so its newest alert
    started `newest` ago (the alerts keep their spacing)."""
    data = json.loads((EXAMPLES / name).read_text())
    alerts = data if isinstance(data, list) else data["alerts"]
    starts = [_time(alert["startsAt"]) for alert in alerts]
    shift = datetime.now(UTC) - newest - max(starts)
    for alert in alerts:
        for key in ("startsAt", "endsAt", "updatedAt"):
            if key in alert and not alert[key].startswith("0001"):
                alert[key] = (_time(alert[key]) + shift).isoformat().replace("+00:00", "Z")
    path = directory / name
    path.write_text(json.dumps(data, indent=2))
    return path


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def many_alerts(directory: Path, count: int) -> Path:
    """predictor-down.json with `count` alerts, one per instance."""
    base = json.loads(recent_copy("predictor-down.json", directory).read_text())
    template = base["alerts"][0]
    base["alerts"] = [
        {
            **template,
            "labels": {**template["labels"], "instance": f"10.0.{n // 250}.{n % 250}:8000"},
            "fingerprint": f"{n:016x}",
        }
        for n in range(count)
    ]
    path = directory / f"{count}-alerts.json"
    path.write_text(json.dumps(base))
    return path


# Stand-in monitoring servers ----------------------------------------------------

SILENCE_ID = "0f1a7c2e-5b3d-4e8a-9c61-2d4b8e7f3a90"


def _ago(delta: timedelta) -> str:
    return (datetime.now(UTC) - delta).isoformat().replace("+00:00", "Z")


def alertmanager_routes() -> dict[str, Any]:
    labels = {"job": "market-predictor", "service": "market-predictor"}
    down = {
        "labels": {**labels, "alertname": "PredictorDown", "severity": "critical"},
        "annotations": {"summary": "Market Predictor 127.0.0.1:8000 is down"},
        "startsAt": _ago(timedelta(minutes=3, seconds=20)),
        "fingerprint": "67c2635bf40631ca",
        "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
    }
    stale = {
        "labels": {**labels, "alertname": "PredictorStaleMarketData", "severity": "warning"},
        "annotations": {"summary": "Market data on 127.0.0.1:8000 is 12m 22s old"},
        "startsAt": _ago(timedelta(hours=1, minutes=4, seconds=20)),
        "fingerprint": "5d0c2b7a9e31f468",
        "status": {"state": "suppressed", "silencedBy": [SILENCE_ID], "inhibitedBy": []},
    }
    silence = {
        "id": SILENCE_ID,
        "status": {"state": "active"},
        "matchers": [{"name": "alertname", "value": "PredictorStaleMarketData", "isRegex": False}],
        "createdBy": "oncall",
        "comment": "feed vendor maintenance",
        "startsAt": _ago(timedelta(hours=1)),
        "endsAt": _ago(-timedelta(hours=2, seconds=30)),
    }
    return {
        "/api/v2/status": {"versionInfo": {"version": "0.27.0"}},
        "/api/v2/alerts": [down, stale],
        "/api/v2/silences": [silence],
    }


def prometheus_routes() -> dict[str, Any]:
    target = {
        "labels": {"job": "market-predictor", "instance": "127.0.0.1:8000"},
        "scrapePool": "market-predictor",
        "scrapeUrl": "http://127.0.0.1:8000/metrics",
        "health": "down",
        "lastError": "connection refused",
        "lastScrape": _ago(timedelta(seconds=4)),
    }
    empty = {"resultType": "vector", "result": []}
    return {
        "/-/ready": "Prometheus Server is Ready.",
        "/api/v1/targets": {"status": "success", "data": {"activeTargets": [target]}},
        "/api/v1/alerts": {"status": "success", "data": {"alerts": []}},
        "/api/v1/query": {"status": "success", "data": empty},
    }


def serve(address: tuple[str, int], routes: Callable[[], dict[str, Any]]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes().get(self.path.split("?")[0])
            text = body if isinstance(body, str) else json.dumps(body)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(address, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def monitoring(home: Path) -> Iterator[Path]:
    """Prometheus and Alertmanager stand-ins; the predictor refuses connections.
    Yields the user's config file (at the XDG default path)."""
    host = "127.0.0.2"
    # The ports are fixed: test processes running in parallel (pytest-xdist) take turns.
    with open("/tmp/market-agent-tests-127.0.0.2.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield from _stand_ins(host, home)


def _stand_ins(host: str, home: Path) -> Iterator[Path]:
    with socket.socket() as probe:
        if probe.connect_ex((host, 8000)) == 0:
            pytest.skip(f"something listens on {host}:8000")
    try:
        servers = [serve((host, 9090), prometheus_routes), serve((host, 9093), alertmanager_routes)]
    except OSError as exc:
        pytest.skip(f"cannot bind the stand-ins on {host}: {exc}")
    config = home / ".config" / "market-agent" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'[predictor]\nurl = "http://{host}:8000"\n'
        f'[prometheus]\nurl = "http://{host}:9090"\n'
        f'[alertmanager]\nurl = "http://{host}:9093"\n'
    )
    yield config
    for server in servers:
        server.shutdown()
        server.server_close()


# Golden screens -----------------------------------------------------------------

GOLDEN = {
    "analyze-predictor-down": ["analyze", "predictor-down.json"],
    "analyze-api-v2-alerts": ["analyze", "api-v2-alerts.json"],
    "status-predictor-down": ["status"],
}


def golden_screen(name: str, home: Path) -> str:
    args = GOLDEN[name]
    if args[0] == "analyze":
        recent_copy(args[1], home)
    screen = terminal(home, args, 80)
    text = f"$ market-agent {' '.join(args)}\n{screen.text}"
    # The time of the check and how long it took: the only parts that change run to run.
    return re.sub(r"checked \d\d:\d\d:\d\d · \d+ ms", "checked 14:03:12 · 251 ms", text)


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_screens(name: str, home: Path, request: pytest.FixtureRequest) -> None:
    if name.startswith("status"):
        request.getfixturevalue("monitoring")
    assert_screen(f"{name}.txt", golden_screen(name, home))


@pytest.mark.parametrize("name", GOLDEN)
def test_the_readme_shows_the_golden_screens(name: str) -> None:
    assert_readme_copy(f"{name}.txt", (SCREENS / f"{name}.txt").read_text())


# analyze on a terminal ----------------------------------------------------------


@pytest.mark.parametrize("columns", WIDTHS)
def test_what_to_do_steps_wrap_under_their_own_text(home: Path, columns: int) -> None:
    path = recent_copy("api-v2-alerts.json", home)
    screen = terminal(home, ["--no-audit", "analyze", "--no-llm", path.name], columns)
    lines = panel_lines(screen)
    start = lines.index("What to do:")
    steps = lines[start + 1 : lines.index("", start)]
    assert steps[0].startswith("  1. Follow the runbook:")
    for line in steps:
        assert re.match(r"  \d\. \S", line) or line.startswith("     "), line
    assert any("https://runbooks.example.com/market-predictor/" in line for line in steps)


@pytest.mark.parametrize("columns", WIDTHS)
def test_nothing_is_cut_off_or_split_mid_word(home: Path, columns: int) -> None:
    path = recent_copy("api-v2-alerts.json", home)
    screen = terminal(home, ["--no-audit", "analyze", "--no-llm", path.name], columns)
    expected = piped(home, ["--no-audit", "analyze", "--json", "--no-llm", path.name]).stdout
    analysis = json.loads(expected)
    words_on_screen = {word for line in panel_lines(screen) for word in line.split()}
    texts = [analysis["description"], *analysis["recommended_actions"], analysis["source"]]
    for alert in analysis["alerts"]:
        texts += [alert["alertname"], alert["summary"], *alert["silenced_by"]]
    missing = {word for text in texts for word in text.split()} - words_on_screen
    assert not missing, screen.text
    assert "…" not in screen.text


@pytest.mark.parametrize("columns", WIDTHS)
def test_alert_state_and_age_are_shown(home: Path, columns: int) -> None:
    path = recent_copy("api-v2-alerts.json", home)
    screen = terminal(home, ["--no-audit", "analyze", "--no-llm", path.name], columns)
    text = " ".join(" ".join(panel_lines(screen)).split())
    assert "firing for 15 min" in text  # PredictorHighErrorRate: 3 min before the newest
    assert "suppressed · started 23 min ago · silenced by" in text
    assert "2026-" not in text and "T09:" not in text  # no raw UTC timestamps


@pytest.mark.parametrize("columns", WIDTHS)
def test_the_llm_fallback_reason_is_shown_in_full(home: Path, columns: int) -> None:
    config = home / "llm.toml"
    config.write_text("[llm]\nenabled = true\n")
    path = recent_copy("predictor-down.json", home)
    screen = terminal(home, ["--no-audit", "--config", config.name, "analyze", path.name], columns)
    reason = "LLM enabled but no API key (set $OPENAI_API_KEY or llm.base_url)"
    panel = " ".join(" ".join(panel_lines(screen)).split())
    assert f"LLM not used: {reason}" in panel
    # stderr shares the terminal: the note follows the panel, once.
    assert screen.text.count("warning: LLM not used") == 1


def test_the_fallback_note_is_once_per_run_on_stderr(home: Path) -> None:
    config = home / "llm.toml"
    config.write_text("[llm]\nenabled = true\n")
    files = [recent_copy(name, home).name for name in ("predictor-down.json", "resolved.json")]
    result = piped(home, ["--no-audit", "--config", config.name, "analyze", "--json", *files])
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "warning: LLM not used, the rules answered 2 of 2 notifications: "
        "LLM enabled but no API key (set $OPENAI_API_KEY or llm.base_url)\n"
    )
    assert len(result.stdout.splitlines()) == 2


def test_a_huge_notification_lists_ten_alerts_on_a_terminal(home: Path) -> None:
    path = many_alerts(home, 2_000)
    screen = terminal(home, ["--no-audit", "analyze", "--no-llm", path.name], 80)
    assert len(screen.lines) < 60, screen.text  # 2,000 alerts: 4,000 lines before the cap
    assert "… and 1,990 more (--json lists every alert)" in screen.text
    assert sum("PredictorDown" in line and "●" in line for line in screen.lines) == 10
    complete = piped(home, ["--no-audit", "analyze", "--json", "--no-llm", path.name])
    assert len(json.loads(complete.stdout)["alerts"]) == 2_000
    plain = piped(home, ["--no-audit", "analyze", "--no-llm", path.name])
    listed = [
        line for line in plain.stdout.splitlines() if re.match(r"PredictorDown +critical", line)
    ]
    assert len(listed) == 2_000


# Piped output and colour --------------------------------------------------------


def test_piped_analyze_is_plain_text(home: Path) -> None:
    path = recent_copy("api-v2-alerts.json", home)
    result = piped(home, ["--no-audit", "analyze", "--no-llm", path.name])
    lines = result.stdout.splitlines()
    assert not BOX & set(result.stdout)
    assert "\x1b" not in result.stdout
    assert all(line == line.rstrip() for line in lines)
    assert lines[0] == "CRITICAL · errors · firing"
    assert any(
        re.fullmatch(r"PredictorHighErrorRate +critical +firing +20\d\d-\S+Z Market .*", line)
        for line in lines
    )
    assert "  1. Follow the runbook: https://runbooks.example.com/" in result.stdout


def test_piped_status_is_plain_text(home: Path, monitoring: Path) -> None:
    result = piped(home, ["status"])
    assert result.returncode == 1
    assert not BOX & set(result.stdout)
    assert "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    assert all(line == line.rstrip() for line in lines), result.stdout
    assert re.match(r"market-agent status: UNHEALTHY   checked 20\d\d-\S+Z · \d+ ms", lines[0])
    agent = next(line for line in lines if line.startswith("agent "))
    assert str(home / ".local" / "state" / "market-agent" / "audit.jsonl") in agent


def _coloured(raw: bytes) -> bool:
    return re.search(rb"\x1b\[[0-9;]*(3[0-7]|4[0-7]|38;|48;)[0-9;]*m", raw) is not None


@pytest.mark.parametrize(
    ("args", "env", "colour"),
    [
        ([], {}, True),
        (["--no-color"], {}, False),
        ([], {"NO_COLOR": "1"}, False),
        (["--color"], {"NO_COLOR": "1"}, True),
    ],
    ids=["auto", "--no-color", "NO_COLOR", "--color-beats-NO_COLOR"],
)
def test_colour_on_a_terminal(home: Path, args: list[str], env: dict[str, str], colour: bool):
    path = recent_copy("predictor-down.json", home)
    screen = terminal(home, ["--no-audit", *args, "analyze", "--no-llm", path.name], 80, **env)
    assert _coloured(screen.raw) is colour
    assert "PredictorDown" in screen.text


def test_color_forces_colour_into_a_pipe_without_box_drawing(home: Path) -> None:
    path = recent_copy("predictor-down.json", home)
    result = piped(home, ["--no-audit", "--color", "analyze", "--no-llm", path.name])
    assert _coloured(result.stdout.encode())
    assert not BOX & set(result.stdout)


# status on a terminal -----------------------------------------------------------


@pytest.mark.parametrize("columns", WIDTHS)
def test_status_alerts_are_columns_and_wrap_under_themselves(
    home: Path, monitoring: Path, columns: int
) -> None:
    screen = terminal(home, ["status"], columns)
    lines = screen.lines
    start = lines.index("Alerts")
    alerts = lines[start + 1 : lines.index("", start)]
    rows = [line for line in alerts if "●" in line]
    assert len(rows) == 2
    # Severity, state and summary start at the same column in every row.
    for first, second in [
        ("critical", "warning"),
        ("active", "suppressed"),
        (" Market", " Market"),
    ]:
        assert rows[0].index(first) == rows[1].index(second), alerts
    summary_at = rows[0].index(" Market") + 1
    continuation = [line for line in alerts if "●" not in line]
    assert continuation, alerts
    assert all(len(line) - len(line.lstrip()) == summary_at for line in continuation), alerts
    assert "for 3 min" in screen.text and "silenced by" in screen.text
    problems = lines[lines.index("Problems") + 1 :]
    for line in problems:
        assert line.startswith("  - ") or line.startswith("    "), problems


# Untrusted text ------------------------------------------------------------------

HOSTILE = "evil \x1b[31mRED\x1b[0m \x1b]0;retitled\x07 \x1b[2J cleared\rback"


def test_escape_sequences_in_alert_text_never_reach_the_terminal(home: Path) -> None:
    data = json.loads(recent_copy("predictor-down.json", home).read_text())
    data["alerts"][0]["annotations"]["summary"] = HOSTILE
    data["alerts"][0]["labels"]["alertname"] = "Predictor\x1b[5mDown"
    (home / "hostile.json").write_text(json.dumps(data))
    args = ["--no-audit", "analyze", "--no-llm", "hostile.json"]
    screen = terminal(home, args, 120)
    for sequence in (b"\x1b[31mRED", b"\x1b]0;", b"\x1b[2J", b"\x1b[5m", b"\x07"):
        assert sequence not in screen.raw
    assert "evil \\x1b[31mRED\\x1b[0m \\x1b]0;retitled\\x07 \\x1b[2J cleared back" in screen.text
    plain = piped(home, args).stdout
    assert "\x1b" not in plain and "\r" not in plain and "Predictor\\x1b[5mDown" in plain


# status --watch -----------------------------------------------------------------


def test_watch_redraws_in_place(home: Path) -> None:
    """Each refresh replaces the last one: after three, one report is on the screen."""
    config = home / "refused.toml"
    config.write_text(
        "".join(f'[{name}]\nurl = "http://127.0.0.1:1"\n' for name in SERVICES_OF_STATUS)
    )
    args = ["--config", str(config), "status", "--watch", "0.5"]
    screen = conversation(
        home, args, 80, wait_for=b"market-agent status:", times=3, then=interrupt, rows=40
    )
    assert sum("market-agent status:" in line for line in screen.lines) == 1, screen.lines


def interrupt(process: PtyProcess) -> None:
    process.sendintr()


SERVICES_OF_STATUS = ("predictor", "prometheus", "alertmanager")
