"""Generalisation of the rule analyzer: macro recall on the shared dev set of real alerts.

The dev set (`../shared/data/alerts-dev.jsonl` beside the project root, or the file
named by `MARKET_AGENT_ALERTS_DEV`) holds 517 alerts of many services, each with
the issue types its catalogue section allows. Recall is computed per class and
averaged over the four classes (macro), so the small classes count as much as
the large one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from market_agent.analysis.rules import RuleAnalyzer
from market_agent.models import Notification

# Read at collection: the autouse fixture in conftest.py clears MARKET_AGENT_* variables.
DEV_SET = Path(
    os.environ.get(
        "MARKET_AGENT_ALERTS_DEV", Path(__file__).parents[1].parent / "shared/data/alerts-dev.jsonl"
    )
)
MIN_MACRO_RECALL = 0.75

#: Evaluation classes: a prediction counts when it is one of the class's issue types.
CLASSES = {
    "availability": {"availability"},
    "resource": {"resource"},
    "performance/errors": {"performance", "errors"},
    "configuration/security": {"configuration", "security"},
}


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def _class_of(expected: list[str]) -> str:
    for name, members in CLASSES.items():
        if set(expected) <= members:
            return name
    raise AssertionError(f"expected issue types {expected} fit no evaluation class")


def recall_by_class(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Share of each class's alerts whose predicted issue type is one of the expected."""
    analyzer = RuleAnalyzer()
    hits: dict[str, list[bool]] = {name: [] for name in CLASSES}
    for row in rows:
        verdict = analyzer.judge(Notification.model_validate(row["payload"]), {}).verdict
        expected = row["expect"]["issue_type"]
        hits[_class_of(expected)].append(verdict.issue_type.value in expected)
    return {name: sum(found) / len(found) for name, found in hits.items() if found}


def test_macro_recall_on_dev_set() -> None:
    path = DEV_SET
    if not path.is_file():
        pytest.skip(f"dev set not found at {path} (set MARKET_AGENT_ALERTS_DEV to its path)")
    rows = list(_rows(path))
    per_class = recall_by_class(rows)
    macro = sum(per_class.values()) / len(per_class)
    report = ", ".join(f"{name} {value:.3f}" for name, value in per_class.items())
    print(f"\nmacro recall {macro:.3f} over {len(rows)} alerts: {report}")
    assert len(per_class) == len(CLASSES), f"a class has no alerts: {report}"
    assert macro >= MIN_MACRO_RECALL, f"macro recall {macro:.3f} < {MIN_MACRO_RECALL}: {report}"


def test_recall_helper_counts_misses() -> None:
    """The metric itself: a miss lowers its class's recall (the test above can fail)."""
    rows = [
        _row("HostOutOfMemory", "Host is out of memory", ["resource"]),
        _row("HostOutOfMemory", "Host is out of memory", ["availability"]),
    ]
    assert recall_by_class(rows) == {"resource": 1.0, "availability": 0.0}


def _row(name: str, summary: str, expected: list[str]) -> dict[str, Any]:
    labels = {"alertname": name, "severity": "warning", "job": "node"}
    payload = {
        "status": "firing",
        "alerts": [{"status": "firing", "labels": labels, "annotations": {"summary": summary}}],
    }
    return {"expect": {"issue_type": expected}, "payload": payload}
