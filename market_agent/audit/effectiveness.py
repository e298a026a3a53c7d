"""How well actions worked, learnt from the audit log, per (alertname, action).

Manual actions about no alert are counted under the alert name "" (null in JSON).

- attempts: executed runs (`result` records other than `blocked`), `interrupted`
  ones included: the action ran and nothing proved it worked, so it counts as an
  attempt that did not succeed (three of them in the last five make the rule
  analyzer escalate rather than restart again: a human looks);
- successes: runs whose verification passed;
- median time to recover, twice: from the action's start, and end to end from the
  alert's `startsAt` (`alert_started_at` on the result record; older records have
  none), to verification, or, for a run that was not verified, to the next resolved
  notification for that alert (within a day);
- recent: the last outcomes, oldest first (True = verified), for the rule analyzer,
  which proposes `escalate` instead of `restart` when 3 of the last 5 failed.

One forward pass over the raw lines; only candidate lines are parsed as JSON.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from market_agent.audit.format import first_key_at, raw_ts
from market_agent.audit.query import epoch, load_record, log_files, map_ranges, range_chunks

RECENT = 5
_RESULT = b'"step":"result"'
_NOTIFICATION = b'"kind":"notification"'
#: A notification's top-level status is its last key but `ts` (sorted keys).
_RESOLVED = b'"status":"resolved","ts":"'
_STATUS = b'"status":"'
_NAMES = b'"alertnames":['
_EXECUTED = frozenset({"verified", "rolled_back", "failed", "interrupted"})
#: A resolved notification this long after an unverified run no longer counts as recovery.
RESOLUTION_HORIZON = 24 * 3600.0
_CONTEXT_KEYS = ("recent", "attempts", "successes", "success_rate", "median_time_to_recover_s")
Pending = tuple["Stat", float, float | None]  # (stat, action start, alert start)


@dataclass
class Stat:
    alertname: str
    action: str
    attempts: int = 0
    successes: int = 0
    recover_times: list[float] = field(default_factory=list)
    #: End to end: from the alert's startsAt (runs that recorded it).
    recover_from_alert: list[float] = field(default_factory=list)
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=RECENT))
    last_attempt: str | None = None

    @property
    def success_rate(self) -> float | None:
        return round(self.successes / self.attempts, 3) if self.attempts else None

    @property
    def median_recover_s(self) -> float | None:
        """From the action's start."""
        return _median(self.recover_times)

    @property
    def median_recover_from_alert_s(self) -> float | None:
        """From the alert's startsAt (detection and delivery included)."""
        return _median(self.recover_from_alert)

    def to_json(self) -> dict[str, Any]:
        """One row of `history stats --json`."""
        return {
            "alertname": self.alertname or None,
            "action": self.action,
            "attempts": self.attempts,
            "successes": self.successes,
            "success_rate": self.success_rate,
            "median_time_to_recover_s": self.median_recover_s,
            "median_time_to_recover_from_alert_s": self.median_recover_from_alert_s,
            "recent": list(self.recent),
            "last_attempt": self.last_attempt,
        }


#: ("result", ts, action, outcome, alertnames, elapsed_s, recover_s, alert start) or
#: ("resolved", ts, alertnames): what a candidate line says, read without the others.
Event = tuple[Any, ...]


def extract(line: bytes) -> Event | None:
    """The event in one raw line, if any. Pure: parts of a file are read in parallel."""
    if _RESULT in line:
        return _result_event(line)
    if line.startswith(_NAMES, first_key_at(line)) and _RESOLVED in line:
        return _resolved_event(line, 0, len(line))
    return None


def events_in(chunk: bytes) -> list[Event]:
    """`extract` of each line of `chunk` (whole lines), in order, for the lines with an event.

    Read in place: most lines with a needle hold no event (the analyses of resolved
    notifications), and they are never cut out of the chunk or scanned whole.
    """
    events: list[tuple[int, Event]] = []
    results: set[int] = set()
    at = chunk.find(_RESULT)
    while at >= 0:
        start, end = _line_around(chunk, at)
        results.add(start)
        if (event := _result_event(chunk[start:end])) is not None:
            events.append((start, event))
        at = chunk.find(_RESULT, end)
    at = chunk.find(_RESOLVED)
    while at >= 0:
        start, end = _line_around(chunk, at)
        notification = start not in results and chunk.startswith(
            _NAMES, first_key_at(chunk, start), end
        )
        if notification and (event := _resolved_event(chunk, start, end)) is not None:
            events.append((start, event))
        at = chunk.find(_RESOLVED, end)
    events.sort(key=itemgetter(0))  # results and resolutions in file order
    return [event for _, event in events]


