"""The arithmetic of `bench_loop.py`: one run's milestones -> phases -> a summary table.

Pure functions, so `tests/test_bench_loop.py` can check them without servers.

A run's milestones are Unix times (seconds) keyed by the names in MILESTONES; a
milestone that was not seen is missing (None), and every phase that needs it is
then missing too.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: In the order they happen, with where each is read.
MILESTONES: dict[str, str] = {
    "injected": "the bench: kill -9, or the fault injected",
    "scraped": "Prometheus: timestamp of the first scrape that saw it",
    "firing": "Prometheus: first ALERTS{alertstate='firing'} sample (the evaluation)",
    "received": "the bench's relay: Alertmanager's POST reaching listen",
    "journaled": "audit log: the notification record",
    "analysed": "audit log: the analysis record",
    "guards_passed": "audit log: the `execute started` record (written once guards pass)",
    "action_started": "audit log: the command's spawn (`execute succeeded` minus its duration)",
    "restarted": "audit log: `execute succeeded` (the restart command returned)",
    "healthy": "the bench: first 200 from the new predictor's /health",
    "verified": "audit log: `verify passed`",
    "resolved": "the bench's relay: the resolved notification reaching listen",
}

#: (group, phase label, from, to): consecutive milestones, then the totals.
PHASES: tuple[tuple[str, str, str, str], ...] = (
    ("detection", "kill/fault -> scrape saw it", "injected", "scraped"),
    ("detection", "scrape -> rule firing", "scraped", "firing"),
    ("delivery", "firing -> POST received", "firing", "received"),
    ("agent", "received -> journaled", "received", "journaled"),
    ("agent", "journaled -> analysed", "journaled", "analysed"),
    ("agent", "analysed -> guards passed", "analysed", "guards_passed"),
    ("agent", "guards passed -> action started", "guards_passed", "action_started"),
    ("action", "restart command", "action_started", "restarted"),
    ("action", "command done -> healthy", "restarted", "healthy"),
    ("action", "healthy -> verified", "healthy", "verified"),
    ("total", "kill/fault -> verified recovery", "injected", "verified"),
    ("total", "agent: received -> action started", "received", "action_started"),
    ("after", "kill/fault -> resolved notification", "injected", "resolved"),
)
AGENT = "agent: received -> action started"
TOTAL = "kill/fault -> verified recovery"

Milestones = Mapping[str, float | None]


def phases(milestones: Milestones) -> dict[str, float | None]:
    """Milliseconds of each phase of one run (None where a milestone is missing)."""
    found: dict[str, float | None] = {}
    for _, label, start, end in PHASES:
        a, b = milestones.get(start), milestones.get(end)
        found[label] = round((b - a) * 1000, 1) if a is not None and b is not None else None
    return found


def first_sample_at_or_after(
    samples: Iterable[Sequence[Any]], since: float, predicate: Any = None
) -> float | None:
    """The time of the first [t, "value"] pair at or after `since` whose value passes."""
    for when, value in samples:
        if float(when) >= since and (predicate is None or predicate(float(value))):
            return float(when)
    return None


def action_started(succeeded_ts: float | None, duration_ms: float | None) -> float | None:
    """When the restart command was spawned: it returned at `succeeded_ts`."""
    if succeeded_ts is None or duration_ms is None:
        return None
    return succeeded_ts - duration_ms / 1000


@dataclass(frozen=True)
class Row:
    group: str
    label: str
    median_ms: float | None
    worst_ms: float | None
    runs: int


def summarize(runs: Sequence[Mapping[str, float | None]]) -> list[Row]:
    """Median and worst (largest) of each phase over the runs where it was measured."""
    rows = []
    for group, label, _, _ in PHASES:
        values = [run[label] for run in runs if run.get(label) is not None]
        measured = [float(v) for v in values if v is not None]
        median = round(statistics.median(measured), 1) if measured else None
        worst = round(max(measured), 1) if measured else None
        rows.append(Row(group, label, median, worst, len(measured)))
    return rows


def agent_share(rows: Sequence[Row]) -> dict[str, float | None]:
    """The agent's median milliseconds, and its percent of the median total."""
    by_label = {row.label: row for row in rows}
    agent, total = by_label[AGENT].median_ms, by_label[TOTAL].median_ms
    percent = round(100 * agent / total, 2) if agent is not None and total else None
    return {"median_ms": agent, "worst_ms": by_label[AGENT].worst_ms, "percent_of_total": percent}


def table(title: str, rows: Sequence[Row]) -> str:
    """A Markdown table of the phases."""
    lines = [f"| {title} | phase | median | worst | runs |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row.group} | {row.label} | {_ms(row.median_ms)} | {_ms(row.worst_ms)} "
            f"| {row.runs} |"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f} ms" if abs(value) >= 100 else f"{value:.1f} ms"
