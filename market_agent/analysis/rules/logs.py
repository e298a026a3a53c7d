"""Log evidence: the `[[log_signatures]]` of the rule table read in the log summary.

`context["logs"]` (`market_agent.logs.summary`) is untrusted: odd shapes are
ignored, and only a host-name-like `subject` from a match is ever quoted in text.

Only current signatures are evidence: one whose last line is older than the alert's
start minus `RECENCY_SLACK`, or that a recovery or start-up line logged after its last
line supersedes, is stale. A stale signature is mentioned in the description as
background ("earlier: ...") but changes nothing else and is not in `evidence`.
Entries without times are taken as current (the summary cannot tell).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from market_agent.analysis.rules.scoring import Finding, rank
from market_agent.analysis.rules.table import LogSignature
from market_agent.models import Evidence, bounded_text

#: Evidence items listed at most, and the longest summary of one.
MAX_EVIDENCE = 5
MAX_EVIDENCE_CHARS = 300
_SAFE_SUBJECT = re.compile(r"[a-z0-9][a-z0-9.:-]{0,120}")
#: How long before the alert's start a signature's last line may be and still count:
#: the alert starts a scrape and a rule evaluation (15 s each by default) after its
#: cause, and log and Prometheus clocks may differ by a few seconds.
RECENCY_SLACK = timedelta(seconds=60)
#: Lines that say the predictor recovered or started again (matched lower-cased).
_RECOVERY = re.compile(
    r"\brecovered\b|\bcleared faults\b|(?:^|: )(?:starting|booting|launching)\b"
    r"|application startup complete|\bstarted server process\b"
)


@dataclass(frozen=True, slots=True)
class LogMatch:
    """Where one log signature was found: how often, when, and about what."""

    signature: LogSignature
    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    subject: str | None
    #: The summarised log signature of the most frequent matching entry.
    sample: str
    #: The summary entries it was found in.
    entries: tuple[Mapping[str, Any], ...] = ()

    @property
    def summary(self) -> str:
        return self.signature.summary.replace("{subject}", self.subject or "an upstream host")

    def evidence(self) -> Evidence:
        text = f'{self.summary}: {self.count} log lines like "{self.sample}"'
        return Evidence(
            source="logs",
            summary=bounded_text(text, MAX_EVIDENCE_CHARS),
            count=self.count,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
        )


def find_matches(signatures: Sequence[LogSignature], logs: Mapping[str, Any]) -> list[LogMatch]:
    """The signatures found in the summary at least `min_count` times, in table order.

    A log entry counts for the first signature that matches it only: a MemoryError
    traceback is out-of-memory evidence, not also "a traceback".
    """
    entries = [e for e in _entries(logs) if isinstance(e.get("signature"), str)]
    unclaimed = dict(enumerate(_text(entry) for entry in entries))
    matches = []
    for signature in signatures:
        found = [(i, m) for i, text in unclaimed.items() if (m := _search(signature, text))]
        count = sum(_count(entries[i]) for i, _ in found)
        if found and count >= signature.min_count:
            matches.append(_match(signature, [(entries[i], m) for i, m in found], count))
            for i, _ in found:
                del unclaimed[i]
    return matches


def apply_logs(
    finding: Finding,
    logs: Mapping[str, Any],
    signatures: Sequence[LogSignature],
    since: datetime | None = None,
) -> list[Evidence]:
    """Let the strongest applicable current log signature adjust `finding`; the
    evidence of all current ones. `since`: the alert's start (None: any time)."""
    matches = find_matches(signatures, logs)
    recoveries = _recoveries(logs)
    current = [m for m in matches if _is_current(m, since, recoveries)]
    lead = next((m for m in current if _applies(m.signature, finding)), None)
    if lead is not None:
        _adjust(finding, lead)
    stale = [m for m in matches if m not in current]
    if stale:
        finding.notes.append("earlier: " + ", ".join(_background(m) for m in stale))
    return [match.evidence() for match in current[:MAX_EVIDENCE]]