def _line_around(chunk: bytes, at: int) -> tuple[int, int]:
    """[start, end) of the line holding offset `at` (its newline excluded)."""
    end = chunk.find(b"\n", at)
    return chunk.rfind(b"\n", 0, at) + 1, len(chunk) if end < 0 else end


def _result_event(line: bytes) -> Event | None:
    record = load_record(line)
    if record is None or record.get("kind") != "action" or record.get("step") != "result":
        return None
    outcome, action, ts = record.get("outcome"), record.get("action"), record.get("ts")
    if outcome not in _EXECUTED or not isinstance(action, str) or not isinstance(ts, str):
        return None
    elapsed, recover = _number(record.get("elapsed_s")), _number(record.get("recover_s"))
    alert_start = _epoch_or_none(record.get("alert_started_at"))
    return ("result", ts, action, outcome, _names(record), elapsed, recover, alert_start)


def _resolved_event(data: bytes, start: int, end: int) -> Event | None:
    """The resolution in line data[start:end] (a notification), if it is one."""
    if data.rfind(_RESOLVED, start, end) != data.rfind(_STATUS, start, end):
        return None  # "resolved" was a nested alert's status, not the notification's
    names, ts = _notification_names(data, start, end), raw_ts(data, start, end)
    if names is None or ts is None or data.find(_NOTIFICATION, start, end) < 0:
        record = load_record(data[start:end])
        if record is None or record.get("kind") != "notification":
            return None
        if record.get("status") != "resolved" or not isinstance(record.get("ts"), str):
            return None
        names, ts = _names(record), record["ts"]
    return ("resolved", ts, names)


class Accumulator:
    """Apply events (or feed raw lines) oldest first; read `stats` or `rows()`.

    Parts of a file can be accumulated apart and then `merge`d in file order: runs
    still unresolved at the end of a part are resolved by the first resolved
    notification of the next parts.
    """

    def __init__(self, since: str | None = None) -> None:
        self.since = since
        self.stats: dict[tuple[str, str], Stat] = {}
        #: alertname -> [(stat, start epoch, alert start)] of unverified runs awaiting
        #: a resolution.
        self._pending: dict[str, list[Pending]] = {}
        #: alertname -> epoch of its first resolved notification seen.
        self.first_resolved: dict[str, float] = {}

    def feed(self, line: bytes) -> None:
        event = extract(line)
        if event is not None:
            self.apply(event)

    def feed_all(self, lines: Iterable[bytes]) -> Accumulator:
        for line in lines:
            self.feed(line)
        return self

    def apply(self, event: Event) -> None:
        if event[0] == "result":
            self._result(*event[1:])
        else:
            self._resolved(event[1], event[2])

    def _result(
        self,
        ts: str,
        action: str,
        outcome: str,
        names: list[str],
        elapsed: float | None,
        recover: float | None,
        alert_start: float | None = None,
    ) -> None:
        if self.since is not None and ts < self.since:
            return
        ok = outcome == "verified"
        for name in names or ("",):  # "": a manual action, about no alert
            stat = self.stats.setdefault((name, action), Stat(name, action))
            stat.attempts += 1
            stat.successes += ok
            stat.recent.append(ok)
            stat.last_attempt = ts
            if ok and recover is not None:
                stat.recover_times.append(recover)
                if alert_start is not None:
                    start = epoch(ts) - (elapsed if elapsed is not None else recover)
                    stat.recover_from_alert.append(round(start + recover - alert_start, 3))
            elif not ok and elapsed is not None and name:  # no alert: no resolution to wait for
                start = epoch(ts) - elapsed
                self._pending.setdefault(name, []).append((stat, start, alert_start))

    def _resolved(self, ts: str, names: list[str]) -> None:
        fresh = [name for name in names if name not in self.first_resolved]
        if not fresh and not any(name in self._pending for name in names):
            return
        when = epoch(ts)
        for name in fresh:
            self.first_resolved[name] = when
        self._resolve(names, when)

    def _resolve(self, names: Iterable[str], when: float) -> None:
        for name in names:
            for stat, start, alert_start in self._pending.pop(name, []):
                if 0 <= when - start <= RESOLUTION_HORIZON:
                    stat.recover_times.append(round(when - start, 3))
                    if alert_start is not None:
                        stat.recover_from_alert.append(round(when - alert_start, 3))

    def merge(self, later: Accumulator) -> None:
        """Add what a later part of the log accumulated on its own."""
        for name, when in later.first_resolved.items():
            self._resolve([name], when)
            self.first_resolved.setdefault(name, when)
        for key, part in later.stats.items():
            stat = self.stats.setdefault(key, Stat(*key))
            stat.attempts += part.attempts
            stat.successes += part.successes
            stat.recover_times.extend(part.recover_times)
            stat.recover_from_alert.extend(part.recover_from_alert)
            stat.recent.extend(part.recent)
            stat.last_attempt = part.last_attempt or stat.last_attempt
        for name, runs in later._pending.items():
            mine = self._pending.setdefault(name, [])
            mine.extend(
                (self.stats[(part.alertname, part.action)], start, alert_start)
                for part, start, alert_start in runs
            )

    def rows(self) -> list[Stat]:
        return sorted(self.stats.values(), key=lambda s: (s.alertname, s.action))


