"""Cost of redaction on `listen`'s hot path, per notification (microseconds).

Run from the project root: `PYTHONPATH=. python bench/bench_redact.py [--repeat N]`
(PYTHONPATH picks the tree measured). The payload is a typical webhook notification
of five firing alerts built from `examples/alerts/`. Figures, each the best of
`--repeat` timeit runs:

- precheck: `may_hold_secrets` then (only when it says yes) `redact_payload`, on
  the ordinary payload: what the audit log pays for most notifications;
- walk: `redact_payload` alone on the same payload (warm label-value memo);
- walk+secret: the pre-check and the walk on the payload with one leaked password;
- prepare: `audit.prepare` of the notification record `listen` journals;
- analysis: `audit.prepare` of a rules analysis record of it.
"""

from __future__ import annotations

import argparse
import copy
import json
import timeit
from pathlib import Path
from typing import Any

from market_agent.audit import prepare
from market_agent.redact import may_hold_secrets, redact_payload

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "alerts"
NAMES = (
    "predictor-down",
    "high-error-rate",
    "high-latency",
    "memory-pressure",
    "stale-market-data",
)


def five_alert_payload() -> dict[str, Any]:
    payloads = [json.loads((EXAMPLES / f"{name}.json").read_text()) for name in NAMES]
    payload = payloads[0]
    payload["alerts"] = [alert for each in payloads for alert in each["alerts"]]
    return payload


def audited(payload: Any) -> Any:
    return redact_payload(payload) if may_hold_secrets(payload) else payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()

    from market_agent.analysis.rules import RuleAnalyzer
    from market_agent.analysis.run import notification_record
    from market_agent.models import Notification

    payload = five_alert_payload()
    leaky = copy.deepcopy(payload)
    leaky["alerts"][2]["annotations"]["description"] += " (login password=hunter2 failed)"
    notification = Notification.model_validate(payload)
    record = notification_record(notification, "0" * 32)
    verdict = RuleAnalyzer().judge(notification, {}).verdict
    analysis = {**dict(verdict), "source": "webhook", "group_key": notification.group_key}
    cases = {
        "precheck": lambda: audited(payload),
        "walk": lambda: redact_payload(payload),
        "walk+secret": lambda: audited(leaky),
        "prepare": lambda: prepare("notification", record),
        "analysis": lambda: prepare("analysis", analysis),
    }
    for name, call in cases.items():
        call()
        best = min(timeit.repeat(call, number=args.number, repeat=args.repeat))
        print(f"{name:12} {best / args.number * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
