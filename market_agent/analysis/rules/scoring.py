"""From matched rules to an issue type: evidence, scores, the best type, confidence.

Multi-alert groups: each firing alert is scored on its own and the group's
issue type comes from the per-alert scores of the alerts that drive it (the active
ones, suppressed ones only when all are; of those, the managed service's when any
fires), averaged with weights 1 + severity rank (info 1 ... critical 5): the most
severe alerts count most, but every driving alert adds evidence. The severity is
the highest of the active alerts; the alert the description leads with is a driver
that, on its own, points to the group's issue type.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from market_agent.analysis.rules.matcher import NAME
from market_agent.models import Alert, IssueType, Severity

if TYPE_CHECKING:
    from market_agent.analysis.rules.table import Rule, RuleTable

TYPES = tuple(IssueType)
TYPE_INDEX = {issue_type: i for i, issue_type in enumerate(TYPES)}
# Enum members for the hot path: reading a module constant is ~10x quicker than
# `IssueType.AVAILABILITY`, a descriptor look-up in Python 3.11.
AVAILABILITY, UNKNOWN = IssueType.AVAILABILITY, IssueType.UNKNOWN
CRITICAL, HIGH, INFO = Severity.CRITICAL, Severity.HIGH, Severity.INFO

#: One alert's votes: per-type scores, rule -> contribution, bit set of the types
#: the alertname supports, and whether no matched rule argues against a restart.
Votes = tuple[tuple[float, ...], dict[int, float], int, bool]


@dataclass(slots=True)
class Evidence:
    """What the rules found in one firing alert."""

    alert: Alert
    severity: Severity
    managed: bool
    scores: Sequence[float]
    matched: Mapping[int, float]  # rule index -> contribution to its issue type (shared)
    named: int  # bit set of the issue types its alertname supports
    restartable: bool  # no matched rule argues against a restart


@dataclass(slots=True)
class Finding:
    """The notification-level result being assembled."""

    issue_type: IssueType
    severity: Severity
    confidence: float
    managed: bool
    rules: list[Rule]  # rules that voted for issue_type, strongest first
    ranked: tuple[int, ...]  # their indexes in the table
    restartable: bool = True
    cleared: bool = False
    #: The action log evidence calls for (`[[log_signatures]]` proposed_action).
    log_action: str | None = None
    #: The log evidence that says a restart will not help (a signature id), if any.
    restart_vetoed_by: str | None = None
    signals: str = ""
    notes: list[str] = field(default_factory=list)
    situations: list[str] = field(default_factory=list)
    #: The alert the description leads with: one that supports `issue_type`.
    lead: Alert | None = None

    def reclassify(self, issue_type: IssueType, why: str) -> None:
        """Live context overrides the rules: say so instead of listing rule ids."""
        if issue_type is not self.issue_type:
            self.signals = f"{why}; the alert text suggested {self.issue_type.value}"
            self.issue_type = issue_type


def score(table: RuleTable, masks: Mapping[int, int]) -> Votes:
    """The votes of one alert: rule index -> bit mask of the fields where it matched."""
    votes, mask_weights = table.votes, table.mask_weights
    if table.has_user_rules and any(votes[r][2] for r in masks):  # user rules take precedence
        masks = {r: m for r, m in masks.items() if votes[r][2]}
    scores = [0.0] * len(TYPES)
    matched: dict[int, float] = {}
    named = 0
    restartable = True
    for r, mask in masks.items():
        type_index, weight, _, no_restart = votes[r]
        contribution = weight * mask_weights[mask]
        scores[type_index] += contribution
        matched[r] = contribution
        if mask & 1 << NAME and weight > 0:
            named |= 1 << type_index
        if no_restart and contribution > 0:
            restartable = False
    return tuple(scores), matched, named, restartable


def find(table: RuleTable, evidence: Sequence[Evidence]) -> Finding:
    """The issue type, severity and confidence of a notification's firing alerts."""
    active = evidence if len(evidence) == 1 else _active(evidence)
    drivers = active if len(active) == 1 else [e for e in active if e.managed] or active
    single = len(drivers) == 1
    issue_type, top, second = _best(table, drivers[0].scores if single else _combined(drivers))
    winner, votes = TYPE_INDEX[issue_type], table.votes
    totals: dict[int, float] = {}
    for e in drivers:
        for r, contribution in e.matched.items():
            if contribution > 0 and votes[r][0] == winner:
                totals[r] = totals.get(r, 0.0) + contribution
    ranked = tuple(sorted(totals, key=totals.__getitem__, reverse=True))
    if single:
        first = drivers[0]
        managed, restartable = first.managed, first.restartable
        named = bool(first.named >> winner & 1)
        lead = first.alert
    else:
        managed = any(e.managed for e in drivers)
        restartable = all(e.restartable for e in drivers)
        named = any(e.named >> winner & 1 for e in drivers)
        lead = _lead(table, drivers, issue_type)
    severity = max((e.severity for e in active), key=rank)
    confidence = _confidence(issue_type, top, second, named)
    rules = list(map(table.rules.__getitem__, ranked))
    return Finding(issue_type, severity, confidence, managed, rules, ranked, restartable, lead=lead)


def _active(evidence: Sequence[Evidence]) -> Sequence[Evidence]:
    """The alerts not silenced or inhibited in Alertmanager; all of them if every one is."""
    return [e for e in evidence if not e.alert.suppressed] or evidence


def _lead(table: RuleTable, drivers: Sequence[Evidence], issue_type: IssueType) -> Alert:
    """The driver the description leads with: first one whose own issue type is the
    group's, then one that voted for it; among those the most severe, then the strongest."""
    winner = TYPE_INDEX[issue_type]

    def relevance(e: Evidence) -> tuple[bool, bool, int, float]:
        own = _best(table, e.scores)[0]
        return own is issue_type, e.scores[winner] > 0, e.severity.rank, e.scores[winner]

    return max(drivers, key=relevance).alert


def rank(severity: Severity) -> int:
    """Sort key of severities: info lowest."""
    return severity.rank


def _combined(evidence: Sequence[Evidence]) -> Sequence[float]:
    """Per-type scores of a group: averaged with weights 1 + severity rank."""
    if len(evidence) == 1:
        return evidence[0].scores
    weights = [1 + e.severity.rank for e in evidence]
    total = sum(weights)
    return [
        sum(w * e.scores[i] for w, e in zip(weights, evidence, strict=True)) / total
        for i in range(len(TYPES))
    ]


def _best(table: RuleTable, scores: Sequence[float]) -> tuple[IssueType, float, float]:
    """Winning issue type, its score and the runner-up's score (ties: tie_order)."""
    ranked = table.tie_scores(scores)
    top = max(ranked)  # max() and index() take the first of equals: the tie_order
    second = max(sorted(ranked)[-2], 0.0)
    if top < table.min_score:
        return UNKNOWN, max(top, 0.0), second
    return TYPES[table.vote_order[ranked.index(top)]], top, second


@functools.lru_cache(maxsize=4096)  # a pure function of few distinct values: rule weights
def _confidence(issue_type: IssueType, top: float, second: float, named: bool) -> float:
    """Stronger, one-sided evidence gives higher confidence (0.2 .. 0.95).

    The alertname is its author's own statement of the problem, so evidence found
    there counts extra: a bare `PredictorDown` is clear, "may be down" in a
    description is a guess.
    """
    if issue_type is UNKNOWN:
        return 0.2
    strength = 1.0 - math.exp(-(top + (1.0 if named else 0.0)) / 1.6)
    agreement = 0.4 + 0.6 * (top - second) / top
    return round(0.2 + 0.75 * strength * agreement, 3)
