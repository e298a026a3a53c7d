"""Property tests: whatever bytes or odd payloads arrive, `analyze` answers cleanly.

Properties: never a traceback; exit 0 for valid payloads and 2 for invalid ones;
one JSON line per valid notification; errors are one line each; the audit log
always parses and its hash chain verifies afterwards.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market_agent.audit import AuditLog
from market_agent.errors import ExitCode
from tests.cli_helpers import run_cli

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Unicode edge cases: surrogates, RTL, zero-width, NUL-free control chars, emoji.
odd_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=60,
) | st.sampled_from(
    [
        "",
        " ",
        "\u202e",
        "\u200b",
        "🔥" * 10,
        "\uff30\uff52\uff45\uff44\uff24\uff4f\uff57\uff4e"  # fullwidth "PredDown",
        "a" * 5000,
        "$(touch /x)",
    ]
)
label_key = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,20}", fullmatch=True)
labels = st.dictionaries(label_key, odd_text, max_size=6)
timestamp = st.sampled_from(
    ["2026-11-25T10:00:00Z", "0001-01-01T00:00:00Z", "2026-11-25T10:00:00.123456789+02:00"]
)


@st.composite
def alert(draw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "labels": {"alertname": draw(odd_text), **draw(labels)},
        "annotations": draw(labels),
    }
    for key, value in (
        ("status", st.sampled_from(["firing", "resolved"])),
        ("startsAt", timestamp),
        ("endsAt", timestamp),
        ("generatorURL", odd_text),
        ("fingerprint", odd_text),
        ("unexpectedField", st.integers() | odd_text),
    ):
        if draw(st.booleans()):
            body[key] = draw(value)
    return body


@st.composite
def notification(draw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": draw(st.sampled_from(["firing", "resolved"])),
        "alerts": draw(st.lists(alert(), min_size=1, max_size=4)),
    }
    for key, value in (
        ("version", st.just("4")),
        ("groupKey", odd_text),
        ("receiver", odd_text),
        ("truncatedAlerts", st.integers(min_value=0, max_value=10**6)),
        ("commonLabels", labels),
        ("groupLabels", labels),
        ("commonAnnotations", labels),
        ("externalURL", odd_text),
    ):
        if draw(st.booleans()):
            body[key] = draw(value)
    return body


def assert_clean(result: Any) -> None:
    assert "Traceback" not in result.stderr
    assert all(line.startswith("error: ") for line in result.stderr.splitlines())


@FUZZ
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    result = run_cli("--no-audit", "analyze", "--json", "-", stdin=data)
    assert result.exit_code in (ExitCode.OK, ExitCode.USAGE)
    assert_clean(result)


@FUZZ
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | odd_text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(odd_text, children, max_size=4),
    max_leaves=30,
))  # fmt: skip
def test_arbitrary_json_is_analysed_or_refused_in_one_line(value: Any) -> None:
    result = run_cli("--no-audit", "analyze", "--json", "-", stdin=json.dumps(value).encode())
    assert result.exit_code in (ExitCode.OK, ExitCode.USAGE)
    assert_clean(result)
    if result.exit_code == ExitCode.USAGE:
        assert result.stderr.count("\n") == 1


@settings(FUZZ, max_examples=60)
@given(batch=st.lists(notification(), min_size=1, max_size=3))
def test_valid_but_odd_payloads_are_analysed_and_audited(
    tmp_path: Path, monkeypatch: Any, batch: list
) -> None:
    monkeypatch.setenv("MARKET_AGENT_AUDIT__FSYNC", "false")  # the chain, not durability
    log_path = tmp_path / f"audit-{uuid.uuid4().hex}.jsonl"  # one log per example
    stdin = "\n".join(json.dumps(item) for item in batch).encode()
    result = run_cli("--audit-log", str(log_path), "analyze", "--json", "-", stdin=stdin)
    assert result.exit_code == ExitCode.OK, result.stderr
    assert_clean(result)
    rows = result.json_lines()
    assert len(rows) == len(batch)
    for row, sent in zip(rows, batch, strict=True):
        assert row["status"] == sent["status"]
        if sent["status"] == "resolved" and all(
            a.get("status", "firing") == "resolved" for a in sent["alerts"]
        ):
            assert row["proposed_action"] == "none"
    report = AuditLog(log_path).verify()
    assert report.ok and report.records == 2 * len(batch)
    for line in log_path.read_text().splitlines():
        json.loads(line)


def test_duplicate_keys_and_deep_nesting() -> None:
    duplicated = b'{"status": "resolved", "status": "firing", "alerts": [{"labels": {}}]}'
    result = run_cli("--no-audit", "analyze", "--json", "-", stdin=duplicated)
    assert result.exit_code == ExitCode.OK
    assert result.json_lines()[0]["status"] == "firing"  # last one wins, as in JSON parsers
    deep = b'{"status": "firing", "alerts": [{"labels": {}, "x": ' + b"[" * 50_000 + b"]" * 50_000
    deep += b"}]}"
    nested = run_cli("--no-audit", "analyze", "-", stdin=deep)
    assert nested.exit_code == ExitCode.USAGE
    assert_clean(nested)
