"""The log summary, pinned for a fixed, varied input: speed-ups must change nothing.

`tests/golden/logs-*.json` were written by the code before the parse and summary fast
paths (issue 14's figures); regenerate them only for an intended change of output:

    python tests/test_logs_pinned.py --write
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from market_agent.logs.base import LogLine, LogQuery
from market_agent.logs.file import FileLogSource
from market_agent.logs.journald import entry_line
from market_agent.logs.parse import (
    _CONTINUATION,
    _LEVEL_BRACKET,
    _LEVEL_KV,
    _LEVEL_WORD,
    keep,
    level_name,
    merge_records,
    plain_line,
    plain_records,
    split_timestamp,
)
from market_agent.logs.summary import normalise, summarize

GOLDEN = Path(__file__).resolve().parent / "golden"
T0 = datetime(2026, 12, 3, 13, 0, tzinfo=UTC)
SINCE, UNTIL = T0 + timedelta(minutes=5), T0 + timedelta(minutes=55)

#: Messages with every kind of variable part the normaliser knows, and odd shapes.
TEMPLATES: tuple[str, ...] = (
    "INFO predictor: prediction ok for symbol='{sym}' in {dur}s",
    "INFO predictor: prediction ok for symbol='MSFT' in 0.031s",
    "WARNING predictor: slow model: {ms} ms for {sym} (request {uuid})",
    "WARN feed: retrying feed.vendor.example:{port} after {ms}ms",
    "ERROR feed: connection to feed.vendor.example:{port} refused ({ip}:{port})",
    'level=error msg="disk full on /var/lib/predictor" free={n} at {hms}',
    "[crit] certificate verify failed for https://api.example:443 id {hex}",
    "[error] upstream [fe80::{hexs}:1]:{port} timed out; object at 0x{hexs}",
    "DEBUG cache hit {hex} key {hexs}{n} for {sym!r}",
    "Killed process {pid} (python3) total-vm:{n}kB, anon-rss:{n}kB",
    "NOTICE starting predictor 1.4.{d} pid {pid}",
    'predictor: user="bob{d}" logged in from {ip} password=hunter2hunter{d}',
    "FATAL: out of memory while building features at {iso}",
    "CRITICAL model: weights checksum {hex} != {hex}",
    "predictor: plain text without a level, {n} items, ünïcödé {d}",
    "INFO predictor: {long}",
    "Error: a level word that is not a level, then WARNING later {n}",
    "(ERROR) parenthesised level {n}|and|pipes",
)
TRACEBACK = (
    "ERROR predictor: prediction failed for symbol='{sym}'",
    "Traceback (most recent call last):",
    '  File "/srv/predictor/app.py", line {n}, in _predict',
    "    build_feature_matrix(symbol)",
    "MemoryError: unable to allocate {dur} GiB for the feature matrix of '{sym}'",
)
STAMPS: tuple[Callable[[datetime], str], ...] = (
    lambda t: t.isoformat(timespec="milliseconds").replace("+00:00", "Z") + " ",
    lambda t: t.strftime("%Y-%m-%d %H:%M:%S,") + f"{t.microsecond // 1000:03d}+0000 ",
    lambda t: t.isoformat() + " ",
    lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}123Z ",
    lambda t: t.astimezone(_plus_two()).isoformat(timespec="seconds") + "\t",
)


def _plus_two() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=2))


def _fill(template: str, rng: random.Random, moment: datetime) -> str:
    hexs = f"{rng.getrandbits(24):x}"
    return template.format(
        sym=rng.choice(["AAPL", "MSFT", "GOOG", "TSLA"]),
        dur=f"{rng.random() * 3:.3f}",
        ms=rng.randint(1, 9000),
        uuid=f"{rng.getrandbits(32):08x}-1111-2222-3333-{rng.getrandbits(48):012x}",
        port=rng.choice([443, 8080, 5432, 65000]),
        ip=".".join(str(rng.randint(0, 255)) for _ in range(4)),
        n=rng.randint(0, 10**6),
        d=rng.randint(0, 9),
        pid=rng.randint(100, 99999),
        hms=moment.strftime("%H:%M:%S"),
        iso=moment.isoformat(),
        hex=f"{rng.getrandbits(40):x}a1",
        hexs=hexs,
        long="x" * rng.randint(100, 3000) + " end",
    )


def varied_log(seed: int = 14, records: int = 3000) -> list[str]:
    """Log lines over one hour from T0: plain records with five timestamp styles,
    tracebacks (some uncaught, without a time), blank and continuation-looking lines."""
    rng = random.Random(seed)
    lines: list[str] = []
    for index in range(records):
        moment = T0 + timedelta(seconds=3600 * index / records, microseconds=rng.randint(0, 999))
        stamp = rng.choice(STAMPS)(moment)
        roll = rng.random()
        if roll < 0.08:
            body = [_fill(part, rng, moment) for part in TRACEBACK]
            lines += [stamp + body[0], *body[1:]]
        elif roll < 0.1:
            lines += [_fill(part, rng, moment) for part in TRACEBACK[1:]]
        elif roll < 0.12:
            lines += ["", "   ", "ValueError  ", "  indented continuation"]
        else:
            lines.append(stamp + _fill(rng.choice(TEMPLATES), rng, moment))
    return lines


def file_summary(tmp_path: Path, lines: list[str], fmt: str, limit: int) -> dict[str, Any]:
    log = tmp_path / "predictor.log"
    log.write_text("\n".join(lines) + "\n")
    query = LogQuery(since=SINCE, until=UNTIL, limit=limit)
    source = FileLogSource(log, format=fmt, max_bytes=64 * 1024 * 1024)
    read = source.read(query, timeout=30)
    return summarize(read, source="file", start=SINCE, end=UNTIL, limit=limit)


def json_lines(lines: list[str]) -> list[str]:
    """The same records as JSON lines (python-json-logger style), plain lines between."""
    out = []
    for index, line in enumerate(lines):
        parsed = plain_line(line)
        if parsed.timestamp is None or index % 7 == 0:
            out.append(line)
            continue
        stamp: Any = parsed.timestamp.isoformat()
        if index % 5 == 0:
            stamp = parsed.timestamp.timestamp() * 1000
        record = {"ts": stamp, "level": parsed.level.upper(), "msg": parsed.message}
        if index % 3 == 0:
            record = {"time": stamp, "severity": str(index % 8), "message": parsed.message}
        out.append(json.dumps(record))
    return out


def journal_summary(lines: list[str]) -> dict[str, Any]:
    """The same records as journald entries (stdout at priority 6, the binary form for
    some), merged as the journald backend merges them."""
    entries = []
    for index, line in enumerate(lines):
        parsed = plain_line(line)
        moment = parsed.timestamp or T0 + timedelta(seconds=index)
        message: Any = parsed.message
        if index % 11 == 0:
            message = list(message.encode())
        micros = int(moment.timestamp() * 1_000_000)
        entries.append(
            {"MESSAGE": message, "PRIORITY": str(index % 8), "__REALTIME_TIMESTAMP": micros}
        )
    records = keep(merge_records((entry_line(e) for e in entries), own_time=False), _query(5000))
    return summarize(records, source="journald", start=SINCE, end=UNTIL, limit=5000)


def _query(limit: int) -> LogQuery:
    return LogQuery(since=SINCE, until=UNTIL, limit=limit)


def normalised_corpus(lines: list[str]) -> list[str]:
    return [normalise(line) for line in lines]


def cases(tmp_path: Path) -> dict[str, Any]:
    lines = varied_log()
    return {
        "file-plain": file_summary(tmp_path, lines, "plain", 5000),
        "file-plain-limited": file_summary(tmp_path, lines, "plain", 400),
        "file-json": file_summary(tmp_path, json_lines(lines), "json", 5000),
        "journald": journal_summary(lines),
        "normalised": normalised_corpus(lines[:800]),
        "parsed": [_line_json(plain_line(line)) for line in lines[:600] if line.strip()],
    }


def _line_json(line: LogLine) -> list[Any]:
    return [line.timestamp.isoformat() if line.timestamp else None, line.level, line.message]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return json.loads(json.dumps(cases(tmp_path_factory.mktemp("pinned"))))


@pytest.mark.parametrize(
    "name",
    ["file-plain", "file-plain-limited", "file-json", "journald", "normalised", "parsed"],
)
def test_output_matches_the_pinned_summary(outputs: dict[str, Any], name: str) -> None:
    expected = json.loads((GOLDEN / f"logs-{name}.json").read_text())
    assert outputs[name] == expected


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for case, value in cases(Path(tmp)).items():
            text = json.dumps(value, indent=1, ensure_ascii=False) + "\n"
            (GOLDEN / f"logs-{case}.json").write_text(text)


# The straightforward versions the fast paths replaced, kept as references.
_REFERENCE_PLACEHOLDERS = tuple(
    (re.compile(pattern, flags), placeholder)
    for pattern, flags, placeholder in (
        (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I, "<uuid>"),
        (r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?", 0, "<time>"),
        (r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b", 0, "<time>"),
        (r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b", 0, "<ip>"),
        (r"\[[0-9a-f:]*:[0-9a-f:]+\](?::\d{1,5})?", re.I, "<ip>"),
        (r"(?<=[A-Za-z0-9]):\d{2,5}\b", 0, ":<port>"),
        (r"\b0x[0-9a-f]+\b", re.I, "<hex>"),
        (r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{6,}\b", re.I, "<hex>"),
        (r"'[^'\n]{0,200}'|\"[^\"\n]{0,200}\"", 0, "<str>"),
        (r"(?<![A-Za-z0-9_<])\d+(?:\.\d+)?", 0, "<n>"),
    )
)


def reference_normalise(text: str) -> str:
    for pattern, placeholder in _REFERENCE_PLACEHOLDERS:
        text = pattern.sub(placeholder, text)
    return " ".join(text.split())


def reference_plain_line(text: str) -> LogLine:
    if _CONTINUATION.match(text):
        return LogLine(None, "unknown", text.rstrip())
    moment, rest = split_timestamp(text)
    head = rest[:160]
    level = None
    for pattern in (_LEVEL_WORD, _LEVEL_KV, _LEVEL_BRACKET):
        match = pattern.search(head)
        if match and (level := level_name(match.group(1))):
            break
    return LogLine(moment, level or "unknown", rest.rstrip())


PIECES = (
    *"0123456789abcdefABCDEFxXgzG_-:.,[]'\" \t<>/=()Zt+T|",
    *("٣", "é", "²", "0x", "::", "\n", "2026-12-03T13:00:00", "2026-12-03 13:00:00,5+02:00"),
    *("10.0.0.1", "13:47:38", ":8080", "deadbeef", "1111-2222", "INFO", "ERROR", "WARN "),
    *("level=warn", "[crit]", "Traceback (most recent call last):", "ValueError", "Error:"),
)


def random_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(PIECES, k=rng.randint(0, 30))) for _ in range(count)]


def test_normalise_equals_the_reference_on_random_text() -> None:
    texts = random_texts(1, 20_000) + varied_log(seed=2, records=2000)
    assert [normalise.__wrapped__(t) for t in texts] == [reference_normalise(t) for t in texts]


def test_plain_lines_and_records_equal_the_reference_on_random_text() -> None:
    texts = [t.replace("\n", " ") for t in random_texts(3, 20_000)]
    texts = [("2026-12-03T13:00:00Z " + t if i % 3 == 0 else t) for i, t in enumerate(texts)]
    texts += varied_log(seed=4, records=2000)
    reference = [reference_plain_line(t) for t in texts]
    assert [plain_line(t) for t in texts] == reference
    assert list(plain_records(texts)) == list(merge_records(reference))
