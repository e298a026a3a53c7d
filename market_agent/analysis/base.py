"""The seam every analyzer plugs into."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from market_agent.analysis.severity import severity_from_label
from market_agent.models import Evidence, Notification, Usage, Verdict

#: Actions an analyzer may propose out of the box; configured actions extend it.
BUILTIN_ACTIONS = ("restart", "escalate", "none")

__all__ = ["BUILTIN_ACTIONS", "Analyzer", "Judgement", "severity_from_label"]


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


class Analyzer(Protocol):
    """Turns one notification (plus optional live context) into a judgement."""

    name: str

    def judge(self, notification: Notification, context: Mapping[str, Any]) -> Judgement: ...
