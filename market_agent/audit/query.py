"""Reading the audit log back: newest first, filtered, in constant memory.

The log may rotate: ``audit.jsonl`` is the newest file, then ``audit.jsonl.1``,
``audit.jsonl.2``, ... (oldest last). Files are read in fixed-size blocks (in reverse
for listings); `bytes.find` over a whole block picks the candidate lines (those
holding the kind or alert name asked for) before any JSON is parsed, so memory stays
constant and the other lines cost almost nothing. `--json` output is the stored line
itself, in the log's own schema. Whole-file passes (`verify`, `stats`) split large
files into one part per core and check the seams between parts.

Times and hashes are read from the raw line at the places `audit.format` defines.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import orjson

from market_agent.audit.format import (
    BODY_AT,
    GENESIS_HASH,
    HASH_AT,
    HASH_PREFIX,
    PREV_AT,
    check_line,
    key_id,
    raw_ts,
)
from market_agent.errors import AuditError, InputError
from market_agent.settings import parse_duration

BLOCK_SIZE = 1 << 20
#: Smaller files are read by one process: starting workers would cost more.
PARALLEL_MIN_BYTES = 64 << 20
T = TypeVar("T")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def log_files(path: Path) -> list[Path]:
    """The log and its rotated predecessors, newest first."""
    files = [path] if path.exists() else []
    index = 1
    while True:
        rotated = path.with_name(f"{path.name}.{index}")
        if not rotated.exists():
            return files
        files.append(rotated)
        index += 1


def reverse_lines(
    paths: Iterable[Path], block_size: int = BLOCK_SIZE, needles: Sequence[bytes] = ()
) -> Iterator[bytes]:
    """Every non-empty line (without its newline), newest first, across files.

    With `needles`, only lines containing one of them: found with `bytes.find` over
    whole blocks, so the lines in between cost nothing.
    """
    for path in paths:
        for chunk in _reverse_chunks(path, block_size):
            if needles:
                yield from reversed(lines_in(chunk, needles))
            else:
                yield from (line for line in reversed(chunk.split(b"\n")) if line)


def _reverse_chunks(path: Path, block_size: int) -> Iterator[bytes]:
    """Runs of whole lines, from the end of the file to its start."""
    handle = _open(path)
    if handle is None:
        return
    with handle:
        position = handle.seek(0, 2)
        carry = b""
        while position > 0:
            size = min(block_size, position)
            position -= size
            handle.seek(position)
            data = handle.read(size) + carry
            if position == 0:
                yield data
                return
            cut = data.find(b"\n") + 1  # the first line may have started in an earlier block
            carry = data[:cut] if cut else data
            if cut:
                yield data[cut:]


def _open(path: Path) -> BinaryIO | None:
    """The file for reading, or None when it does not exist (an empty log)."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"audit log {path}: cannot read: {exc.strerror or exc}") from None


