"""Hostile webhook bodies (issue 10), shared by the tests and `bench/hostile_inputs.py`.

Each is built from the example notification with a distinct fingerprint, so that an
accepted one is never a duplicate of another.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any, NamedTuple

EXAMPLE_PATH = Path(__file__).resolve().parents[1] / "examples" / "alerts" / "predictor-down.json"
EXAMPLE: dict[str, Any] = json.loads(EXAMPLE_PATH.read_text())
#: The documented nesting limit (README, "listen").
DEPTH_LIMIT = 64


class Hostile(NamedTuple):
    name: str
    body: bytes
    #: The expected answer: its status code and, for a refusal, its reason.
    status: int
    reason: str | None


def example(fingerprint: str, **extra: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(EXAMPLE))
    body["alerts"][0]["fingerprint"] = fingerprint
    body.update(extra)
    return body


def valid_body(fingerprint: str) -> bytes:
    return json.dumps(example(fingerprint)).encode()


def with_label(fingerprint: str, key: str, value: str) -> bytes:
    body = example(fingerprint)
    body["alerts"][0]["labels"][key] = value
    return json.dumps(body).encode()  # ensure_ascii: a lone surrogate as "\ud800"


def deep_extra(fingerprint: str, depth: int) -> bytes:
    """A whole body `depth` levels deep: the top object holds an extra field of depth - 1."""
    body = json.dumps(example(fingerprint, extra="DEEP")).encode()
    return body.replace(b'"DEEP"', b"[" * (depth - 1) + b"1" + b"]" * (depth - 1))


def hostile_inputs() -> list[Hostile]:
    limit = DEPTH_LIMIT
    cesu = with_label("h-cesu", "note", "SURROGATE").replace(b"SURROGATE", b"\xed\xa0\x80")
    bom_bigint = codecs.BOM_UTF8 + json.dumps(example("h-bom", big=2**70)).encode()
    control = "\x00\x1b[31m\r\nfake log line\x7f"
    bad_json, invalid = (400, "bad_json"), (422, "invalid")
    accepted = (200, None)
    rows = [
        ("lone surrogate in a label value", with_label("h-sv", "x", "\ud800"), bad_json),
        ("lone surrogate in the alertname", with_label("h-sa", "alertname", "a\udfff"), bad_json),
        ("lone surrogate in a label key", with_label("h-sk", "\udc00k", "v"), bad_json),
        ("surrogate encoded as UTF-8 bytes", cesu, bad_json),
        (f"nesting {limit} deep (at the limit)", deep_extra("h-d64", limit), accepted),
        (f"nesting {limit + 1} deep", deep_extra("h-d65", limit + 1), invalid),
        ("nesting 300 deep", deep_extra("h-d300", 300), invalid),
        ("nesting 1,000 deep", deep_extra("h-d1000", 1000), invalid),
        ("nesting 20,000 deep", deep_extra("h-d20000", 20_000), invalid),
        ("100 KB alertname", with_label("h-huge", "alertname", "A" * 100_000), accepted),
        ("control characters in labels", with_label("h-ctl", "x", control), accepted),
        ("BOM and a 70-bit integer", bom_bigint, accepted),
        ("NaN in an extra field", json.dumps(example("h-nan", x=float("nan"))).encode(), accepted),
    ]
    return [Hostile(name, body, *answer) for name, body, answer in rows]
