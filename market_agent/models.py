"""Typed data: Alertmanager webhook payloads (version 4) and analysis results.

The `Analysis` JSON shape is a documented contract (README, "JSON output").
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

AlertStatus = Literal["firing", "resolved"]


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    @classmethod
    def highest(cls, severities: list[Severity]) -> Severity:
        return max(severities, key=lambda s: s.rank, default=cls.INFO)


_SEVERITY_RANK = {
    Severity.INFO: 0,
    Severity.LOW: 1,
    Severity.MEDIUM: 2,
    Severity.HIGH: 3,
    Severity.CRITICAL: 4,
}


class IssueType(StrEnum):
    AVAILABILITY = "availability"
    PERFORMANCE = "performance"
    ERRORS = "errors"
    RESOURCE = "resource"
    CONFIGURATION = "configuration"
    SECURITY = "security"
    DATA = "data"
    UNKNOWN = "unknown"


class _Payload(BaseModel):
    """Alertmanager payloads: camelCase on the wire, unknown fields tolerated."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


class Alert(_Payload):
    status: AlertStatus = "firing"
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = Field(default=None, alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""
    #: Alertmanager's state when the alert came from its API (`GET /api/v2/alerts`):
    #: `active`, `suppressed` (silenced or inhibited) or `unprocessed`. Webhook
    #: notifications do not carry it (Alertmanager sends no suppressed alert).
    state: str | None = None
    silenced_by: list[str] = Field(default_factory=list, alias="silencedBy")
    inhibited_by: list[str] = Field(default_factory=list, alias="inhibitedBy")

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def suppressed(self) -> bool:
        return self.state == "suppressed" or bool(self.silenced_by or self.inhibited_by)

    def identity(self, *, with_status: bool = False) -> str:
        """One alert occurrence, whatever group it arrives in: `fingerprint|startsAt`.

        The fingerprint is Alertmanager's, or a hash of the labels when it sent none.
        `with_status` gives `fingerprint|status|startsAt` (a resolved re-send differs).
        """
        fingerprint = self.fingerprint or label_fingerprint(self.labels)
        starts_at = self.starts_at.isoformat() if self.starts_at else ""
        if with_status:
            return f"{fingerprint}|{self.status}|{starts_at}"
        return f"{fingerprint}|{starts_at}"


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable stand-in for Alertmanager's fingerprint: a hash of the sorted labels."""
    canonical = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return "labels:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Notification(_Payload):
    """One Alertmanager webhook notification (payload version 4)."""

    version: str = "4"
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    status: AlertStatus
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[Alert] = Field(min_length=1)

    @property
    def firing(self) -> list[Alert]:
        return [alert for alert in self.alerts if alert.status == "firing"]


class ApiAlertStatus(_Payload):
    state: str = "active"
    silenced_by: list[str] = Field(default_factory=list, alias="silencedBy")
    inhibited_by: list[str] = Field(default_factory=list, alias="inhibitedBy")


class ApiAlert(_Payload):
    """An alert as `GET /api/v2/alerts` (and `amtool -o json alert query`) returns it."""

    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = Field(default=None, alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""
    status: ApiAlertStatus = Field(default_factory=ApiAlertStatus)

    def to_alert(self) -> Alert:
        return Alert(
            status="firing",
            labels=self.labels,
            annotations=self.annotations,
            startsAt=self.starts_at,
            endsAt=self.ends_at,
            generatorURL=self.generator_url,
            fingerprint=self.fingerprint,
            state=self.status.state,
            silencedBy=self.status.silenced_by,
            inhibitedBy=self.status.inhibited_by,
        )


def notification_from_api_alerts(api_alerts: list[ApiAlert]) -> Notification:
    """Wrap an `/api/v2/alerts` list as one firing group, as Alertmanager would."""
    alerts = [api_alert.to_alert() for api_alert in api_alerts]
    common = dict(alerts[0].labels)
    for alert in alerts[1:]:
        common = {k: v for k, v in common.items() if alert.labels.get(k) == v}
    return Notification(
        status="firing",
        receiver="api-v2-alerts",
        groupKey="api-v2-alerts:" + ",".join(sorted(a.fingerprint for a in alerts)),
        commonLabels=common,
        alerts=alerts,
    )


def new_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class AlertSummary(BaseModel):
    alertname: str
    status: AlertStatus
    severity: str | None
    fingerprint: str
    starts_at: datetime | None
    summary: str
    #: Alertmanager's state (`active`, `suppressed`, ...) when known, and by what.
    state: str | None = None
    silenced_by: list[str] = Field(default_factory=list)
    inhibited_by: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, alert: Alert) -> AlertSummary:
        return cls(
            alertname=alert.name,
            status=alert.status,
            severity=alert.labels.get("severity"),
            fingerprint=alert.fingerprint,
            starts_at=alert.starts_at,
            summary=bounded_text(alert.annotations.get("summary", ""), MAX_SUMMARY_CHARS),
            state=alert.state,
            silenced_by=alert.silenced_by,
            inhibited_by=alert.inhibited_by,
        )


#: Bounds on free text in an analysis: alert text and model output are unbounded.
MAX_DESCRIPTION_CHARS = 1000
MAX_STEP_CHARS = 300
MAX_STEPS = 8
MAX_SUMMARY_CHARS = 300
TRUNCATED = " […truncated]"


def bounded_text(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marked when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


class PolicyOverride(BaseModel):
    """One change the policy made to a model's verdict (`market_agent.analysis.policy`)."""

    field: str
    model: Any
    final: Any
    #: What the rule analyzer said for the same field.
    rule: Any


class Evidence(BaseModel):
    """One finding an analysis rests on: a log signature, a metric, an investigation step."""

    #: Where it came from: `logs`, `metrics`, `health`, or `investigation:<step id>`.
    source: str
    summary: str
    count: int | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class InvestigationSummary(BaseModel):
    """How an investigation (`analysis.mode = "investigate"`) went; its steps are
    `investigation_step` audit records linked by the analysis id."""

    #: `answered`: the model gave its verdict; `partial`: a limit stopped the tool
    #: calls and the verdict rests on what was gathered; `failed`: no usable verdict.
    outcome: Literal["answered", "partial", "failed"]
    tool_calls: int
    #: The limit that stopped it (`max_tool_calls`, `deadline`, `tokens`), if any.
    limit: str | None = None
    elapsed_ms: float


class Usage(BaseModel):
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float


class Verdict(BaseModel):
    """What an analyzer decides about one notification."""

    issue_detected: bool
    severity: Severity
    issue_type: IssueType
    description: str
    recommended_actions: list[str] = Field(default_factory=list)
    proposed_action: str = "none"
    confidence: float = Field(ge=0.0, le=1.0)
    requires_immediate_action: bool = False

    @field_validator("description")
    @classmethod
    def _description_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("description must not be empty")
        return value

    def bounded(self) -> Verdict:
        """This verdict with its free text within the documented bounds."""
        steps = [bounded_text(s, MAX_STEP_CHARS) for s in self.recommended_actions[:MAX_STEPS]]
        description = bounded_text(self.description, MAX_DESCRIPTION_CHARS)
        if description == self.description and steps == self.recommended_actions:
            return self
        return self.model_copy(update={"description": description, "recommended_actions": steps})


class Analysis(Verdict):
    """One analysed notification: the `--json` record and the audit log entry."""

    id: str = Field(default_factory=new_id)
    created_at: datetime = Field(default_factory=utc_now)
    source: str
    group_key: str
    status: AlertStatus
    alerts: list[AlertSummary]
    analyzer: Literal["llm", "rules"]
    model: str | None = None
    fallback_reason: str | None = None
    usage: Usage | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    notification_id: str | None = None
    #: What the policy changed in the LLM's verdict (empty for the rules).
    policy_overrides: list[PolicyOverride] = Field(default_factory=list)
    #: What the verdict rests on beyond the alert's labels (log signatures, tool results).
    evidence: list[Evidence] = Field(default_factory=list)
    #: Set when the LLM investigated before answering (`analyze --investigate`).
    investigation: InvestigationSummary | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
