"""The seam every analyzer plugs into."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from market_agent.analysis.severity import severity_from_label
from market_agent.models import Evidence, InvestigationSummary, Notification, Usage, Verdict

#: Actions an analyzer may propose out of the box; configured actions extend it.
BUILTIN_ACTIONS = ("restart", "escalate", "none")

__all__ = [
    "BUILTIN_ACTIONS",
    "AnalysisLink",
    "Analyzer",
    "Judgement",
    "current_link",
    "linked_to",
    "severity_from_label",
]


@dataclass(frozen=True, slots=True)
class Judgement:
    """An analyzer's verdict plus how it was reached."""

    verdict: Verdict
    analyzer: Literal["llm", "rules"]
    model: str | None = None
    usage: Usage | None = None
    #: What the verdict rests on beyond the alert (log signatures, tool results).
    evidence: tuple[Evidence, ...] = ()
    #: Actions the evidence rules out (a restart when the logs say it will not help);
    #: the policy holds any verdict to it.
    vetoed_actions: frozenset[str] = frozenset()
    investigation: InvestigationSummary | None = None
    #: Why a lesser analyzer answered (e.g. the single-shot LLM after an investigation).
    fallback_reason: str | None = None


class Analyzer(Protocol):
    """Turns one notification (plus optional live context) into a judgement."""

    name: str

    def judge(self, notification: Notification, context: Mapping[str, Any]) -> Judgement: ...


@dataclass(frozen=True, slots=True)
class AnalysisLink:
    """The analysis being made, for records written while judging (investigation steps)."""

    analysis_id: str
    notification_id: str | None
    alertnames: tuple[str, ...]


_LINK: ContextVar[AnalysisLink | None] = ContextVar("market_agent_analysis_link", default=None)


@contextlib.contextmanager
def linked_to(link: AnalysisLink) -> Iterator[None]:
    """Judge within this analysis: `current_link()` returns `link` meanwhile."""
    token = _LINK.set(link)
    try:
        yield
    finally:
        _LINK.reset(token)


def current_link() -> AnalysisLink | None:
    return _LINK.get()