def _accumulate_range(
    path: Path, start: int, end: int | None, index: int, since: str | None
) -> Accumulator:
    acc = Accumulator(since)
    for chunk in range_chunks(path, start, end):
        for event in events_in(chunk):
            acc.apply(event)
    return acc


def compute(paths: Sequence[Path], since: str | None = None) -> list[Stat]:
    """The effectiveness table over the log and its rotated files (given newest first);
    parts of large files are accumulated in parallel, then merged in order."""
    total = Accumulator(since)
    for path in reversed(list(paths)):
        for part in map_ranges(_accumulate_range, path, since):
            total.merge(part)
    return total.rows()


def context_for(stats: Mapping[tuple[str, str], Stat], alertnames: Iterable[str]) -> dict[str, Any]:
    """`{"<alertname>": {"<action>": {"recent": [...], "attempts": ...}}}` for these alerts."""
    wanted = set(alertnames)
    found: dict[str, Any] = {}
    for (name, action), stat in stats.items():
        if name in wanted:
            row = stat.to_json()
            found.setdefault(name, {})[action] = {k: row[k] for k in _CONTEXT_KEYS}
    return found


class EffectivenessTracker:
    """Keeps the figures up to date by reading only what was appended since last time."""

    #: Seconds between two reads of the log: a busy listener analyses far more often.
    REFRESH_INTERVAL = 1.0

    def __init__(self, audit_path: Path) -> None:
        self.audit_path = audit_path
        self._lock = threading.Lock()
        self._acc = Accumulator()
        self._inode: int | None = None
        self._offset = 0
        self._refreshed_at = -self.REFRESH_INTERVAL

    def figures(self, alertnames: Iterable[str]) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if now - self._refreshed_at >= self.REFRESH_INTERVAL:
                self._refresh()
                self._refreshed_at = now
            return context_for(self._acc.stats, alertnames)

    def _refresh(self) -> None:
        try:
            stat = self.audit_path.stat()
        except FileNotFoundError:
            return
        if stat.st_ino != self._inode or stat.st_size < self._offset:
            # First use, or the log rotated: read everything again.
            self._acc = Accumulator()
            for path in reversed(log_files(self.audit_path)[1:]):
                for part in map_ranges(_accumulate_range, path, None):
                    self._acc.merge(part)
            self._inode, self._offset = stat.st_ino, 0
        for chunk in range_chunks(self.audit_path, self._offset, None):
            if not chunk.endswith(b"\n"):
                break  # a record being written: read it next time
            for event in events_in(chunk):
                self._acc.apply(event)
            self._offset += len(chunk)


def _names(record: Mapping[str, Any]) -> list[str]:
    names = record.get("alertnames")
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def recovery_times(result: Mapping[str, Any]) -> dict[str, float | None]:
    """Time to recover of one verified run (its `result` record), from the action's
    start and from the alert's startsAt; None where it cannot be told."""
    recover = _number(result.get("recover_s"))
    if result.get("outcome") != "verified" or recover is None:
        return {"from_action_s": None, "from_alert_s": None}
    alert_start = _epoch_or_none(result.get("alert_started_at"))
    ts = result.get("ts")
    elapsed = _number(result.get("elapsed_s"))
    if alert_start is None or not isinstance(ts, str):
        return {"from_action_s": recover, "from_alert_s": None}
    end = epoch(ts) - (elapsed if elapsed is not None else recover) + recover
    return {"from_action_s": recover, "from_alert_s": round(end - alert_start, 3)}


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _epoch_or_none(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return epoch(value)
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _notification_names(data: bytes, start: int, end: int) -> list[str] | None:
    """The `alertnames` (its first key) of the notification in line data[start:end],
    without parsing the line; None when the caller had better parse it."""
    at = first_key_at(data, start)
    if not data.startswith(_NAMES, at, end):
        return None
    first = at + len(_NAMES)
    close = data.find(b"]", first, end)
    if close < 0:
        return None
    names = data[first:close]
    if b"\\" in names or not names.startswith(b'"') or not names.endswith(b'"'):
        return None  # escapes, or a `]` inside a name: let the caller parse the line
    return names[1:-1].decode("utf-8", "replace").split('","')
