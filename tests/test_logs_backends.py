"""`[logs]` settings and the file, docker and kubernetes backends.

docker and kubectl are argv-recording stand-ins on PATH (scripts that write their
argv to a file and print canned, runtime-timestamped output), as a real daemon or
cluster is not available here.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from market_agent.errors import ConfigError
from market_agent.logs.base import LogQuery, LogSourceError
from market_agent.logs.factory import build_log_source
from market_agent.logs.file import FileLogSource
from market_agent.settings import Settings, load_settings

NOW = datetime.now(UTC).replace(microsecond=0)


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def settings_from(tmp_path: Path, body: str) -> Settings:
    config = tmp_path / "market-agent.toml"
    config.write_text(body)
    return load_settings(config)


# -------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('backend = "file"', "backend 'file' needs `logs.path`"),
        ('backend = "docker"\ncontainer = "--privileged"', "key 'logs.container'"),
        ('backend = "kubernetes"', "needs `logs.deployment`"),
        ('backend = "loki"\nurl = "http://l:3100"', "needs `logs.query`"),
        ('backend = "loki"\nurl = "ftp://l"\nquery = "{a=\\"b\\"}"', "key 'logs.url'"),
        ('backend = "syslog"', "key 'logs.backend'"),
        ('backend = "file"\npath = "/x"\nwindow_before = "soon"', "key 'logs.window_before'"),
        ('backend = "file"\npath = "/x"\nfollow = true', "unknown key 'logs.follow'"),
        ('backend = "journald"', "needs `logs.unit`"),
    ],
)
def test_bad_logs_settings_name_the_key(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"market-agent\.toml: ") as caught:
        settings_from(tmp_path, f"[logs]\n{body}\n")
    assert message in str(caught.value)


def test_no_logs_section_means_no_source(tmp_path: Path) -> None:
    assert build_log_source(settings_from(tmp_path, "")) is None
    settings = settings_from(
        tmp_path, '[logs]\nbackend = "file"\npath = "/x.log"\nwindow_before = "10m"\n'
    )
    assert settings.logs is not None and settings.logs.window_before == 600
    assert build_log_source(settings).name == "file"  # type: ignore[union-attr]


# -------------------------------------------------------------------- file


def write_log(path: Path, start: datetime, count: int, step: float = 1.0) -> None:
    with path.open("w") as handle:
        for i in range(count):
            moment = start + timedelta(seconds=i * step)
            handle.write(f"{stamp(moment)} INFO app: tick {i}\n")


def test_file_reads_the_window_and_follows_the_rotated_file(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    write_log(tmp_path / "app.log.1", NOW - timedelta(minutes=20), 600)  # 20..10 min ago
    write_log(log, NOW - timedelta(minutes=10), 600)  # 10 min ago .. now
    source = FileLogSource(log, max_bytes=1 << 20)
    lines = source.read(LogQuery(since=NOW - timedelta(minutes=15)), timeout=5)
    assert lines[0].timestamp == NOW - timedelta(minutes=15)
    assert lines[-1].message.endswith("tick 599")
    assert len(lines) == 900  # 300 from the rotated file, 600 from the current one
    recent = source.read(LogQuery(since=NOW - timedelta(minutes=5)), timeout=5)
    assert len(recent) == 300


def test_file_reads_at_most_max_bytes_from_the_end(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    write_log(log, NOW - timedelta(hours=10), 36_000)  # ~1.5 MB, all inside the window
    lines = FileLogSource(log, max_bytes=64 * 1024).read(
        LogQuery(since=NOW - timedelta(days=1)), timeout=5
    )
    assert 1000 < len(lines) <= 64 * 1024 // len(f"{stamp(NOW)} INFO app: tick 35999\n")
    assert lines[-1].message.endswith("tick 35999")  # the newest lines, whole


def test_file_json_lines(tmp_path: Path) -> None:
    log = tmp_path / "app.jsonl"
    records = [
        {"time": stamp(NOW - timedelta(seconds=5)), "level": "warning", "message": "slow"},
        {"time": stamp(NOW), "levelname": "ERROR", "msg": "feed down"},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    lines = FileLogSource(log, format="json", max_bytes=4096).read(
        LogQuery(since=NOW - timedelta(minutes=1)), timeout=5
    )
    assert [(line.level, line.message) for line in lines] == [
        ("warning", "slow"),
        ("error", "feed down"),
    ]


def test_missing_file_is_a_not_found_failure(tmp_path: Path) -> None:
    with pytest.raises(LogSourceError, match="no log file") as caught:
        FileLogSource(tmp_path / "nope.log", max_bytes=4096).read(LogQuery(since=NOW), timeout=5)
    assert caught.value.kind == "not_found"


# -------------------------------------------------------------------- docker, kubectl

# The readers run with a minimal environment: the stand-in reads its script from a file.
STAND_IN = """#!{python}
import json, pathlib, sys
here = pathlib.Path(__file__).parent
with open(here / "argv.jsonl", "a") as record:
    record.write(json.dumps(sys.argv) + "\\n")
