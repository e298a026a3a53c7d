"""Investigation mode: the LLM may call read-only tools before it gives its verdict.

`InvestigatingAnalyzer` is the single-shot `LLMAnalyzer` with a tool loop in front
(LangChain tool calling: `bind_tools`, `ToolMessage`). Every limit is enforced here,
never left to the model: tool calls (`max_tool_calls`), one wall-clock deadline for
the whole investigation, tokens read and written, the size of each tool result. A
quarter of the deadline and of the token budgets is kept for the verdict: once the
tool phase has used the rest, or a call beyond `max_tool_calls` is asked for, the
model is asked for its verdict with the tools taken away (a *partial* answer).

Every tool call is an `investigation_step` audit record linked to the analysis. Any
failure (the model's, a malformed or unknown tool call, a limit with no verdict, the
audit log) ends the investigation: the single-shot LLM answers instead, then the
rules, each with a `fallback_reason`. A tool that fails (a PromQL error, a log search
that times out) is a result: the model is told and may go on.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Any, Literal

from market_agent.analysis.base import Judgement, current_link
from market_agent.analysis.llm import (
    MIN_REQUEST_SECONDS,
    WAITED_FOR_A_SLOT,
    LLMAnalyzer,
    LLMFailure,
    _json_of,
    _text_of,
    describe_llm_error,
    parse_verdict,
)
from market_agent.analysis.policy import ActionCatalog, ActionInfo
from market_agent.analysis.prompting import (
    SCHEMA_NAME,
    build_user_prompt,
    system_prompt,
    verdict_schema,
)
from market_agent.analysis.tools import ToolArgumentsError, Toolbox, ToolError
from market_agent.audit.investigation import STEP_KIND, step_fields
from market_agent.models import (
    Evidence,
    InvestigationSummary,
    Notification,
    Usage,
    bounded_text,
)
from market_agent.redact import redact_text
from market_agent.settings import InvestigationSettings, LLMSettings

if TYPE_CHECKING:
    from market_agent.audit import AuditLog

#: Share of the deadline and of the token budgets kept for the verdict.
ANSWER_SHARE = 0.25
MAX_EVIDENCE = 10
MAX_FINDING_CHARS = 300
#: Characters of a malformed call's raw arguments kept in its step record.
MAX_RAW_ARGUMENTS = 500
_FENCE_TAG = re.compile(r"<(?=\s*/?\s*tool_data\b)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Step:
    """One tool call: what was asked, what came back (or why not)."""

    number: int
    tool: str
    arguments: Mapping[str, Any]
    result: str
    elapsed_ms: float
    error: str | None = None


#: Where steps go as they happen (the audit log; tests may collect them).
StepSink = Callable[[Step], None]


class AuditSteps:
    """A `StepSink` writing `investigation_step` records linked to the current analysis."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def __call__(self, step: Step) -> None:
        link = current_link()
        fields = step_fields(
            analysis_id=link.analysis_id if link else None,
            notification_id=link.notification_id if link else None,
            alertnames=link.alertnames if link else (),
            step=step.number,
            tool=step.tool,
            arguments=step.arguments,
            result=step.result,
            elapsed_ms=step.elapsed_ms,
            error=step.error,
        )
        self.audit.append(STEP_KIND, fields)


class InvestigationFailure(Exception):
    """The investigation gave no usable verdict; the message says why."""

    def __init__(self, message: str, summary: InvestigationSummary) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass
