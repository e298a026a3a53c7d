"""`analyze` as a library call: inputs in, analyses (and problems) out, all audited."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from market_agent.analysis.analyzer import AnalysisService
from market_agent.inputs import InputProblem, Parsed, read_source
from market_agent.models import Analysis, Notification, new_id
from market_agent.redact import redact_model

if TYPE_CHECKING:  # importing the audit package costs ~10 ms that --no-audit need not pay
    from market_agent.audit import AuditLog

ContextProvider = Callable[[Notification], Mapping[str, Any]]


def analyze_sources(
    sources: Iterable[str],
    service: AnalysisService,
    *,
    audit: AuditLog | None = None,
    stdin: BinaryIO | None = None,
    context_for: ContextProvider | None = None,
) -> Iterator[Analysis | InputProblem]:
    """Analyse every notification in every source, in order; problems are yielded too."""
    for source in sources:
        for item in read_source(source, stdin):
            if isinstance(item, InputProblem):
                yield item
                continue
            yield analyze_one(item, service, audit=audit, context_for=context_for)


def analyze_one(
    parsed: Parsed,
    service: AnalysisService,
    *,
    audit: AuditLog | None = None,
    context_for: ContextProvider | None = None,
) -> Analysis:
    notification = parsed.notification
    notification_id = new_id()
    context = context_for(notification) if context_for is not None else {}
    analysis = service.analyze(
        notification, source=parsed.source, context=context, notification_id=notification_id
    )
    analysis = redact_model(analysis)  # the rules quote alert text; the result is printed
    if audit is not None:
        audit.append_many(
            [
                ("notification", notification_record(notification, notification_id, parsed)),
                ("analysis", analysis.to_json_dict()),
            ]
        )
    return analysis


def notification_record(
    notification: Notification, notification_id: str, parsed: Parsed | None = None
) -> dict[str, Any]:
    """The audit form of a notification (redacted by the audit log when written)."""
    record: dict[str, Any] = {
        "id": notification_id,
        "source": parsed.source if parsed else "webhook",
        "group_key": notification.group_key,
        "status": notification.status,
        "alertnames": sorted({alert.name for alert in notification.alerts}),
        "payload": notification.model_dump(mode="json", by_alias=True),
    }
    if parsed is not None and parsed.line is not None:
        record["line"] = parsed.line
    return record
