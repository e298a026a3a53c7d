"""Writing the append-only, hash-chained JSON Lines audit log.

The line layout (canonical body, chain hash, keyed lines) is `audit.format`'s.
Appends take an exclusive ``flock`` on the file, write all their lines with one
``write`` and fsync before returning, so they are safe across processes and durable
once acknowledged.
The file is created with mode 0600: it holds alert data.

Keyed chain (``audit.key_file``): readers need no key; only `verify` needs it to
authenticate the records.

Rotation (``audit.max_bytes``): under the append lock, the full file becomes
``audit.jsonl.1`` (older ones shift to ``.2``, ...; beyond ``audit.keep`` they are
removed) and the new file starts with a ``rotation`` record chained to the last
record of the previous file, so one chain runs through the whole set. The new file
is written and locked before it takes the log's name: a writer that locked the old
file sees its inode is no longer the log's and opens the log again.

Safety: a non-empty file whose first line is not an audit record is refused before
anything touches it; a symbolic link as the log is refused (the rule is simple and
rotation renames names, not targets); a log in a directory others can write to gets
a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat as stat_mode
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from market_agent.audit.format import (
    BODY_AT,
    GENESIS_HASH,
    RESERVED_FIELDS,
    canonical,
    chain_hash,
    format_line,
    key_id,
    looks_like_audit_record,
)
from market_agent.audit.query import FileVerdict, verify_file
from market_agent.errors import AuditError, ConfigError
from market_agent.locks import try_flock
from market_agent.redact import may_hold_secrets, redact_payload

if TYPE_CHECKING:
    from market_agent.settings import AuditSettings

_TAIL_CHUNK = 64 * 1024
DEFAULT_MAX_BYTES = 256 << 20
ROTATION_KIND = "rotation"
MIN_KEY_BYTES = 16
log = logging.getLogger("market_agent.audit")


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


def load_key(path: Path) -> bytes:
    """The secret of `audit.key_file`; refused when others may read it. Never printed."""
    path = path.expanduser()
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            secret = handle.read().strip()
    except OSError as exc:
        raise ConfigError(f"audit.key_file: cannot read {path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise ConfigError(
            f"audit.key_file {path} is readable by group or others "
            f"(mode {stat_mode.S_IMODE(mode):04o}): run chmod 600 {path}"
        )
    if len(secret) < MIN_KEY_BYTES:
        raise ConfigError(
            f"audit.key_file {path}: the key is shorter than {MIN_KEY_BYTES} bytes "
            "(make one with: head -c 32 /dev/urandom | base64)"
        )
    return secret


class AuditLog:
    """One audit log file (and its rotated predecessors). Build once per invocation."""

    def __init__(
        self,
        path: Path,
        *,
        fsync: bool = True,
        key: bytes | None = None,
        max_bytes: int | None = None,
        keep: int | None = None,
    ) -> None:
        self.path = path
        self.fsync = fsync
        self.key = key
        self.key_id = key_id(key) if key is not None else None
        #: Rotate before a write would take the file past this size (None: never).
        self.max_bytes = max_bytes
        #: Rotated files kept (`audit.jsonl.1` ... `.keep`); None keeps them all.
        if keep is not None and keep < 1:
            raise ValueError("keep must be at least 1")
        self.keep = keep
        #: The file's identity and size after this object's last append, and its last
        #: (seq, hash): while the file still matches, its tail need not be read again.
        self._tail: tuple[tuple[int, ...], int, str] | None = None
        #: (dev, ino) of the file whose first line was checked to be an audit record.
        self._checked: tuple[int, int] | None = None
        self._warned_directory = False

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> AuditLog:
        """From an `AuditSettings` (the key file is read and checked here)."""
        key_file = settings.key_file
        return cls(
            settings.path.expanduser(),
            fsync=settings.fsync,
            key=load_key(key_file) if key_file is not None else None,
            max_bytes=settings.max_bytes,
            keep=settings.keep,
        )

    # Writing -----------------------------------------------------------------

    def check_writable(self) -> None:
        """Fail early, before any work is done that could not be recorded."""
        os.close(self._open())

    def append(self, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        return self.append_many([(kind, fields)])[0]

    def append_many(
        self, entries: Sequence[tuple[str, Mapping[str, Any]] | Prepared]
    ) -> list[dict[str, Any]]:
        """Append records atomically (one write, one fsync) and return them."""
        prepared = [e if isinstance(e, Prepared) else prepare(*e) for e in entries]
        if not prepared:
            return []
        fd = self._open_locked()
        try:
            seq, prev_hash = self._tail_state(fd)
            records, data = self._build_batch(seq, prev_hash, prepared)
            self._tail = None
            size = os.fstat(fd).st_size
            if self.max_bytes is not None and size > 0 and size + len(data) > self.max_bytes:
                rotation = prepare(ROTATION_KIND, {"reason": "size", "max_bytes": self.max_bytes})
                records, data = self._build_batch(seq, prev_hash, [rotation, *prepared])
                fd = self._rotate(fd, data)
                return records[1:]
            self._write_durably(fd, data)
            self._tail = (_identity(os.fstat(fd)), records[-1]["seq"], records[-1]["hash"])
        except OSError as exc:
            raise AuditError(self._describe(exc, "cannot write")) from None
        finally:
            os.close(fd)  # closing releases the lock
        return records

    def _build_batch(
        self, seq: int, prev_hash: str, prepared: Sequence[Prepared]
    ) -> tuple[list[dict[str, Any]], bytes]:
        records, lines = [], []
        for entry in prepared:
            seq += 1
            record, line = self._build(seq, entry, prev_hash)
            prev_hash = record["hash"]
            records.append(record)
            lines.append(line)
        return records, ("\n".join(lines) + "\n").encode()

    def _open_locked(self) -> int:
        """The log's current file, locked: if it was rotated while this process waited
        for the lock, the name now belongs to a new file, so open that one."""
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _same_file(os.fstat(fd), self.path):
                    return fd
            except OSError as exc:
                os.close(fd)
                raise AuditError(self._describe(exc, "cannot lock")) from None
            os.close(fd)

    def _rotate(self, old_fd: int, data: bytes) -> int:
        """Move the full file aside and start a new one holding `data` (which begins with
        the rotation record). Called with `old_fd` locked; returns the new file's fd,
        locked, which the caller closes."""
        fresh = self.path.with_name(f"{self.path.name}.new-{os.getpid()}-{os.urandom(4).hex()}")
        new_fd = os.open(fresh, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(new_fd, fcntl.LOCK_EX)  # before anyone can open it by the log's name
            self._write_durably(new_fd, data)
            self._shift_rotated()
            # The log's name always points at a file: link the old one aside first, then
            # let the new one take the name in one rename.
            os.link(self.path, self._rotated(1))
            fresh.rename(self.path)
        except BaseException:
            os.close(new_fd)
            with contextlib.suppress(OSError):
                fresh.unlink()
            raise
        os.close(old_fd)
        if self.fsync:
            _fsync_directory(self.path.parent)
        return new_fd

    def _shift_rotated(self) -> None:
        """`.n` -> `.n+1`, removing what `keep` no longer keeps."""
        first = self._rotated(1)
        with contextlib.suppress(FileNotFoundError):
            if _same_file(first.lstat(), self.path):
                first.unlink()  # left by a rotation interrupted between link and rename
        count = 0
        while self._rotated(count + 1).exists():
            count += 1
        for index in range(count, 0, -1):
            if self.keep is not None and index + 1 > self.keep:
                self._rotated(index).unlink()
            else:
                self._rotated(index).rename(self._rotated(index + 1))

    def _rotated(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

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

    def _open(self) -> int:
        """The log for appending: created 0600 if missing; refused, untouched, when it
        is a symbolic link or a file that is not an audit log."""
        try:
            fd = self._open_for_append()
        except OSError as exc:
            if self.path.is_symlink():
                raise AuditError(
                    f"audit log {self.path} is a symbolic link (to {self.path.readlink()}): "
                    "refused; give the file's own path with --audit-log"
                ) from None
            raise AuditError(self._describe(exc, "cannot open")) from None
        try:
            self._check_is_audit_log(fd)
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        except BaseException:
            os.close(fd)
            raise
        self._warn_about_directory()
        return fd

    def _open_for_append(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        try:
            return os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            return os.open(self.path, flags, 0o600)

    def _check_is_audit_log(self, fd: int) -> None:
        info = os.fstat(fd)
        if not stat_mode.S_ISREG(info.st_mode):
            raise AuditError(f"audit log {self.path}: not a regular file; refused")
        if info.st_size == 0 or self._checked == (info.st_dev, info.st_ino):
            return
        head = os.pread(fd, BODY_AT, 0)
        if not looks_like_audit_record(head):
            raise AuditError(
                f"audit log {self.path}: the file is not an audit log (its first line is not "
                "an audit record); refused, left untouched: check --audit-log / audit.path"
            )
        self._checked = (info.st_dev, info.st_ino)

    def _warn_about_directory(self) -> None:
        if self._warned_directory:
            return
        self._warned_directory = True
        with contextlib.suppress(OSError):
            if self.path.parent.stat().st_mode & 0o002:
                log.warning(
                    "audit log %s: its directory is writable by everyone: others can remove "
                    "or replace the log; keep it in a private directory",
                    self.path,
                )

    def _build(self, seq: int, entry: Prepared, prev_hash: str) -> tuple[dict[str, Any], str]:
        ts = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        head, middle, tail = entry.parts
        body = f'{head}{seq}{middle}"{ts}"{tail}'  # = canonical(record)
        digest = chain_hash(prev_hash, body, self.key)
        header: dict[str, Any] = {"hash": digest, "prev_hash": prev_hash}
        if self.key_id is not None:
            header["key_id"] = self.key_id
        line = format_line(digest, prev_hash, body, self.key_id)
        header.update(seq=seq, ts=ts, kind=entry.kind)
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
        return self._last_of(tail)

    def _last_of(self, tail: bytes) -> tuple[int, str]:
        last_line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            last = json.loads(last_line)
            return int(last["seq"]), str(last["hash"])
        except (ValueError, KeyError, TypeError):
            raise AuditError(
                f"audit log {self.path}: the last record is damaged; "
                "run `market-agent history verify` and move the file aside"
            ) from None

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest complete record, read only: (0, GENESIS) when empty.

        seq counts every record ever appended (it runs on across rotation), so with
        the hash it is the witness `/metrics` exposes.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return 0, GENESIS_HASH
        except OSError as exc:
            raise AuditError(self._describe(exc, "cannot read")) from None
        try:
            info = os.fstat(fd)
            if self._tail is not None and self._tail[0] == _identity(info):
                return self._tail[1], self._tail[2]
            tail = _read_tail(fd, info.st_size) if info.st_size else b""
        finally:
            os.close(fd)
        tail = tail[: tail.rfind(b"\n") + 1]
        return self._last_of(tail) if tail else (0, GENESIS_HASH)

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
        """Every record of the current file, oldest first; a torn last line is skipped."""
        for _, record in self._lines():
            if record is not None:
                yield record

    def recent_records(self) -> Iterator[dict[str, Any]]:
        """The last rotated file's records, then the current file's: what start-up
        recovery reads, so that a rotation cannot hide an unanalysed notification."""
        for _, record in self._lines(self._rotated(1)):
            if record is not None:
                yield record
        yield from self.records()

    def _lines(self, path: Path | None = None) -> Iterator[tuple[int, dict[str, Any] | None]]:
        try:
            handle = (path or self.path).open("rb")
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

    def verify(self) -> FileVerdict:
        """Check the current file's chain (with the key, if any); name the first bad line.

        The same check as `history verify` (`query.verify_file`), for this file alone."""
        return verify_file(self.path, key=self.key)


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _same_file(info: os.stat_result, path: Path) -> bool:
    try:
        now = path.lstat()
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_tail(fd: int, size: int) -> bytes:
    """Enough of the end of the file to hold its last complete line."""
    chunk = min(size, _TAIL_CHUNK)
    while True:
        data = os.pread(fd, chunk, size - chunk)
        if data.count(b"\n") >= 2 or chunk == size:
            return data
        chunk = min(size, chunk * 4)


def lock_for_listener(audit_path: Path) -> int:
    """One listener per audit log file; returns the lock's fd (closing it lets go).

    The lock is a file beside the log (`<log>.listen.lock`), so it outlives rotation
    and, as `flock` locks the lock file's inode, paths through symbolic links to the
    directory meet on it. The log itself must be reached by one name only: a symbolic
    link is refused when the log is opened, and a log with other hard links is refused
    here (each name would have a lock of its own).
    """
    lock_path = audit_path.with_name(audit_path.name + ".listen.lock")
    fd = try_flock(lock_path, follow_symlinks=False)
    if fd is None:
        raise ConfigError(
            f"another `market-agent listen` is using the audit log {audit_path} "
            f"(lock {lock_path}); stop it or use --audit-log PATH"
        ) from None
    try:
        _refuse_other_names(audit_path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_other_names(audit_path: Path) -> None:
    """Refuse a log that has hard links elsewhere; checked under the append lock, as a
    rotation briefly gives the log a second name."""
    try:
        fd = os.open(audit_path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AuditError(f"audit log {audit_path}: cannot open: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if info.st_nlink > 1:
        raise ConfigError(
            f"audit log {audit_path} has {info.st_nlink} names (hard links; device "
            f"{info.st_dev}, inode {info.st_ino}): a listener must be the only one using "
            "the file; remove the other links or use --audit-log PATH"
        )