def forward_chunks(paths: Iterable[Path], block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Runs of whole lines, oldest first, across files given newest first."""
    for path in reversed(list(paths)):
        yield from range_chunks(path, 0, None, block_size)


def range_chunks(
    path: Path, start: int, end: int | None, block_size: int = BLOCK_SIZE
) -> Iterator[bytes]:
    """Runs of whole lines of bytes [start, end) of one file (`start` at a line start)."""
    handle = _open(path)
    if handle is None:
        return
    with handle:
        handle.seek(start)
        left = None if end is None else end - start
        carry = b""
        while left is None or left > 0:
            block = handle.read(block_size if left is None else min(block_size, left))
            if not block:
                break
            if left is not None:
                left -= len(block)
            data = carry + block
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                yield data[:cut]
        if carry:
            yield carry


def split_ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    """[start, end) byte ranges of about equal size, each starting at a line start."""
    size = path.stat().st_size
    if parts <= 1 or size < PARALLEL_MIN_BYTES:
        return [(0, size)]
    bounds = [0]
    with path.open("rb") as handle:
        for index in range(1, parts):
            handle.seek(size * index // parts)
            handle.readline()  # on to the next line start
            bounds.append(max(bounds[-1], handle.tell()))
    bounds.append(size)
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def map_ranges(function: Callable[..., T], path: Path, *extra: Any) -> list[T]:
    """`function(path, start, end, index, *extra)` over `split_ranges`, in processes
    (one per core) when the file is large enough for it to pay."""
    ranges = split_ranges(path, _cores())
    calls = [(path, a, b, i, *extra) for i, (a, b) in enumerate(ranges)]
    if len(calls) == 1:
        return [function(*calls[0])]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(len(calls), mp_context=context) as pool:
        return list(pool.map(function, *zip(*calls, strict=True)))


def _cores() -> int:
    try:
        return min(len(os.sched_getaffinity(0)), 4)
    except AttributeError:  # pragma: no cover - not Linux
        return 1


def lines_in(chunk: bytes, needles: Sequence[bytes]) -> list[bytes]:
    """The lines of `chunk` containing any of `needles`, in order, each once."""
    starts: set[int] = set()
    for needle in needles:
        at = chunk.find(needle)
        while at >= 0:
            start = chunk.rfind(b"\n", 0, at) + 1
            starts.add(start)
            end = chunk.find(b"\n", at)
            if end < 0:
                break
            at = chunk.find(needle, end)
    found = []
    for start in sorted(starts):
        end = chunk.find(b"\n", start)
        found.append(chunk[start : end if end >= 0 else len(chunk)])
    return found


def parse_time(value: str, *, now: datetime | None = None) -> str:
    """`2h`, `30m`, `7d` (ago), `2026-11-20` or an RFC 3339 time -> an audit `ts` string."""
    text = value.strip()
    now = now or datetime.now(UTC)
    try:
        if _DATE.match(text):
            moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
        elif text[:1].isdigit() and "-" not in text and ":" not in text:
            moment = now - timedelta(seconds=parse_duration(text))
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise InputError(
            f"time {value!r}: expected a duration ago (2h, 30m, 7d), a date (2026-11-20) "
            "or an RFC 3339 time"
        ) from None
    return format_ts(moment)


def epoch(ts: str) -> float:
    """Seconds since the epoch of an audit `ts`."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def format_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def alertnames_of(record: dict[str, Any]) -> list[str]:
    """Alert names a record is about, whatever its kind."""
    names = record.get("alertnames")
    if isinstance(names, list):
        return [n for n in names if isinstance(n, str)]
    alerts = record.get("alerts")
    if isinstance(alerts, list):
        return [a["alertname"] for a in alerts if isinstance(a, dict) and "alertname" in a]
    return []


@dataclass(frozen=True)
class Query:
    """What `history` selects; `since`/`until` are audit `ts` strings."""

    kinds: frozenset[str] = frozenset()
    alert: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int | None = None

    def needles(self) -> tuple[bytes, ...]:
        """Byte strings one of which every matching line contains (none: no such test)."""
        if self.alert is not None:
            return (_json(self.alert),)
        return tuple(b'"kind":' + _json(kind) for kind in sorted(self.kinds))

    def raw_candidate(self, line: bytes) -> bool:
        """A cheap test on the raw bytes; False means the line cannot match."""
        if self.kinds and not any(b'"kind":' + _json(k) in line for k in self.kinds):
            return False
        return self.alert is None or _json(self.alert) in line

    def matches(self, record: dict[str, Any]) -> bool:
        if self.kinds and record.get("kind") not in self.kinds:
            return False
        return self.alert is None or self.alert in alertnames_of(record)


def _json(text: str) -> bytes:
    return json.dumps(text).encode()


def select(paths: Iterable[Path], query: Query) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(raw line, record) of every matching record, newest first."""
    found = 0
    if query.limit is not None and query.limit <= 0:
        return
    for line in reverse_lines(paths, needles=query.needles()):
        if query.since is not None or query.until is not None:
            ts = raw_ts(line)
            if ts is not None and query.since is not None and ts < query.since:
                record = load_record(line)
                if record is not None and str(record.get("ts", "")) < query.since:
                    return  # records are appended in time order: nothing older can match
            if ts is not None and query.until is not None and ts > query.until:
                continue
        if not query.raw_candidate(line):
            continue
        record = load_record(line)
        if record is None or not query.matches(record) or not _in_range(record, query):
            continue
        yield line, record
        found += 1
        if query.limit is not None and found >= query.limit:
            return


def _in_range(record: dict[str, Any], query: Query) -> bool:
    ts = str(record.get("ts", ""))
    if query.since is not None and ts < query.since:
        return False
    return query.until is None or ts <= query.until


def load_record(line: bytes) -> dict[str, Any] | None:
    """One parsed record, or None for a line that is not one (`history verify` names it).

    orjson when it can (several times quicker); the standard library for what orjson
    refuses (lone surrogates) or would read differently: it turns integers beyond 64
    bits into floats, so a line with a run of 20 digits anywhere goes to `json`.
    """
    try:
        if _DIGIT_RUN in line.translate(_DIGITS_AS_ZERO):
            raise orjson.JSONDecodeError("maybe an integer beyond 64 bits", "", 0)
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return None
    return value if isinstance(value, dict) else None


#: Every digit as "0", every other byte as "x": twenty zeros then mark a run of digits
#: (a regex takes ten times as long).
_DIGITS_AS_ZERO = bytes(48 if 48 <= c <= 57 else 120 for c in range(256))
_DIGIT_RUN = b"0" * 20


@dataclass(frozen=True, slots=True)
class Chain:
    """One action and everything linked to it, oldest first."""

    action_id: str
    records: list[tuple[bytes, dict[str, Any]]]


def find_record(
    paths: list[Path], ident: str, kinds: Sequence[str] = ("analysis", "notification")
) -> tuple[bytes, dict[str, Any]] | None:
    """The newest record of one of `kinds` whose `id` starts with `ident` (6+ characters);
    None when there is none; InputError when the prefix names two."""
    if len(ident) < 6:
        return None
    needle = b'"id":"' + ident.encode()
    found: tuple[bytes, dict[str, Any]] | None = None
    for line in reverse_lines(paths, needles=(needle,)):
        record = load_record(line)
        if record is None or record.get("kind") not in kinds:
            continue
        if not str(record.get("id", "")).startswith(ident):
            continue
        if found is not None and found[1].get("id") != record.get("id"):
            raise InputError(f"id {ident!r} is ambiguous: give more characters")
        found = found or (line, record)
    return found


def action_chain(paths: list[Path], action_id: str) -> Chain:
    """The notification, analysis, action steps and escalations of one action.

    `action_id` may be a unique prefix (at least 6 characters).
    """
    if len(action_id) < 6:
        raise InputError(
            f"action id {action_id!r} is too short: give at least 6 characters "
            "(e.g. `market-agent history show 3f2a9c`; `history --kind action` lists the ids)"
        )
    prefix = b'"action_id":"' + action_id.encode()
    full: str | None = None
    steps: list[tuple[bytes, dict[str, Any]]] = []
    wanted: dict[str, str] = {}
    found: dict[str, tuple[bytes, dict[str, Any]]] = {}
    for line in reverse_lines(paths):
        if prefix in line:
            record = load_record(line)
            rid = record.get("action_id") if record else None
            if record is None or not isinstance(rid, str) or not rid.startswith(action_id):
                continue
            if full is not None and rid != full:
                raise InputError(f"action id {action_id!r} is ambiguous: give more characters")
            full = rid
            steps.append((line, record))
            for key, kind in (("analysis_id", "analysis"), ("notification_id", "notification")):
                if isinstance(record.get(key), str):
                    wanted[kind] = record[key]
        elif wanted and b'"id":"' in line:
            _collect_origin(line, wanted, found)
            # A prefix must be read to the end: another action may share it.
            if len(found) == len(wanted) and full == action_id:
                break
    if full is None:
        raise InputError(f"no action {action_id!r} in the audit log")
    origin = [found[k] for k in ("notification", "analysis") if k in found]
    return Chain(full, origin + list(reversed(steps)))


def _collect_origin(
    line: bytes, wanted: dict[str, str], found: dict[str, tuple[bytes, dict[str, Any]]]
) -> None:
    for kind, ident in wanted.items():
        if kind not in found and b'"id":"' + ident.encode() + b'"' in line:
            record = load_record(line)
            if record is not None and record.get("kind") == kind and record.get("id") == ident:
                found[kind] = (line, record)


@dataclass(frozen=True, slots=True)
class FileVerdict:
    path: Path
    ok: bool
    records: int
    line: int | None = None
    problem: str | None = None
    #: Records written with a key (authenticated when `verify_files` was given it).
    keyed: int = 0
    last_hash: str | None = None
    #: A later file whose first record starts a chain of its own (rotated by hand).
    new_chain: bool = False


def verify_files(paths: list[Path], key: bytes | None = None) -> list[FileVerdict]:
    """Check the hash chain through the log and its rotated files, oldest first.

    The chain runs on from file to file (a rotated log's new file starts with a
    `rotation` record linked to the previous file's last); the oldest file may begin
    with a rotation record (older files removed by `audit.keep`); any file may begin a
    new chain at the genesis hash (logs rotated by hand). Stops at the first break.
    """
    verdicts: list[FileVerdict] = []
    prev: str | None = None
    keyed_before = False
    for path in reversed(paths):
        verdict = verify_file(path, prev, key, keyed_before)
        verdicts.append(verdict)
        if not verdict.ok:
            break
        if verdict.records:
            prev = verdict.last_hash
        keyed_before = keyed_before or verdict.keyed > 0
    return verdicts


def verify_file(
    path: Path, prev: str | None = None, key: bytes | None = None, keyed_before: bool = False
) -> FileVerdict:
    """One file's chain, from the raw bytes: checks inlined, parts of a large file in
    parallel, and the seams between parts checked afterwards. `prev`: the last hash of
    the previous file (None: this is the oldest)."""
    try:
        parts = map_ranges(_verify_range, path, prev, key)
    except FileNotFoundError:
        return FileVerdict(path, True, 0, last_hash=prev)
    count = keyed = 0
    last = prev
    for part in parts:
        seam_ok = part.first_prev is None or part.first_prev == last
        if not seam_ok and part.line != 1:
            problem = "prev_hash does not match the previous record (deleted or inserted)"
            return FileVerdict(path, False, count, count + 1, problem, keyed)
        downgrade = _downgrade(part, keyed_before or keyed > 0) if key is not None else None
        if downgrade is not None and (part.problem is None or downgrade < part.line):
            problem = "unkeyed record after keyed ones (forged or downgraded without the key)"
            return FileVerdict(
                path, False, count + downgrade - 1, count + downgrade, problem, keyed
            )
        if part.problem is not None:
            line = count + part.line
            return FileVerdict(path, False, line - 1, line, part.problem, keyed + part.keyed)
        count += part.records
        keyed += part.keyed
        last = part.last_hash or last
    new_chain = prev is not None and count > 0 and parts[0].starts_genesis
    return FileVerdict(path, True, count, keyed=keyed, last_hash=last, new_chain=new_chain)


def _downgrade(part: _Part, keyed_before: bool) -> int | None:
    """The part's first unkeyed record after a keyed one (here or earlier), if any."""
    if keyed_before and part.first_unkeyed is not None:
        return part.first_unkeyed
    return part.downgraded


@dataclass(frozen=True, slots=True)
class _Part:
    records: int
    #: The claimed prev_hash of the part's first line (None for the file's first part).
    first_prev: str | None
    last_hash: str | None
    #: 1-based line number within the part of the first bad line.
    line: int = 0
    problem: str | None = None
    keyed: int = 0
    #: 1-based line numbers within the part of its first unkeyed record, and of its
    #: first unkeyed record after a keyed one.
    first_unkeyed: int | None = None
    downgraded: int | None = None
    #: The file's first record is at the genesis hash (first part only).
    starts_genesis: bool = False


def _verify_range(
    path: Path, start: int, end: int, index: int, expected: str | None, key: bytes | None
) -> _Part:
    hash_end, prev_end = HASH_AT + 64, PREV_AT + 64
    sha256 = hashlib.sha256
    ident = key_id(key).encode() if key is not None else None
    prev: bytes | None = None
    first_prev: str | None = None
    count = keyed = 0
    first_unkeyed: int | None = None
    downgraded: int | None = None
    starts_genesis = False
    for chunk in range_chunks(path, start, end):
        lines = chunk.split(b"\n")
        torn = lines.pop()  # b"" when the chunk ends with a newline
        for line in lines:
            if prev is None:
                if index == 0:  # the file's first line: where the chain may start
                    problem, digest, is_keyed = check_line(
                        line + b"\n",
                        expected or GENESIS_HASH,
                        key,
                        ident,
                        start=True,
                        oldest=expected is None,
                    )
                    if problem is not None:
                        return _Part(0, None, None, 1, problem)
                    starts_genesis = line[PREV_AT:prev_end] == GENESIS_HASH.encode()
                    keyed, first_unkeyed = (1, None) if is_keyed else (0, 1)
                    prev, count = digest.encode(), 1
                    continue
                # A later part: take the seam on trust, checked by the caller.
                prev = line[PREV_AT:prev_end]
                first_prev = prev.decode("ascii", "replace")
            if (
                line[prev_end:BODY_AT] == b'",'
                and line[PREV_AT:prev_end] == prev
                and line.startswith(HASH_PREFIX)
                and sha256(prev + b"{" + line[BODY_AT:]).hexdigest().encode()
                == line[HASH_AT:hash_end]
            ):
                is_keyed = False
            else:
                problem, digest, is_keyed = check_line(
                    line + b"\n", prev.decode("ascii", "replace"), key, ident
                )
                if problem is not None:
                    return _Part(
                        count,
                        first_prev,
                        None,
                        count + 1,
                        problem,
                        keyed,
                        first_unkeyed,
                        downgraded,
                    )
            if is_keyed:
                keyed += 1
            else:
                if first_unkeyed is None:
                    first_unkeyed = count + 1
                if keyed and downgraded is None:
                    downgraded = count + 1
            prev = line[HASH_AT:hash_end]
            count += 1
        if torn:
            problem = "truncated record (no end of line)"
            return _Part(
                count, first_prev, None, count + 1, problem, keyed, first_unkeyed, downgraded
            )
    last = prev.decode("ascii") if prev is not None and count else None
    return _Part(count, first_prev, last, 0, None, keyed, first_unkeyed, downgraded, starts_genesis)


def locate_hash(paths: list[Path], digest: str) -> tuple[Path, int] | None:
    """(file, 1-based line) of the record whose hash is `digest`, oldest file first."""
    needle = b'{"hash":"' + digest.encode("ascii", "replace") + b'"'
    for path in reversed(paths):
        line = 0
        for chunk in range_chunks(path, 0, None):
            at = chunk.find(needle)
            while at > 0 and chunk[at - 1 : at] != b"\n":
                at = chunk.find(needle, at + 1)
            if at >= 0:
                return path, line + chunk.count(b"\n", 0, at) + 1
            line += chunk.count(b"\n")
    return None
