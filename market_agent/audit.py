"""The append-only, hash-chained JSON Lines audit log.

Every record is one line of JSON::

    {"hash":"<64 hex>","prev_hash":"<64 hex>","kind":...,"seq":...,"ts":...,...}

The part after the two hashes is the record's canonical form (compact JSON, sorted
keys), and ``hash = sha256(prev_hash + canonical)``. The fixed-width prefix lets
`verify` check the chain from the raw bytes, without parsing JSON. Appends take an exclusive
``flock`` on the file, write all their lines with one ``write`` and fsync before
returning, so they are safe across processes and durable once acknowledged.
The file is created with mode 0600: it holds alert data.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from market_agent.errors import AuditError
from market_agent.redact import may_hold_secrets, redact_payload

GENESIS_HASH = "0" * 64
RESERVED_FIELDS = frozenset({"seq", "ts", "kind", "prev_hash", "hash"})
_TAIL_CHUNK = 64 * 1024


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


@dataclass(frozen=True, slots=True)
class Prepared:
    """A record redacted and serialised ahead of `append_many`, which adds seq and ts.

    The costly part of an append, done by `prepare` in the caller's thread rather than
    while the file is locked (or in a group-commit writer thread).
    """

    kind: str
    #: The redacted fields, as the record returned by `append_many` holds them.
    fields: dict[str, Any]
    #: The canonical body around the values of "seq" and "ts" (in this order, as sorted).
    parts: tuple[str, str, str]


def prepare(kind: str, fields: Mapping[str, Any]) -> Prepared:
    """Redact `fields` and serialise the record they make (refusing reserved fields)."""
    clash = RESERVED_FIELDS.intersection(fields)
    if clash:
        raise ValueError(f"audit fields {sorted(clash)} are reserved")
    copy = dict(fields)
    redacted = redact_payload(copy) if may_hold_secrets(copy) else copy
    body = canonical({"seq": _SEQ_MARK, "ts": _TS_MARK, "kind": kind, **redacted})
    head, _, rest = body.partition(f'"{_SEQ_MARK}"')
    middle, _, tail = rest.partition(f'"{_TS_MARK}"')
    return Prepared(kind, redacted, (head, middle, tail))


#: Stand-ins for seq and ts in a prepared body: random, so no field value can hold them.
_SEQ_MARK = f"seq-{os.urandom(16).hex()}"
_TS_MARK = f"ts-{os.urandom(16).hex()}"


def chain_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


_HASH_PREFIX = b'{"hash":"'
_PREV_PREFIX = b'","prev_hash":"'
#: Byte offsets of the two hashes and of the canonical body in every line.
_HASH_AT = len(_HASH_PREFIX)
_PREV_AT = _HASH_AT + 64 + len(_PREV_PREFIX)
_BODY_AT = _PREV_AT + 64 + 2  # after '",'


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    records: int
    #: 1-based line number of the first bad line, when not ok.
    line: int | None = None
    problem: str | None = None


class AuditLog:
    """One audit log file. Build once per invocation and pass it down."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        #: The file's identity and size after this object's last append, and its last
        #: (seq, hash): while the file still matches, its tail need not be read again.
        self._tail: tuple[tuple[int, ...], int, str] | None = None

    # Writing -----------------------------------------------------------------

    def check_writable(self) -> None:
        """Fail early, before any work is done that could not be recorded."""
        try:
            os.close(self._open_for_append())
        except OSError as exc:
            raise AuditError(self._describe(exc, "cannot open")) from None

    def append(self, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        return self.append_many([(kind, fields)])[0]

    def append_many(
        self, entries: Sequence[tuple[str, Mapping[str, Any]] | Prepared]
    ) -> list[dict[str, Any]]:
        """Append records atomically (one write, one fsync) and return them."""
        prepared = [e if isinstance(e, Prepared) else prepare(*e) for e in entries]
        if not prepared:
            return []
        try:
            fd = self._open_for_append()
        except OSError as exc:
            raise AuditError(self._describe(exc, "cannot open")) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            seq, prev_hash = self._tail_state(fd)
            records, lines = [], []
            for entry in prepared:
                seq += 1
                record, line = self._build(seq, entry, prev_hash)
                prev_hash = record["hash"]
                records.append(record)
                lines.append(line)
            self._tail = None
            self._write_durably(fd, ("\n".join(lines) + "\n").encode())
            self._tail = (_identity(os.fstat(fd)), seq, prev_hash)
        except OSError as exc:
            raise AuditError(self._describe(exc, "cannot write")) from None
        finally:
            os.close(fd)  # closing releases the lock
        return records

    def _write_durably(self, fd: int, data: bytes) -> None:
        """All of `data` on disk, or none of it: a failed batch was never acknowledged,
        so no line of it may stay behind (ENOSPC mid-write, a failed fsync)."""
        size = os.fstat(fd).st_size
        try:
            self._write_all(fd, data)
            if self.fsync:
                os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise

    def _open_for_append(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, flags, 0o600)
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        return fd

    @staticmethod
    def _build(seq: int, entry: Prepared, prev_hash: str) -> tuple[dict[str, Any], str]:
        ts = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        head, middle, tail = entry.parts
        body = f'{head}{seq}{middle}"{ts}"{tail}'  # = canonical(record)
        digest = chain_hash(prev_hash, body)
        line = f'{{"hash":"{digest}","prev_hash":"{prev_hash}",{body[1:]}'
        header = {"hash": digest, "prev_hash": prev_hash, "seq": seq, "ts": ts, "kind": entry.kind}
        return {**header, **entry.fields}, line

    def _tail_state(self, fd: int) -> tuple[int, str]:
        """(seq, hash) of the last complete record; cuts off a torn, unacknowledged tail."""
        stat = os.fstat(fd)
        if self._tail is not None and self._tail[0] == _identity(stat):
            return self._tail[1], self._tail[2]  # nobody appended since this object did
        size = stat.st_size
        if size == 0:
            return 0, GENESIS_HASH
        tail = _read_tail(fd, size)
        if not tail.endswith(b"\n"):
            cut = size - len(tail) + tail.rfind(b"\n") + 1
            os.ftruncate(fd, cut)
            size, tail = cut, tail[: tail.rfind(b"\n") + 1]
            if size == 0:
                return 0, GENESIS_HASH
        last_line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            last = json.loads(last_line)
            return int(last["seq"]), str(last["hash"])
        except (ValueError, KeyError, TypeError):
            raise AuditError(
                f"audit log {self.path}: the last record is damaged; "
                "run `market-agent history verify` and move the file aside"
            ) from None

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def _describe(self, exc: OSError, what: str) -> str:
        reason = exc.strerror or str(exc)
        return f"audit log {self.path}: {what}: {reason} (use --audit-log PATH or --no-audit)"

    # Reading -----------------------------------------------------------------

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, oldest first; a torn last line is skipped."""
        for _, record in self._lines():
            if record is not None:
                yield record

    def _lines(self) -> Iterator[tuple[int, dict[str, Any] | None]]:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise AuditError(self._describe(exc, "cannot read")) from None
        with handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    yield number, json.loads(raw)
                except ValueError:
                    yield number, None

    def verify(self) -> VerifyReport:
        """Check the whole hash chain; name the first bad line."""
        prev_hash, count = GENESIS_HASH, 0
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return VerifyReport(ok=True, records=0)
        except OSError as exc:
            raise AuditError(self._describe(exc, "cannot read")) from None
        with handle:
            for number, raw in enumerate(handle, start=1):
                problem, digest = _check_line(raw, prev_hash)
                if problem is not None:
                    return VerifyReport(ok=False, records=count, line=number, problem=problem)
                prev_hash, count = digest, count + 1
        return VerifyReport(ok=True, records=count)


def _check_line(raw: bytes, prev_hash: str) -> tuple[str | None, str]:
    """(problem or None, this line's hash), from the raw bytes alone."""
    if not raw.endswith(b"\n"):
        return "truncated record (no end of line)", ""
    if (
        not raw.startswith(_HASH_PREFIX)
        or raw[_HASH_AT + 64 : _PREV_AT] != _PREV_PREFIX
        or raw[_PREV_AT + 64 : _BODY_AT] != b'",'
    ):
        return "not an audit record (damaged line)", ""
    claimed = raw[_HASH_AT : _HASH_AT + 64].decode("ascii", "replace")
    previous = raw[_PREV_AT : _PREV_AT + 64].decode("ascii", "replace")
    if previous != prev_hash:
        return "prev_hash does not match the previous record (deleted or inserted)", claimed
    body = b"{" + raw[_BODY_AT:-1]
    if hashlib.sha256(prev_hash.encode() + body).hexdigest() != claimed:
        return "hash mismatch (the record was edited)", claimed
    return None, claimed


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _read_tail(fd: int, size: int) -> bytes:
    """Enough of the end of the file to hold its last complete line."""
    chunk = min(size, _TAIL_CHUNK)
    while True:
        data = os.pread(fd, chunk, size - chunk)
        if data.count(b"\n") >= 2 or chunk == size:
            return data
        chunk = min(size, chunk * 4)
