"""Log lines into a bounded, redacted summary: levels, signatures, tracebacks, examples."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from market_agent.logs.base import LEVELS, LogLine, LogQuery
from market_agent.logs.parse import detect_level, json_line, keep, merge_records, plain_line
from market_agent.logs.summary import (
    MAX_EXAMPLE_CHARS,
    MAX_FREQUENT,
    MAX_PROMPT_CHARS,
    MAX_SIGNATURES,
    normalise,
    signature,
    summarize,
)

T0 = datetime(2026, 12, 3, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("request 8f3a9c12-1111-2222-3333-444455556666 failed", "request <uuid> failed"),
        ("upstream 10.0.0.1:8080 timed out after 5.0s", "upstream <ip> timed out after <n>s"),
        (
            "connect to feed.vendor.example:443 refused",
            "connect to feed.vendor.example:<port> refused",
        ),
        ("object at 0x7f3a2b and id deadbeef01", "object at <hex> and id <hex>"),
        ("symbol='AAPL' user=\"bob\"", "symbol=<str> user=<str>"),
        ("Killed process 4242 (python3) at 13:47:38", "Killed process <n> (python3) at <time>"),
    ],
)
def test_normalise_replaces_variable_parts(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_a_traceback_is_one_record_whose_signature_names_its_exception() -> None:
    text = [
        "2026-12-03T13:00:01.000Z ERROR predictor: prediction failed for symbol='AAPL'",
        "Traceback (most recent call last):",
        '  File "app.py", line 3, in predict',
        "    build()",
        "MemoryError: unable to allocate 2.3 GiB",
        "2026-12-03T13:00:02.000Z INFO predictor: next",
    ]
    records = list(merge_records(plain_line(line) for line in text))
    assert [r.level for r in records] == ["error", "info"]
    assert records[0].message.endswith("MemoryError: unable to allocate 2.3 GiB")
    assert signature(records[0].message) == (
        "predictor: prediction failed for symbol=<str> ... MemoryError: unable to allocate <n> GiB"
    )


def test_an_uncaught_traceback_without_a_record_is_an_error() -> None:
    lines = ["Traceback (most recent call last):", '  File "x", line 1', "ValueError: boom"]
    (record,) = merge_records(plain_line(line) for line in lines)
    assert record.level == "error"


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("2026-12-03 13:00:00,123 WARNING x: y", "warning"),
        ('time=2026 level=error msg="boom"', "error"),
        ("[crit] disk gone", "critical"),
        ("FATAL: out of memory", "critical"),
        ("nothing here mentions an Error class", None),
    ],
)
def test_level_detection(line: str, level: str | None) -> None:
    assert detect_level(line) == level


def test_json_lines_give_time_level_and_message() -> None:
    raw = json.dumps(
        {"ts": "2026-12-03T13:00:00.5Z", "level": "ERROR", "msg": "feed down", "exc_info": "E"}
    )
    line = json_line(raw)
    assert line == LogLine(T0 + timedelta(milliseconds=500), "error", "feed down\nE")
    assert json_line("not json at all").message == "not json at all"


def test_keep_applies_window_filters_and_keeps_the_newest() -> None:
    lines = [LogLine(T0 + timedelta(seconds=i), "info", f"line {i}") for i in range(10)]
    lines[7] = LogLine(lines[7].timestamp, "error", "Feed DOWN")
    query = LogQuery(since=T0 + timedelta(seconds=2), limit=3)
    assert [line.message for line in keep(lines, query)] == ["Feed DOWN", "line 8", "line 9"]
    errors = LogQuery(since=T0, level="error", contains="feed down")
    assert [line.message for line in keep(lines, errors)] == ["Feed DOWN"]


def test_summary_counts_groups_and_dates_signatures() -> None:
    lines = [
        LogLine(T0 + timedelta(seconds=i), "error", f"connection refused by feed.example:443 #{i}")
        for i in range(5)
    ]
    lines += [LogLine(T0 + timedelta(seconds=9), "info", "starting predictor 1.4.2")] * 3
    summary = summarize(lines, source="file", start=T0, end=T0 + timedelta(minutes=1), limit=100)
    assert summary["levels"] == {"error": 5, "info": 3}
    (top,) = summary["signatures"]
    assert top["signature"] == "connection refused by feed.example:<port> #<n>"
    assert (top["count"], top["first_seen"], top["last_seen"]) == (
        5,
        "2026-12-03T13:00:00Z",
        "2026-12-03T13:00:04Z",
    )
    assert summary["frequent"][0]["count"] == 3
    assert summary["lines"] == 8 and summary["limit_reached"] is False


def test_examples_are_the_newest_distinct_lines_and_keep_a_tracebacks_exception() -> None:
    body = "\n".join(f'  File "app.py", line {i}, in f' for i in range(40))
    record = f"ERROR failed\nTraceback (most recent call last):\n{body}\nMemoryError: no room"
    lines = [LogLine(T0, "error", record)] * 5 + [LogLine(T0, "info", "tick 1")]
    summary = summarize(lines, source="file", start=T0, end=T0, limit=100)
    assert len(summary["examples"]) == 2
    assert summary["examples"][0].endswith(" [...] MemoryError: no room")
    assert len(summary["examples"][0]) <= MAX_EXAMPLE_CHARS


def test_summary_is_redacted_and_bounded() -> None:
    secret = "password=hunter2hunter2"
    lines = [LogLine(T0, "error", f"kind{i} login failed {secret} {'x' * 5000}") for i in range(50)]
    summary = summarize(lines, source="file", start=T0, end=T0, limit=50)
    text = json.dumps(summary)
    assert "hunter2" not in text
    assert len(summary["signatures"]) == MAX_SIGNATURES
    assert all(len(s["example"]) <= MAX_EXAMPLE_CHARS for s in summary["signatures"])
    assert len(text) < 20_000
    assert summary["limit_reached"] is True


def test_colour_codes_go_and_control_characters_are_replaced() -> None:
    line = LogLine(T0, "error", "\x1b[31mERROR\x1b[0m feed down\x07\x00 now")
    summary = summarize([line], source="file", start=T0, end=T0, limit=10)
    assert summary["examples"] == ["ERROR feed down\ufffd\ufffd now"]
    assert "\x1b" not in json.dumps(summary) and "\\u00" not in json.dumps(summary)


@pytest.mark.parametrize("filler", ["\\", '"', "\x01", "\U0001f525", "é"])
def test_the_summary_in_the_prompt_is_bounded_whatever_the_lines(filler: str) -> None:
    lines = [
        LogLine(
            T0 + timedelta(seconds=i % 600),
            LEVELS[i % 100 % 6],
            f"k{i % 100} {filler * 3000}\nE{i % 100}",
        )
        for i in range(5000)
    ]
    summary = summarize(lines, source="file", start=T0, end=T0, limit=5000)
    as_in_prompt = json.dumps(summary, indent=1, ensure_ascii=False)  # prompting.py's form
    assert len(as_in_prompt) <= MAX_PROMPT_CHARS
    assert len(summary["signatures"]) + len(summary["frequent"]) == MAX_SIGNATURES + MAX_FREQUENT
