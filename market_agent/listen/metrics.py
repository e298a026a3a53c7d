"""The listener's Prometheus metrics, on a registry of their own (not the global one).

Names are a contract (dashboards and alerts use them); see README, "Metrics".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client import Metric

    from market_agent.audit import AuditLog

#: Every reason a webhook request can be refused; pre-set to 0 so rates work from start.
REJECT_REASONS = (
    "unauthorized",
    "method_not_allowed",
    "not_found",
    "too_large",
    "bad_json",
    "invalid",
    "queue_full",
    "journal_error",
    "internal",
)
LLM_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
#: Acknowledgement latency: from the request's headers to the answer (journal included).
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class ListenMetrics:
    """Counters and gauges of one listener process."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # `*_created` series only double the scrape size. The ignore: prometheus_client
        # leaves this function unannotated.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.received = Counter(
            "market_agent_notifications_received",
            "Notifications acknowledged (journaled) for analysis.",
            ["status"],
            registry=r,
        )
        self.duplicate = Counter(
            "market_agent_notifications_duplicate",
            "Notifications whose alerts were all seen before; acknowledged, not analysed again.",
            registry=r,
        )
        self.rejected = Counter(
            "market_agent_notifications_rejected",
            "Webhook requests refused, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.recovered = Counter(
            "market_agent_notifications_recovered",
            "Acknowledged notifications found unanalysed in the audit log at start.",
            registry=r,
        )
        self.analyses = Counter(
            "market_agent_analyses",
            "Analyses journaled, by analyzer and severity.",
            ["analyzer", "severity"],
            registry=r,
        )
        self.analysis_failures = Counter(
            "market_agent_analysis_failures",
            "Notifications whose analysis failed or could not be journaled.",
            registry=r,
        )
        self.analysis_restarts = Counter(
            "market_agent_analysis_process_restarts",
            "Times the analysis process died and was started again.",
            registry=r,
        )
        self.llm_latency = Histogram(
            "market_agent_llm_latency_seconds",
            "Latency of LLM analyses that succeeded.",
            buckets=LLM_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "market_agent_analysis_queue_depth",
            "Acknowledged notifications waiting for analysis.",
            registry=r,
        )
        self.last_notification = Gauge(
            "market_agent_last_notification_timestamp_seconds",
            "Unix time of the last notification acknowledged.",
            registry=r,
        )
        self.journal_commits = Counter(
            "market_agent_journal_commits",
            "Audit log group commits (one write and one fsync each).",
            registry=r,
        )
        self.webhook_seconds = Histogram(
            "market_agent_webhook_duration_seconds",
            "Time from a webhook request's arrival to its answer, by status code class.",
            ["code"],
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.journal_records = Counter(
            "market_agent_journal_records",
            "Records written to the audit log by group commits.",
            registry=r,
        )

    def watch_audit(self, audit: AuditLog) -> None:
        """Expose the audit log's head, read at each scrape: an external witness."""
        self.registry.register(AuditHeadCollector(audit))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class AuditHeadCollector(Collector):
    """`market_agent_audit_records` and `market_agent_audit_head_info{hash}`.

    Prometheus keeps what it scraped, so a later truncation or rewrite of the log
    contradicts its own history: `history verify --expect-head HASH` checks a hash
    taken from there. The count is the newest record's seq (it runs on across
    rotation).
    """

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def describe(self) -> Iterator[Metric]:
        """The names, without reading the log (the registry asks at registration)."""
        yield GaugeMetricFamily("market_agent_audit_records", "")
        yield InfoMetricFamily("market_agent_audit_head", "")

    def collect(self) -> Iterator[Metric]:
        try:
            seq, digest = self.audit.head()
        except Exception:  # a scrape must not fail because the log cannot be read
            return
        records = GaugeMetricFamily(
            "market_agent_audit_records",
            "Records appended to the audit log so far (the newest record's seq).",
            value=seq,
        )
        head = InfoMetricFamily(
            "market_agent_audit_head",
            "Hash of the newest audit log record (for history verify --expect-head).",
            value={"hash": digest},
        )
        yield records
        yield head