plan = json.loads((here / "plan.json").read_text())
sys.stdout.write(plan.get("stdout", ""))
sys.stderr.write(plan.get("stderr", ""))
sys.exit(plan.get("exit", 0))
"""


class StandIns:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.plan(stdout="")

    def plan(self, **what: object) -> None:
        (self.bin_dir / "plan.json").write_text(json.dumps(what))

    def argv(self) -> list[list[str]]:
        return [json.loads(line) for line in (self.bin_dir / "argv.jsonl").read_text().splitlines()]


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIns:
    """`docker` and `kubectl` on PATH that record their argv and print a planned output."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("docker", "kubectl"):
        script = bin_dir / name
        script.write_text(STAND_IN.format(python=sys.executable))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return StandIns(bin_dir)


def runtime_output(lines: list[str]) -> str:
    """Lines as `docker logs --timestamps` prints them: RFC 3339 nanoseconds first."""
    moment = NOW - timedelta(seconds=30)
    return "".join(f"{moment.strftime('%Y-%m-%dT%H:%M:%S')}.123456789Z {line}\n" for line in lines)


def test_docker_backend_argv_and_output(
    tmp_path: Path, stand_ins: StandIns, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = [
        "ERROR predictor: prediction failed",
        "Traceback (most recent call last):",
        '  File "app.py", line 1, in predict',
        "MemoryError: no room",
    ]
    stand_ins.plan(stderr=runtime_output(app))  # the app logs to stderr
    settings = settings_from(tmp_path, '[logs]\nbackend = "docker"\ncontainer = "predictor"\n')
    source = build_log_source(settings)
    assert source is not None
    since = NOW - timedelta(minutes=10)
    lines = source.read(LogQuery(since=since, limit=200), timeout=10)
    (argv,) = stand_ins.argv()
    assert argv[1:] == [
        "logs",
        "--timestamps",
        f"--since={since.isoformat().replace('+00:00', 'Z')}",
        "--tail=200",
        "--",
        "predictor",
    ]
    (record,) = lines
    assert record.level == "error" and record.message.endswith("MemoryError: no room")


def test_kubectl_backend_argv(
    tmp_path: Path, stand_ins: StandIns, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_ins.plan(stdout=runtime_output(["WARNING feed slow", "INFO ok"]))
    settings = settings_from(
        tmp_path,
        '[logs]\nbackend = "kubernetes"\ndeployment = "predictor"\nnamespace = "prod"\n'
        'context = "cluster-a"\nmax_bytes = 65536\n',
    )
    source = build_log_source(settings)
    assert source is not None
    since = NOW - timedelta(minutes=10)
    lines = source.read(LogQuery(since=since, limit=100), timeout=10)
    (argv,) = stand_ins.argv()
    assert argv[1:] == [
        "--context=cluster-a",
        "logs",
        "deploy/predictor",
        "--namespace=prod",
        "--all-containers=true",
        "--timestamps=true",
        f"--since-time={since.isoformat().replace('+00:00', 'Z')}",
        "--tail=100",
        "--limit-bytes=65536",
    ]
    assert [line.level for line in lines] == ["warning", "info"]


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("Error response from daemon: No such container: predictor", "not_found"),
        ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock", "unreachable"),
        ("permission denied while trying to connect", "permission"),
    ],
)
def test_a_failing_reader_is_a_typed_failure(
    tmp_path: Path, stand_ins: StandIns, monkeypatch: pytest.MonkeyPatch, stderr: str, kind: str
) -> None:
    stand_ins.plan(stderr=stderr + "\n", exit=1)
    source = build_log_source(
        settings_from(tmp_path, '[logs]\nbackend = "docker"\ncontainer = "predictor"\n')
    )
    assert source is not None
    with pytest.raises(LogSourceError) as caught:
        source.read(LogQuery(since=NOW), timeout=10)
    assert caught.value.kind == kind
    assert "exited 1" in str(caught.value)


def test_a_missing_reader_binary_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker here
    source = build_log_source(
        settings_from(tmp_path, '[logs]\nbackend = "docker"\ncontainer = "predictor"\n')
    )
    assert source is not None
    with pytest.raises(LogSourceError) as caught:
        source.read(LogQuery(since=NOW), timeout=10)
    assert caught.value.kind == "not_found"


def test_a_hung_reader_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    source = build_log_source(
        settings_from(tmp_path, '[logs]\nbackend = "docker"\ncontainer = "predictor"\n')
    )
    assert source is not None
    with pytest.raises(LogSourceError) as caught:
        source.read(LogQuery(since=NOW), timeout=0.5)
    assert caught.value.kind == "timeout"
