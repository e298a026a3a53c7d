"""Evaluate an LLM on labelled alerts, side by side with the rule analyzer.

    python bench/eval_llm.py --base-url URL --model NAME [--structured-output MODE]
        [--limit N] [--data PATH] [--api-key-env VAR] [--timeout S]
        [--price-in USD] [--price-out USD] [--json]
        [--investigate [--prometheus-url URL] [--predictor-url URL]]

Runs every notification of a JSONL file of labelled notifications (default: the
development set `../shared/data/alerts-dev.jsonl` beside the project; line format in
its README: `{"expect": {"issue_type": [...], "label_severity": ...}, "payload":
{...}}`) through the rules and through the LLM analyzer (policy applied, as in
production), and prints: macro recall per issue class, severity agreement with the
alert's label, how often the policy overrode the model and on which field,
fallbacks by reason, latency p50/p95, tokens in/out and an estimated cost (prices
in USD per 1M tokens). Run it before switching the LLM on, or to compare models.
The API key comes from $OPENAI_API_KEY (or --api-key-env); none is needed for a
local server. Nothing is written to the audit log.

`--investigate` runs the LLM in investigation mode (`analysis.mode = "investigate"`,
default limits) with its read-only tools pointed at --prometheus-url and
--predictor-url, and adds to the LLM column the tool calls made and the
investigations by outcome (answered, partial, failed). Against a data set the
services describe nothing of these alerts, so this measures the cost and behaviour
of the loop (calls, tokens, latency, fallbacks), not its accuracy on live evidence.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "alerts-dev.jsonl"
#: Evaluation classes (as tests/test_rules_recall.py): a prediction counts when it is
#: one of the expected issue types; recall is averaged over the classes (macro).
CLASSES = {
    "availability": {"availability"},
    "resource": {"resource"},
    "performance/errors": {"performance", "errors"},
    "configuration/security": {"configuration", "security"},
}


@dataclass
class Tally:
    """What one analyzer did on the data set."""

    hits: dict[str, list[bool]] = field(default_factory=lambda: {c: [] for c in CLASSES})
    severity_agrees: list[bool] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    overrides: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    tokens_in: int = 0
    tokens_out: int = 0
    answered_by_llm: int = 0
    tool_calls: int = 0
    investigations: Counter[str] = field(default_factory=Counter)

    def add(self, row: dict[str, Any], analysis: Any, elapsed_ms: float) -> None:
        from market_agent.analysis.severity import severity_from_label

        expected = row["expect"]["issue_type"]
        self.hits[class_of(expected)].append(analysis.issue_type.value in expected)
        label = row["expect"].get("label_severity")
        self.severity_agrees.append(analysis.severity == severity_from_label(label))
        self.latencies_ms.append(elapsed_ms)
        self.overrides.update(o.field for o in analysis.policy_overrides)
        if analysis.fallback_reason:
            self.fallbacks[analysis.fallback_reason] += 1
        if analysis.analyzer == "llm":
            self.answered_by_llm += 1
        if analysis.investigation is not None:
            self.tool_calls += analysis.investigation.tool_calls
            self.investigations[analysis.investigation.outcome] += 1
        if analysis.usage is not None:
            self.tokens_in += analysis.usage.input_tokens or 0
            self.tokens_out += analysis.usage.output_tokens or 0

    def recall(self) -> dict[str, float]:
        return {c: sum(h) / len(h) for c, h in self.hits.items() if h}

    def summary(self, price_in: float, price_out: float) -> dict[str, Any]:
        recall = self.recall()
        n = len(self.latencies_ms)
        return {
            "alerts": n,
            "answered_by_llm": self.answered_by_llm,
            "macro_recall": round(sum(recall.values()) / len(recall), 3) if recall else None,
            "recall_by_class": {c: round(v, 3) for c, v in recall.items()},
            "severity_agreement": round(sum(self.severity_agrees) / n, 3) if n else None,
            "policy_overrides": dict(self.overrides.most_common()),
            "fallbacks": dict(self.fallbacks.most_common()),
            "latency_ms_p50": round(percentile(self.latencies_ms, 50), 1),
            "latency_ms_p95": round(percentile(self.latencies_ms, 95), 1),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": round((self.tokens_in * price_in + self.tokens_out * price_out) / 1e6, 4),
            "tool_calls": self.tool_calls,
            "investigations": dict(self.investigations.most_common()),
        }


def class_of(expected: Sequence[str]) -> str:
    for name, members in CLASSES.items():
        if set(expected) <= members:
            return name
    raise SystemExit(f"error: expected issue types {list(expected)} fit no evaluation class")


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


def rows(path: Path, limit: int | None) -> Iterator[dict[str, Any]]:
    try:
        lines = path.open(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"error: cannot read {path}: {exc.strerror or exc}") from None
    with lines:
        count = 0
        for number, line in enumerate(lines, 1):
            if limit is not None and count >= limit:
                return
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if "payload" not in row or "issue_type" not in row["expect"]:
                    raise KeyError("payload")
            except (ValueError, KeyError, TypeError):
                raise SystemExit(f"error: {path}:{number}: not a labelled notification") from None
            count += 1
            yield row


def build_services(args: argparse.Namespace) -> tuple[Any, Any]:
    from market_agent.analysis.factory import build_analysis_service
    from market_agent.settings import load_settings

    overrides = {
        "audit.enabled": False,
        "llm.enabled": True,
        "llm.base_url": args.base_url,
        "llm.model": args.model,
        "llm.structured_output": args.structured_output,
        "llm.api_key_env": args.api_key_env,
        "llm.timeout": args.timeout,
        "llm.requests_per_minute": 1_000_000,  # the evaluation paces itself
    }
    if args.investigate:
        overrides["analysis.mode"] = "investigate"
        overrides["prometheus.url"] = args.prometheus_url
        overrides["predictor.url"] = args.predictor_url
    settings = load_settings(overrides=overrides, environ={})
    if settings.llm.resolved_api_key() is None:
        settings.llm.api_key = "not-needed"  # type: ignore[assignment]
    return build_analysis_service(settings, use_llm=False), build_analysis_service(settings)


def evaluate(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from market_agent.models import Notification

    rules, llm = build_services(args)
    llm.warm()
    tallies = {"rules": Tally(), "llm": Tally()}
    for n, row in enumerate(rows(args.data, args.limit), 1):
        notification = Notification.model_validate(row["payload"])
        for name, service in (("rules", rules), ("llm", llm)):
            started = time.perf_counter()
            analysis = service.analyze(notification, source=row.get("id", f"line {n}"))
            tallies[name].add(row, analysis, (time.perf_counter() - started) * 1000)
        if not args.json and n % 25 == 0:
            print(f"... {n} alerts", file=sys.stderr)
    return {name: t.summary(args.price_in, args.price_out) for name, t in tallies.items()}


def print_table(results: dict[str, dict[str, Any]]) -> None:
    rules, llm = results["rules"], results["llm"]
    rows_out: list[tuple[str, Any, Any]] = [
        ("alerts", rules["alerts"], llm["alerts"]),
        ("answered by the LLM", "-", llm["answered_by_llm"]),
        ("macro recall", rules["macro_recall"], llm["macro_recall"]),
    ]
    rows_out += [
        (f"  recall {c}", rules["recall_by_class"].get(c), llm["recall_by_class"].get(c))
        for c in CLASSES
    ]
    rows_out += [
        ("severity agrees with the label", rules["severity_agreement"], llm["severity_agreement"]),
        ("latency p50 (ms)", rules["latency_ms_p50"], llm["latency_ms_p50"]),
        ("latency p95 (ms)", rules["latency_ms_p95"], llm["latency_ms_p95"]),
        ("tokens in / out", "-", f"{llm['tokens_in']} / {llm['tokens_out']}"),
        ("estimated cost (USD)", "-", llm["cost_usd"]),
    ]
    if llm["investigations"]:
        outcomes = ", ".join(f"{k} {v}" for k, v in llm["investigations"].items())
        rows_out += [("tool calls", "-", llm["tool_calls"]), ("investigations", "-", outcomes)]
    print(f"{'':<34} {'rules':>12} {'llm':>14}")
    for name, left, right in rows_out:
        print(f"{name:<34} {_cell(left):>12} {_cell(right):>14}")
    print("\npolicy overrides of the model, by field:")
    for name, count in llm["policy_overrides"].items() or [("(none)", "")]:
        print(f"  {name:<32} {count}")
    print("fallbacks to the rules, by reason:")
    for reason, count in llm["fallbacks"].items() or [("(none)", "")]:
        print(f"  {count!s:>5}  {reason}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="OpenAI-compatible /v1 URL")
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--structured-output",
        choices=["json_schema", "function_calling", "json_mode"],
        default="json_schema",
    )
    parser.add_argument("--limit", type=int, default=None, help="first N notifications only")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled JSONL")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per LLM call")
    parser.add_argument("--price-in", type=float, default=0.15, help="USD per 1M input tokens")
    parser.add_argument("--price-out", type=float, default=0.60, help="USD per 1M output tokens")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "--investigate", action="store_true", help="LLM in investigation mode (tools)"
    )
    parser.add_argument("--prometheus-url", default="http://127.0.0.1:9090")
    parser.add_argument("--predictor-url", default="http://127.0.0.1:8000")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results = evaluate(args)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
