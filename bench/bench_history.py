"""`history` on a generated 1,000,000-record audit log, against jq in the same run.

    python bench/bench_history.py [--records 1000000] [--runs 5] [--keep DIR]

Targets (issue 5):
- `history --alert NAME --json` no slower than `jq -c 'select(...)'` selecting the
  same records from the same file (median ratio <= 1.0), with peak RSS <= 100 MB;
- `history stats` <= 3 s; `history verify` <= 5 s.

The log is written in the audit log's exact format (hash chain included) with a
realistic mix: notifications with full webhook payloads, analyses, action steps and
escalations, over 30 days, for the seven predictor alerts and a few others.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import console_script, record, time_command

from market_agent.audit import GENESIS_HASH, canonical, chain_hash

ALERTS = [
    "PredictorDown",
    "PredictorHighErrorRate",
    "PredictorHighLatency",
    "PredictorStaleMarketData",
    "PredictorAccuracyDrop",
    "PredictorHighMemory",
    "PredictorRestartingTooOften",
    "CheckoutLatencyHigh",
    "DiskAlmostFull",
    "NodeDown",
]
TARGET = "PredictorDown"
JQ_FILTER = (
    "select(((.alertnames // []) | any(. == $n)) or ((.alerts // []) | any(.alertname == $n)))"
)


def incident(rng: random.Random, n: int) -> list[tuple[str, dict[str, Any]]]:
    name = rng.choice(ALERTS)
    status = "resolved" if rng.random() < 0.4 else "firing"
    nid, aid, xid = f"{n:08x}n" * 4, f"{n:08x}a" * 4, f"{n:08x}x" * 4
    labels = {
        "alertname": name,
        "instance": f"10.0.{n % 250}.{n % 7}:8000",
        "job": "market-predictor",
        "service": "market-predictor",
        "severity": rng.choice(["critical", "warning"]),
    }
    payload = {
        "version": "4",
        "status": status,
        "receiver": "market-agent",
        "groupKey": f'{{}}:{{alertname="{name}"}}',
        "groupLabels": {"alertname": name},
        "commonLabels": labels,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": {
                    "summary": f"{name} on {labels['instance']}",
                    "description": "Prometheus reports the condition for more than 1 minute.",
                },
                "startsAt": "2026-11-17T03:14:00.318Z",
                "fingerprint": f"{n:016x}",
            }
        ],
    }
    records: list[tuple[str, dict[str, Any]]] = [
        (
            "notification",
            {
                "id": nid,
                "source": "webhook",
                "group_key": payload["groupKey"],
                "status": status,
                "alertnames": [name],
                "payload": payload,
            },
        ),
        (
            "analysis",
            {
                "id": aid,
                "notification_id": nid,
                "source": "webhook",
                "status": status,
                "severity": "critical",
                "issue_type": "availability",
                "description": f"{name} is firing on {labels['instance']}.",
                "recommended_actions": ["Check /health", "Check the logs"],
                "proposed_action": "restart" if status == "firing" else "none",
                "confidence": 0.9,
                "requires_immediate_action": status == "firing",
                "alerts": [{"alertname": name, "status": status, "fingerprint": f"{n:016x}"}],
                "analyzer": "rules",
            },
        ),
    ]
    if status == "firing" and rng.random() < 0.5:
        identity = f"{n:016x}|2026-11-17T03:14:00.318000+00:00"  # Alert.identity()
        base = {
            "action": "restart",
            "action_id": xid,
            "analysis_id": aid,
            "notification_id": nid,
            "alertnames": [name],
            "trigger": "auto",
        }
        ok = rng.random() < 0.7
        records += [
            (
                "action",
                {**base, "step": "execute", "outcome": "started", "alert_keys": [identity]},
            ),
            ("action", {**base, "step": "execute", "outcome": "succeeded", "detail": "exit 0"}),
            ("action", {**base, "step": "verify", "outcome": "passed" if ok else "failed"}),
            (
                "action",
                {
                    **base,
                    "step": "result",
                    "outcome": "verified" if ok else "failed",
                    "elapsed_s": round(rng.uniform(2, 40), 3),
                    **({"recover_s": round(rng.uniform(2, 40), 3)} if ok else {}),
                },
            ),
        ]
        if not ok:
            records.append(
                ("escalation", {"action_id": xid, "alertnames": [name], "reason": "action_failed"})
            )
    return records


def generate(path: Path, count: int) -> None:
    rng = random.Random(5)
    start = datetime.now(UTC) - timedelta(days=30)
    step = timedelta(days=30) / count
    prev, seq, n = GENESIS_HASH, 0, 0
    with path.open("w") as out:
        while seq < count:
            lines = []
            for kind, fields in incident(rng, n):
                if seq == count:
                    break
                seq += 1
                ts = (start + step * seq).isoformat(timespec="microseconds").replace("+00:00", "Z")
                body = canonical({"seq": seq, "ts": ts, "kind": kind, **fields})
                digest = chain_hash(prev, body)
                lines.append(f'{{"hash":"{digest}","prev_hash":"{prev}",{body[1:]}\n')
                prev = digest
            out.write("".join(lines))
            n += 1


#: A small parent measures the child: a fork of this (large) process would inherit its
#: resident pages and inflate ru_maxrss. CPU time includes the child's own workers.
_MEASURE = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL);"
    "u = os.wait4(p.pid, 0)[2]; print(u.ru_maxrss, u.ru_utime + u.ru_stime)"
)


def measure(argv: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) of one run."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True, check=True)
    rss, cpu = out.stdout.split()
    return int(rss) / 1024, float(cpu)


def timed(argv: list[str], runs: int) -> list[float]:
    return time_command(argv, runs=runs, warmup=1)


def seqs(argv: list[str]) -> list[int]:
    out = subprocess.run(argv, capture_output=True, check=True).stdout
    return sorted(json.loads(line)["seq"] for line in out.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="write the log here and keep it")
    args = parser.parse_args()
    jq = shutil.which("jq")
    if jq is None:
        sys.exit("jq is needed: apt-get install -y jq")
    script = console_script()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        log = directory / "audit.jsonl"
        started = time.perf_counter()
        generate(log, args.records)
        size = log.stat().st_size / 1e6
        took = time.perf_counter() - started
        print(f"generated {args.records:,} records, {size:.0f} MB in {took:.1f} s")
        ours = [script, "--audit-log", str(log), "history", "--alert", TARGET, "--json"]
        theirs = [jq, "-c", "--arg", "n", TARGET, JQ_FILTER, str(log)]
        selected = seqs(ours)
        assert selected == seqs(theirs), "history and jq selected different records"
        print(f"both select the same {len(selected):,} records for {TARGET}")
        ratios, our_times, jq_times = [], [], []
        for _ in range(args.runs):  # alternate, so both see the same cache and load
            a, b = timed(ours, 1)[0], timed(theirs, 1)[0]
            our_times.append(a)
            jq_times.append(b)
            ratios.append(a / b)
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        rss, cpu = measure(ours)
        ours_median = statistics.median(our_times)
        print(f"history --alert --json  median {ours_median:6.2f} s  cpu {cpu:5.2f} s")
        print(f"jq -c select(...)       median {statistics.median(jq_times):6.2f} s")
        print(f"median ratio history/jq {statistics.median(ratios):6.3f}   (target <= 1.0)")
        print(f"history --alert peak RSS {rss:6.1f} MB   (target <= 100 MB)")
        n = f"{args.records:,} records"
        jq_median = statistics.median(jq_times)
        ratio = statistics.median(ratios)
        record(
            "history",
            f"--alert --json, {n}, median",
            round(ours_median, 2),
            "s",
            "<= jq",
            met=ratio <= 1.0,
            baseline=f"jq {jq_median:.2f} s (ratio {ratio:.3f})",
        )
        record(
            "history", "--alert --json peak RSS", round(rss, 1), "MB", "<= 100 MB", met=rss <= 100
        )
        base = [script, "--audit-log", str(log), "history"]
        for name, argv, limit in [
            ("history stats", [*base, "stats", "--json"], 3.0),
            ("history verify", [*base, "verify"], 5.0),
        ]:
            target = f"{limit:g} s"
            median = statistics.median(timed(argv, args.runs))
            rss, cpu = measure(argv)
            record(
                "history",
                f"{name}, {n}, median",
                round(median, 2),
                "s",
                f"<= {target}",
                met=median <= limit,
                baseline=f"CPU {cpu:.2f} s",
            )
            print(
                f"{name:<23} median {median:6.2f} s  cpu {cpu:5.2f} s  "
                f"peak RSS {rss:5.1f} MB (target <= {target})"
            )
        print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