class _Run:
    """One investigation's spending against its limits."""

    limits: InvestigationSettings
    started: float
    steps: list[Step] = field(default_factory=list)
    #: Tool calls carried out (refused ones are steps, not calls).
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    #: The limit that ended the tool phase, if one did.
    stopped_by: str | None = None

    @property
    def end(self) -> float:
        return self.started + self.limits.deadline

    @property
    def tool_phase_end(self) -> float:
        return self.end - self.limits.deadline * ANSWER_SHARE

    def check_limits(self) -> str | None:
        """End the tool phase when its share of time or tokens is spent."""
        if self.stopped_by is None:
            keep = 1 - ANSWER_SHARE
            if self.tool_phase_end - time.monotonic() <= MIN_REQUEST_SECONDS:
                self.stopped_by = "deadline"
            elif (
                self.input_tokens >= self.limits.max_input_tokens * keep
                or self.output_tokens >= self.limits.max_output_tokens * keep
            ):
                self.stopped_by = "tokens"
        return self.stopped_by

    def spend(self, message: Any) -> None:
        meta = getattr(message, "usage_metadata", None) or {}
        self.input_tokens += int(meta.get("input_tokens") or 0)
        self.output_tokens += int(meta.get("output_tokens") or 0)

    def elapsed_ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 1)

    def summary(self, outcome: Literal["answered", "partial", "failed"]) -> InvestigationSummary:
        return InvestigationSummary(
            outcome=outcome,
            tool_calls=self.calls,
            limit=self.stopped_by,
            elapsed_ms=self.elapsed_ms(),
        )

    def failure(self, why: str) -> InvestigationFailure:
        return InvestigationFailure(why, self.summary("failed"))


