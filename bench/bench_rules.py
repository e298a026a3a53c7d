"""Throughput of the rule analyzer: single-alert notifications through `judge`.

Run: `python bench/bench_rules.py [--rounds N] [--repeat N]` from the project root.
Reads the dev set (`../shared/data/alerts-dev.jsonl` beside the project, or
`$MARKET_AGENT_ALERTS_DEV`); payload parsing (pydantic) happens before any clock
starts. Two figures, alerts per second, each the median of several timed passes:

- cold: the 517 distinct alerts, each judged as if never seen: the per-alert and
  per-text memos are cleared right before every alert (inside the timed loop).
  The word memos stay warm after the first pass: alert vocabulary is bounded.
- warm: the dev set repeated with every memo warm, as when Alertmanager re-sends
  the alerts that keep firing.

The very first pass (the table just loaded, every memo empty) is printed too.

`--dump-verdicts FILE` times nothing: it writes the full verdict of every dev-set
alert (alone, in groups of three, resolved, managed under a few live contexts) as
JSON lines, so that an optimisation can be checked byte for byte: dump before,
dump after, `cmp` the two files.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import record

from market_agent.analysis.rules import RuleAnalyzer
from market_agent.models import Notification

DEFAULT = Path(__file__).resolve().parents[2] / "shared/data/alerts-dev.jsonl"
TARGET = 20_000  # alerts/s, in-process (the requirement)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed passes per figure")
    parser.add_argument("--repeat", type=int, default=8, help="dev set copies per warm pass")
    parser.add_argument("--dump-verdicts", type=Path, metavar="FILE", help="see above")
    args = parser.parse_args()
    path = Path(os.environ.get("MARKET_AGENT_ALERTS_DEV", DEFAULT))
    if not path.is_file():
        print(f"dev set not found: {path}", file=sys.stderr)
        return 2
    with path.open(encoding="utf-8") as lines:
        payloads = [json.loads(line)["payload"] for line in lines]
    if args.dump_verdicts:
        return dump_verdicts(payloads, args.dump_verdicts)
    notifications = [Notification.model_validate(payload) for payload in payloads]
    analyzer = RuleAnalyzer()
    n = len(notifications)
    first = judge_all(analyzer, notifications, cold=True)
    print(f"first pass, {n} distinct alerts, every memo empty: {first:>9,.0f} alerts/s")
    cold = [judge_all(analyzer, notifications, cold=True) for _ in range(args.rounds)]
    show(f"cold: {n} distinct alerts, per-alert/per-text memos cleared", cold)
    stream = notifications * args.repeat
    warm = [judge_all(analyzer, stream, cold=False) for _ in range(args.rounds)]
    show(f"warm: {len(stream)} alerts (dev set x{args.repeat}), memos warm", warm)
    for figure, runs in (
        (f"{n} distinct alerts, cold caches, median of {args.rounds}", cold),
        (f"repeated alerts (Alertmanager re-sends), median of {args.rounds}", warm),
    ):
        median = round(statistics.median(runs))
        target = f">= {TARGET:,}/s"
        record("rule analyzer in-process", figure, median, "alerts/s", target, met=median >= TARGET)
    return 0


def judge_all(analyzer: RuleAnalyzer, notifications: list[Notification], *, cold: bool) -> float:
    """Alerts per second over one pass (each notification holds one alert)."""
    forget = analyzer.table.matcher.forget_alerts
    judge = analyzer.judge
    start = time.perf_counter()
    if cold:
        for notification in notifications:
            forget()
            judge(notification, {})
    else:
        for notification in notifications:
            judge(notification, {})
    return len(notifications) / (time.perf_counter() - start)


CONTEXTS = [
    {"predictor": {"reachable": False, "error": "timed out"}},
    {"predictor": {"reachable": True, "healthy": True}},
    {"metrics": {"feed_lag_seconds": 900, "accuracy": 0.9}},
    {"metrics": {"feed_lag_seconds": 5, "accuracy": 0.5}},
    {"metrics": {"up": 1, "error_ratio": 0.01, "p95_latency_seconds": 0.2, "accuracy": 0.95}},
]


def dump_verdicts(payloads: list[dict[str, Any]], out: Path) -> int:
    """Write the verdict of every case below as one JSON line (cases in a fixed order)."""
    alerts = [alert for payload in payloads for alert in payload["alerts"]]
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [(p, {}) for p in payloads]
    for i in range(0, len(alerts) - 2, 3):
        group = alerts[i : i + 3]
        cases.append(({"status": "firing", "alerts": group}, {}))
        resolved = [{**alert, "status": "resolved"} for alert in group]
        cases.append(({"status": "resolved", "alerts": resolved}, {}))
    for i, alert in enumerate(alerts[::5]):
        managed = {**alert, "labels": {**alert["labels"], "job": "market-predictor"}}
        name = managed["labels"].get("alertname", "")
        history = {name: {"restart": {"recent": [False, False, True, False]}}}
        for context in [{}, *CONTEXTS, {"effectiveness": history}][i % 3 :: 3]:
            cases.append(({"status": "firing", "alerts": [managed]}, context))
    analyzer = RuleAnalyzer()
    with out.open("w", encoding="utf-8") as lines:
        for payload, context in cases:
            verdict = analyzer.judge(Notification.model_validate(payload), context).verdict
            lines.write(json.dumps(verdict.model_dump(mode="json"), sort_keys=True) + "\n")
    print(f"{len(cases)} verdicts written to {out}")
    return 0


def show(name: str, runs: list[float]) -> None:
    print(
        f"{name:<62} median {statistics.median(runs):>7,.0f} alerts/s  "
        f"(best {max(runs):,.0f}, worst {min(runs):,.0f}, {len(runs)} passes)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
