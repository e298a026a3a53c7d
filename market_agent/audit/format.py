"""The audit line layout: the one module that knows how a record is written as bytes.

Every record is one line::

    {"hash":"<64 hex>","prev_hash":"<64 hex>",<canonical body without its "{">
    {"hash":"<64 hex>","prev_hash":"<64 hex>","key_id":"<16 hex>",<body>     (keyed)

The body is the record's canonical form (compact JSON, sorted keys, ASCII), and
``hash = sha256(prev_hash + body)`` (HMAC-SHA256 with a key). The fixed-width prefix
puts the hashes and the body at fixed byte offsets, so lines are checked and filtered
from the raw bytes without parsing JSON. Sorted keys make ``ts`` the body's last
top-level key: no key after it holds nested, untrusted text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import orjson

#: The prev_hash of a chain's first record.
GENESIS_HASH = "0" * 64
#: Keys the log itself writes: a record's fields may not use them.
RESERVED_FIELDS = frozenset({"seq", "ts", "kind", "prev_hash", "hash", "key_id"})
#: What precedes a record's top-level time: its last key (see the module docstring).
TS_KEY = b'"ts":"'


def canonical(record: Mapping[str, Any]) -> str:
    """Compact JSON, sorted keys, ASCII only (other characters as ``\\u`` escapes)."""
    try:
        data = orjson.dumps(record, default=str, option=_ORJSON_OPTIONS)
    except TypeError:  # lone surrogates, keys that are not strings, integers beyond 64 bits
        pass
    else:
        # orjson writes other characters as UTF-8 and DEL as is: json.dumps escapes them.
        if data.isascii() and b"\x7f" not in data:
            return data.decode("ascii")
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


#: json.dumps(default=str) turns dates and dataclasses into str(); orjson must too.
_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def chain_hash(prev_hash: str, body: str, key: bytes | None = None) -> str:
    data = (prev_hash + body).encode()
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.digest(key, data, "sha256").hex()


def key_id(key: bytes) -> str:
    """A short, public name for a key (an HMAC of a constant: it reveals nothing)."""
    return hmac.digest(key, b"market-agent audit key id", "sha256").hex()[:16]


HASH_PREFIX = b'{"hash":"'
PREV_PREFIX = b'","prev_hash":"'
#: Byte offsets of the two hashes and of the canonical body in every line.
HASH_AT = len(HASH_PREFIX)
PREV_AT = HASH_AT + 64 + len(PREV_PREFIX)
BODY_AT = PREV_AT + 64 + 2  # after '",'
KEY_PREFIX = b'"key_id":"'
KEY_AT = BODY_AT + len(KEY_PREFIX)
#: Where the body starts in a keyed line (after '"key_id":"<16 hex>",').
KEYED_BODY_AT = KEY_AT + 16 + 2


def format_line(digest: str, prev_hash: str, body: str, key_ident: str | None = None) -> str:
    """The stored line (without its newline) for a canonical `body`."""
    if key_ident is None:
        return f'{{"hash":"{digest}","prev_hash":"{prev_hash}",{body[1:]}'
    return f'{{"hash":"{digest}","prev_hash":"{prev_hash}","key_id":"{key_ident}",{body[1:]}'


def first_key_at(data: bytes, start: int = 0) -> int:
    """Offset in `data` of the body's first key for the line that begins at `start`."""
    keyed = data.startswith(KEY_PREFIX, start + BODY_AT)
    return start + (KEYED_BODY_AT if keyed else BODY_AT)


def raw_ts(data: bytes, start: int = 0, end: int | None = None) -> str | None:
    """The record's top-level `ts`, read from the raw line data[start:end]."""
    end = len(data) if end is None else end
    at = data.rfind(TS_KEY, start, end)
    if at < 0:
        return None
    first = at + len(TS_KEY)
    close = data.find(b'"', first, end)
    return data[first:close].decode("ascii", "replace") if close > first else None


def looks_like_audit_record(head: bytes) -> bool:
    """Whether bytes begin as an audit line does (or as a record torn in its first write)."""
    first = head.split(b"\n", 1)[0]
    if len(first) < BODY_AT and b"\n" not in head:
        return HASH_PREFIX.startswith(first[: len(HASH_PREFIX)]) and (
            len(first) <= len(HASH_PREFIX) or first.startswith(HASH_PREFIX)
        )
    return (
        first.startswith(HASH_PREFIX)
        and first[HASH_AT + 64 : PREV_AT] == PREV_PREFIX
        and first[PREV_AT + 64 : BODY_AT] == b'",'
        and is_hex(first[HASH_AT : HASH_AT + 64])
        and is_hex(first[PREV_AT : PREV_AT + 64])
    )


def is_hex(data: bytes) -> bool:
    return len(data) == 64 and not data.strip(b"0123456789abcdef")


def check_line(
    raw: bytes,
    prev_hash: str | None,
    key: bytes | None = None,
    key_ident: bytes | None = None,
    *,
    start: bool = False,
    oldest: bool = False,
) -> tuple[str | None, str, bool]:
    """(problem or None, this line's hash, whether it is keyed), from the raw bytes.

    `prev_hash` None takes the line's own prev_hash on trust (a part of a file checked
    in parallel: the caller checks the seam). `start`: a file's first line, which may
    begin a new chain; `oldest`: the first line of the oldest file, which may also be
    a rotation record continuing files rotated away.
    """
    if not raw.endswith(b"\n"):
        return "truncated record (no end of line)", "", False
    if (
        not raw.startswith(HASH_PREFIX)
        or raw[HASH_AT + 64 : PREV_AT] != PREV_PREFIX
        or raw[PREV_AT + 64 : BODY_AT] != b'",'
    ):
        return "not an audit record (damaged line)", "", False
    claimed = raw[HASH_AT : HASH_AT + 64].decode("ascii", "replace")
    previous = raw[PREV_AT : PREV_AT + 64].decode("ascii", "replace")
    keyed = raw[BODY_AT:KEY_AT] == KEY_PREFIX and raw[KEY_AT + 16 : KEYED_BODY_AT] == b'",'
    body = b"{" + raw[(KEYED_BODY_AT if keyed else BODY_AT) : -1]
    linked = (
        prev_hash is None
        or previous == prev_hash
        or (start and previous == GENESIS_HASH)
        or (oldest and body.startswith(ROTATION_BODY_START))
    )
    if not linked:
        if oldest:
            return (
                "the first record does not start the chain (records removed before it)",
                "",
                False,
            )
        return "prev_hash does not match the previous record (deleted or inserted)", claimed, keyed
    if keyed and key is not None:
        if raw[KEY_AT : KEY_AT + 16] != key_ident:
            return "written with another key (audit.key_file differs)", claimed, keyed
        expected = hmac.digest(key, previous.encode() + body, "sha256").hex()
        if not hmac.compare_digest(expected, claimed):
            return "hash mismatch (the record was edited or forged)", claimed, keyed
    elif not keyed and hashlib.sha256(previous.encode() + body).hexdigest() != claimed:
        return "hash mismatch (the record was edited)", claimed, keyed
    return None, claimed, keyed


#: Canonical bodies have sorted keys: a rotation record's start with these bytes.
ROTATION_BODY_START = b'{"kind":"rotation",'
