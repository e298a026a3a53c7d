"""`market_agent.render`'s pure parts: ages, times, plain columns, the fallback note.

What the screen shows is tested in a real terminal in tests/test_screens_analyze.py.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from market_agent.render import (
    age,
    columns,
    duration,
    fallback_note,
    local_text,
    on_terminal,
    utc_text,
)

NOW = datetime(2026, 12, 3, 14, 3, 12, 654321, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5, "0 s"),
        (42.9, "42 s"),
        (60, "1 min"),
        (12 * 60 + 59, "12 min"),
        (3 * 3600, "3 h"),
        (3 * 3600 + 5 * 60 + 9, "3 h 5 min"),
        (2 * 86400 + 4 * 3600 + 1, "2 d 4 h"),
        (86400, "1 d"),
    ],
)
def test_duration_is_said_as_a_person_would(seconds: float, expected: str) -> None:
    assert duration(seconds) == expected


def test_age_of_a_datetime_or_an_rfc3339_string() -> None:
    assert age(NOW - timedelta(minutes=12, seconds=20), NOW) == "12 min"
    assert age("2026-12-03T11:00:00Z", NOW) == "3 h 3 min"
    assert age("2026-12-03T11:00:00", NOW) == "3 h 3 min"  # naive means UTC
    assert age(None, NOW) is None
    assert age("not a time", NOW) is None
    assert age(NOW + timedelta(minutes=1), NOW) is None  # clock skew: no negative ages


def test_utc_text_is_rfc3339_to_the_second() -> None:
    assert utc_text(NOW) == "2026-12-03T14:03:12Z"
    assert utc_text("2026-12-03T15:03:12.123456+01:00") == "2026-12-03T14:03:12Z"
    assert utc_text(None) == "-"
    assert utc_text("garbage") == "garbage"
    assert utc_text(1234) == "1234"  # an audit record's `ts` may be anything


def test_local_text_follows_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        assert local_text(NOW, NOW) == "15:03:12"  # today: the time only, no microseconds
        assert local_text(NOW - timedelta(days=3), NOW) == "2026-11-30 15:03"
        assert local_text(NOW - timedelta(days=3), NOW, seconds=True) == "2026-11-30 15:03:12"
    finally:
        monkeypatch.undo()
        time.tzset()


def _plain(renderable: object) -> str:
    out = io.StringIO()
    Console(file=out, width=40, no_color=True).print(renderable, soft_wrap=True)
    return out.getvalue()


def test_plain_columns_align_without_padding_or_wrapping() -> None:
    long = "a summary far longer than the forty columns of this console"
    text = _plain(
        columns([["PredictorDown", "critical", long], ["X", "-", "short"]], terminal=False)
    )
    assert text.splitlines() == [
        f"PredictorDown  critical  {long}",
        "X              -         short",
    ]


def test_fallback_note_once_for_the_run_with_counted_reasons() -> None:
    assert fallback_note([None, None]) is None
    assert fallback_note(["no API key"]) == "LLM not used, the rules answered: no API key"
    assert fallback_note(["timed out", None, "refused", "timed out"]) == (
        "LLM not used, the rules answered 3 of 4 notifications: "
        "timed out (2 notifications); refused (1 notification)"
    )


def test_a_string_buffer_is_not_a_terminal() -> None:
    assert not on_terminal(Console(file=io.StringIO()))


def test_plain_columns_keep_each_cell_style_on_its_own_text() -> None:
    from rich.text import Text

    name = Text("PredictorDown", style="bold")
    rendered = columns([[name, "x"], [Text("A", style="red"), "y  "]], terminal=False, indent=2)
    assert isinstance(rendered, Text)
    assert rendered.plain == "  PredictorDown  x\n  A              y"
    styled = {(rendered.plain[s.start : s.end], str(s.style)) for s in rendered.spans}
    assert styled == {("PredictorDown", "bold"), ("A", "red")}


def test_safe_makes_control_characters_visible_and_inert() -> None:
    from market_agent.render import safe

    assert safe("plain text · ünïcode") == "plain text · ünïcode"
    assert safe("a\tb\nc\rd") == "a b c d"
    assert safe("\x1b[2J\x07\x9b\u202e") == "\\x1b[2J\\x07\\x9b\\u202e"


def test_command_lines_break_between_arguments_and_fold_only_a_too_long_one() -> None:
    import shlex

    from market_agent.render import command_lines, shell_words

    argv = ["/usr/bin/env", "python3", "-c", "open('x', 'a')", "/tmp/" + "d" * 50 + "/ran"]
    command = shlex.join(argv)
    assert shell_words(command) == [shlex.quote(arg) for arg in argv]
    assert command_lines(command, len(command)) == [command]
    lines = command_lines(command, 30)
    assert all(len(line) <= 30 for line in lines)
    assert lines[0] == "/usr/bin/env python3 -c \\"  # broken between arguments
    assert lines[-2:] == ["/tmp/" + "d" * 25, "d" * 25 + "/ran"]  # too long: folded
    rejoined = "".join(line[:-1] if line.endswith(" \\") else line for line in lines)
    assert rejoined == command
