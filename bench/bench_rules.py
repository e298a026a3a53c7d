"""Throughput of the rule analyzer: single-alert notifications through `judge`.

Run: `python bench/bench_rules.py [N]` from the project root. Reads the dev set
(`../shared/data/alerts-dev.jsonl` beside the project, or `$MARKET_AGENT_ALERTS_DEV`),
repeats it to about N alerts (default 50,000) and prints alerts per second.
Payload parsing (pydantic) happens before the clock starts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from market_agent.analysis.rules import RuleAnalyzer
from market_agent.models import Notification

DEFAULT = Path(__file__).resolve().parents[2] / "shared/data/alerts-dev.jsonl"


def load(path: Path) -> list[Notification]:
    with path.open(encoding="utf-8") as lines:
        return [Notification.model_validate(json.loads(line)["payload"]) for line in lines]


def main() -> int:
    target = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    path = Path(os.environ.get("MARKET_AGENT_ALERTS_DEV", DEFAULT))
    if not path.is_file():
        print(f"dev set not found: {path}", file=sys.stderr)
        return 2
    notifications = load(path)
    batch = notifications * max(1, round(target / len(notifications)))
    analyzer = RuleAnalyzer()
    for notification in notifications:  # warm-up: built-in table load, word memo
        analyzer.judge(notification, {})
    start = time.perf_counter()
    for notification in batch:
        analyzer.judge(notification, {})
    elapsed = time.perf_counter() - start
    print(f"{len(batch)} alerts in {elapsed:.2f} s: {len(batch) / elapsed:,.0f} alerts/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