class InvestigatingAnalyzer(LLMAnalyzer):
    """An `LLMAnalyzer` whose model may call `toolbox`'s tools first, within `limits`."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        limits: InvestigationSettings,
        toolbox: Toolbox,
        record: StepSink | None = None,
        actions: ActionCatalog | None = None,
    ) -> None:
        super().__init__(settings, actions=actions)
        self.limits = limits
        self.toolbox = toolbox
        self.record = record

    def judge(self, notification: Notification, context: Mapping[str, Any]) -> Judgement:
        chat = self._client()  # LangChain's import is not the investigation's time
        run = _Run(self.limits, time.monotonic())
        try:
            return self._investigate(chat, notification, context, run)
        except InvestigationFailure as failure:
            why = f"investigation failed: {failure}"
            try:
                judgement = super().judge(notification, context)
            except LLMFailure as exc:
                raise LLMFailure(f"{why}; single-shot LLM: {exc}") from exc
            return dataclasses.replace(
                judgement,
                fallback_reason=f"{why}; the single-shot LLM answered",
                investigation=failure.summary,
            )

    def _investigate(
        self, chat: Any, notification: Notification, context: Mapping[str, Any], run: _Run
    ) -> Judgement:
        if not self._slots.acquire(timeout=max(0.0, run.end - time.monotonic())):
            raise run.failure(WAITED_FOR_A_SLOT)
        try:
            self._check_breaker()
            allowed = self.actions.allowed_for(notification)
            messages = self._opening(notification, context, allowed)
            verdict_tool = _verdict_tool([a.name for a in allowed])
            tools = [*self.toolbox.specs(), verdict_tool]
            while True:
                answering = run.check_limits() is not None
                offered = [verdict_tool] if answering else tools
                message = self._request(chat, messages, offered, answering, run)
                messages.append(message)
                data = _verdict_in(message)
                if data is not None:
                    return self._judgement(data, run)
                if answering:
                    raise run.failure(f"{run.stopped_by} limit reached and no verdict given")
                for call in self._tool_calls(message, run):
                    messages.append(self._carry_out(call, run))
        except LLMFailure as exc:
            raise run.failure(str(exc)) from None
        finally:
            self._slots.release()

    def _opening(
        self, notification: Notification, context: Mapping[str, Any], allowed: Sequence[ActionInfo]
    ) -> list[Any]:
        managed = self.actions.managed_service
        system = system_prompt(
            tuple((a.name, a.does) for a in allowed),
            tuple(tuple(sorted(m.items())) for m in managed),
            False,
        )
        guide = _guide().substitute(
            max_tool_calls=self.limits.max_tool_calls, verdict_tool=SCHEMA_NAME
        )
        human = build_user_prompt(notification, context, managed_service=managed)
        return [("system", f"{system}\n{guide}"), ("human", human)]

    def _request(
        self, chat: Any, messages: list[Any], tools: list[Any], answering: bool, run: _Run
    ) -> Any:
        from market_agent.analysis.deadline import deadline as deadline_scope

        until = run.end if answering else run.tool_phase_end
        left = min(self.settings.timeout, until - time.monotonic())
        if left <= MIN_REQUEST_SECONDS:
            raise run.failure(f"deadline of {self.limits.deadline:g} s reached")
        output_left = self.limits.max_output_tokens - run.output_tokens
        if output_left <= 0 or run.input_tokens >= self.limits.max_input_tokens:
            raise run.failure("token limit reached")
        self._spend_budget()
        choice = SCHEMA_NAME if answering else "auto"
        runnable = chat.bind_tools(tools, tool_choice=choice)
        max_tokens = min(self.settings.max_tokens, output_left)
        try:
            with deadline_scope(time.monotonic() + left):
                message = runnable.invoke(messages, timeout=left, max_tokens=max_tokens)
        except Exception as exc:
            self._after_failure(exc)
            raise run.failure(describe_llm_error(exc, left)) from exc
        run.spend(message)
        return message

    def _tool_calls(self, message: Any, run: _Run) -> list[dict[str, Any]]:
        for bad in getattr(message, "invalid_tool_calls", None) or []:
            name = str(bad.get("name") or "?")
            raw = {"raw": str(bad.get("args") or "")[:MAX_RAW_ARGUMENTS]}
            self._step(run, name, raw, "", 0.0, "malformed arguments (not a JSON object)")
            raise run.failure(f"the model's call to {name!r} has malformed arguments")
        calls = list(getattr(message, "tool_calls", None) or [])
        if not calls:
            text = _text_of(getattr(message, "content", ""))
            raise run.failure(
                "the model gave neither a tool call nor a verdict"
                + (" (empty answer)" if not text.strip() else "")
            )
        return calls

    def _carry_out(self, call: Mapping[str, Any], run: _Run) -> Any:
        from langchain_core.messages import ToolMessage

        name, arguments = str(call.get("name")), call.get("args") or {}
        call_id = str(call.get("id") or "")
        refusal = self._refusal(run)
        if refusal is not None:
            self._step(run, name, arguments, "", 0.0, f"refused: {refusal}")
            text = f"refused: {refusal}; give your verdict now with {SCHEMA_NAME}"
            return ToolMessage(text, tool_call_id=call_id)
        if name not in self.toolbox.tools:
            self._step(run, name, arguments, "", 0.0, "unknown tool")
            raise run.failure(f"the model called an unknown tool {name[:60]!r}")
        run.calls += 1
        started = time.monotonic()
        timeout = min(self.limits.tool_timeout, run.tool_phase_end - started)
        error = None
        try:
            result = self.toolbox.call(name, arguments, timeout=timeout)
        except ToolArgumentsError as exc:
            self._step(run, name, arguments, "", _ms(started), f"bad arguments: {exc}")
            raise run.failure(f"the model's call to {name!r} has bad arguments: {exc}") from None
        except ToolError as exc:
            error = bounded_text(str(exc), self.limits.max_result_chars)
            result = json.dumps({"error": error})
        step = self._step(run, name, arguments, result, _ms(started), error)
        return ToolMessage(_fenced(step), tool_call_id=call_id)

    def _refusal(self, run: _Run) -> str | None:
        if run.calls >= self.limits.max_tool_calls:
            run.stopped_by = run.stopped_by or "max_tool_calls"
            return f"the limit of {self.limits.max_tool_calls} tool calls is reached"
        if run.check_limits() is not None:
            return f"the {run.stopped_by} limit is reached"
        return None

    def _step(
        self,
        run: _Run,
        tool: str,
        arguments: Any,
        result: str,
        elapsed_ms: float,
        error: str | None,
    ) -> Step:
        args = arguments if isinstance(arguments, dict) else {"raw": str(arguments)}
        shown = json.dumps(args, ensure_ascii=False, default=str)
        if len(shown) > MAX_RAW_ARGUMENTS * 4:  # the model's, unbounded: keep the start
            args = {"raw": shown[:MAX_RAW_ARGUMENTS]}
        step = Step(
            len(run.steps) + 1,
            redact_text(tool[:60]),
            args,
            redact_text(result),
            elapsed_ms,
            redact_text(error) if error else None,
        )
        run.steps.append(step)
        if self.record is not None:
            try:
                self.record(step)
            except Exception as exc:  # a step that cannot be audited must not be used
                raise run.failure(f"investigation step not audited: {exc}") from None
        return step

    def _judgement(self, data: Any, run: _Run) -> Judgement:
        cited = data.pop("evidence", None) if isinstance(data, dict) else None
        verdict = parse_verdict(data)
        usage = Usage(
            input_tokens=run.input_tokens,
            output_tokens=run.output_tokens,
            latency_ms=run.elapsed_ms(),
        )
        return Judgement(
            verdict,
            analyzer="llm",
            model=self.settings.model,
            usage=usage,
            evidence=_evidence(cited, run.steps),
            investigation=run.summary("partial" if run.stopped_by else "answered"),
        )


def _verdict_in(message: Any) -> Any:
    """The verdict's data when the message gives one (the verdict tool, or JSON text
    with no tool call); None when it only asks for tools."""
    for call in getattr(message, "tool_calls", None) or []:
        if call.get("name") == SCHEMA_NAME:
            return call.get("args")
    invalid = getattr(message, "invalid_tool_calls", None) or []
    for bad in invalid:
        if bad.get("name") == SCHEMA_NAME:
            return _json_of(str(bad.get("args") or ""))
    text = _text_of(getattr(message, "content", ""))
    if not (getattr(message, "tool_calls", None) or invalid) and text.strip():
        return _json_of(text)
    return None


def _verdict_tool(actions: Sequence[str]) -> dict[str, Any]:
    schema = verdict_schema(actions)
    finding = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "step": {"type": "integer", "minimum": 1},
            "finding": {"type": "string", "maxLength": MAX_FINDING_CHARS},
        },
        "required": ["step", "finding"],
    }
    schema["properties"]["evidence"] = {
        "type": "array",
        "maxItems": MAX_EVIDENCE,
        "items": finding,
    }
    function = {
        "name": SCHEMA_NAME,
        "description": "Your verdict on the notification, with the steps it rests on.",
        "parameters": schema,
    }
    return {"type": "function", "function": function}


def _evidence(cited: Any, steps: Sequence[Step]) -> tuple[Evidence, ...]:
    """The steps the model cites that exist and succeeded, each once."""
    usable = {step.number: step for step in steps if step.error is None and step.result}
    found: dict[int, Evidence] = {}
    for item in cited[:MAX_EVIDENCE] if isinstance(cited, list) else []:
        number = item.get("step") if isinstance(item, dict) else None
        if not isinstance(number, int) or number not in usable or number in found:
            continue
        finding = item.get("finding")
        text = finding if isinstance(finding, str) and finding.strip() else usable[number].tool
        summary = bounded_text(redact_text(text), MAX_FINDING_CHARS)
        found[number] = Evidence(source=f"investigation:{number}", summary=summary)
    return tuple(found.values())


def _fenced(step: Step) -> str:
    body = _FENCE_TAG.sub(r"\\u003c", step.result)
    return f'<tool_data step="{step.number}">\n{body}\n</tool_data>'


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


@functools.cache
def _guide() -> Template:
    text = resources.files("market_agent.analysis").joinpath("investigate.md").read_text("utf-8")
    return Template(text)