def alert_start(starts: Iterable[datetime | None], gathered_at: Any) -> datetime | None:
    """The earliest start among `starts` (the firing alerts'), else the gathering time
    (also when earlier: a start in the future is clock skew)."""
    known = [s for s in starts if s is not None and s.tzinfo is not None and s.year > 1]
    gathered = _time(gathered_at)
    return min([*known, *([gathered] if gathered else [])], default=None)


def _is_current(match: LogMatch, since: datetime | None, recoveries: list[LogEntry]) -> bool:
    last = match.last_seen
    if last is None:
        return True
    if since is not None and last < since - RECENCY_SLACK:
        return False
    return not any(
        first >= last and all(entry is not own for own in match.entries)
        for entry, first in recoveries
    )


#: A summary entry, and when it was first seen.
LogEntry = tuple[Mapping[str, Any], datetime]


def _recoveries(logs: Mapping[str, Any]) -> list[LogEntry]:
    """The recovery and start-up entries with the time of their first line."""
    return [
        (entry, first)
        for entry in _entries(logs)
        if isinstance(entry.get("signature"), str)
        and (first := _time(entry.get("first_seen"))) is not None
        and any(_RECOVERY.search(line) for line in _text(entry).splitlines())
    ]


def _background(match: LogMatch) -> str:
    last = match.last_seen
    until = f" until {last.astimezone(UTC):%H:%M:%S} UTC" if last else ""
    return match.summary + until


def _adjust(finding: Finding, match: LogMatch) -> None:
    signature = match.signature
    when = _when(match.first_seen, match.last_seen)
    finding.notes.append(f"the logs show {match.summary} ({match.count} lines{when})")
    finding.reclassify(signature.issue_type, f"logs: {match.summary}")
    finding.confidence = max(finding.confidence, 0.8)
    finding.situations.append(signature.situation)
    if signature.severity is not None:
        finding.severity = max(finding.severity, signature.severity, key=rank)
    if signature.no_restart:
        finding.restartable = False
        finding.restart_vetoed_by = signature.id
    if signature.proposed_action:
        finding.log_action = signature.proposed_action


def _applies(signature: LogSignature, finding: Finding) -> bool:
    if "unreachable" in finding.situations and not signature.explains_outage:
        return False
    return not signature.applies_to or finding.issue_type in signature.applies_to


def _entries(logs: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for key in ("signatures", "frequent"):
        entries = logs.get(key)
        if isinstance(entries, list):
            yield from (entry for entry in entries if isinstance(entry, Mapping))


def _text(entry: Mapping[str, Any]) -> str:
    example = entry.get("example")
    extra = example if isinstance(example, str) else ""
    return f"{entry['signature']}\n{extra}".lower()


def _search(signature: LogSignature, text: str) -> re.Match[str] | None:
    for pattern in signature.patterns:
        for line in text.splitlines() if "^" in pattern.pattern else (text,):
            match = pattern.search(line)
            if match:
                return match
    return None


def _match(
    signature: LogSignature, found: list[tuple[Mapping[str, Any], re.Match[str]]], count: int
) -> LogMatch:
    firsts = [t for entry, _ in found if (t := _time(entry.get("first_seen")))]
    lasts = [t for entry, _ in found if (t := _time(entry.get("last_seen")))]
    subject = next((s for _, m in found if (s := _subject(m))), None)
    top = max(found, key=lambda pair: _count(pair[0]))[0]
    return LogMatch(
        signature,
        count,
        min(firsts, default=None),
        max(lasts, default=None),
        subject,
        bounded_text(str(top["signature"]), 160),
        tuple(entry for entry, _ in found),
    )


def _subject(match: re.Match[str]) -> str | None:
    value = match.groupdict().get("subject")
    return value if value and _SAFE_SUBJECT.fullmatch(value) else None


def _count(entry: Mapping[str, Any]) -> int:
    count = entry.get("count")
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _when(first: datetime | None, last: datetime | None) -> str:
    if first is None or last is None:
        return ""
    return f", {first.astimezone(UTC):%H:%M:%S}-{last.astimezone(UTC):%H:%M:%S} UTC"
