"""The LLM analyzer: LangChain `ChatOpenAI` against any OpenAI-compatible endpoint.

One chat model (one httpx client, one connection pool) per analyzer, built on first
use or by `warm()`; LangChain is imported only then, so `--help` and `analyze
--no-llm` never pay its import cost. Every call has one wall-clock deadline
(`llm.timeout`), retries and Retry-After waits included. The answer is parsed and
validated here (never by the client library), so a failure names the field.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import SecretStr, ValidationError

from market_agent.analysis.base import BUILTIN_ACTIONS, Judgement
from market_agent.analysis.policy import ActionCatalog, ActionInfo
from market_agent.analysis.prompting import (
    EFFECTIVENESS_NOTE,
    MAX_ALERTS_IN_PROMPT,
    MAX_FIELD_CHARS,
    MAX_RECOMMENDED,
    SCHEMA_NAME,
    build_user_prompt,
    system_prompt,
    verdict_schema,
)
from market_agent.models import (
    MAX_DESCRIPTION_CHARS,
    MAX_STEP_CHARS,
    Notification,
    Usage,
    Verdict,
    bounded_text,
)
from market_agent.redact import redact_text
from market_agent.settings import LLMSettings

__all__ = [
    "EFFECTIVENESS_NOTE",
    "MAX_ALERTS_IN_PROMPT",
    "MAX_FIELD_CHARS",
    "LLMAnalyzer",
    "LLMFailure",
    "build_user_prompt",
    "describe_llm_error",
]

WAITED_FOR_A_SLOT = "LLM concurrency limit reached; waited the whole timeout"
#: Consecutive server errors (5xx, 429 without Retry-After) that open the breaker...
BREAKER_FAILURES = 3
#: ...for this many seconds, during which the rules answer at once.
BREAKER_COOLDOWN = 30.0
#: Below this much time left, no request is started.
MIN_REQUEST_SECONDS = 0.05


class LLMFailure(Exception):
    """The LLM could not give a usable verdict; the message is the fallback reason."""


@dataclass(slots=True)
class _Breaker:
    """Per endpoint: after a 429's Retry-After, or repeated server errors, calls go
    straight to the rules until the window ends."""

    open_until: float = 0.0
    why: str = ""
    failures: int = 0

    def refusal(self, now: float) -> str | None:
        if now >= self.open_until:
            return None
        return f"{self.why}: LLM skipped for {self.open_until - now:.0f} s more"

    def open(self, now: float, seconds: float, why: str) -> None:
        self.open_until, self.why, self.failures = now + seconds, why, 0

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.failures >= BREAKER_FAILURES:
            self.open(now, BREAKER_COOLDOWN, f"LLM endpoint failed {BREAKER_FAILURES} times")


class LLMAnalyzer:
    """Asks an OpenAI-compatible endpoint; raises `LLMFailure` on anything unusable."""

    name = "llm"

    def __init__(
        self,
        settings: LLMSettings,
        *,
        actions: ActionCatalog | None = None,
        allowed_actions: Sequence[str] = BUILTIN_ACTIONS,
    ) -> None:
        self.settings = settings
        self.actions = actions or ActionCatalog(
            tuple(ActionInfo(a, a, universal=a != "restart") for a in allowed_actions)
        )
        self.allowed_actions = self.actions.names
        self._chat: Any = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)
        self._recent_calls: deque[float] = deque()
        self._breaker = _Breaker()

    def warm(self) -> None:
        """Import LangChain and build the client now rather than on the first call."""
        self._client()

    def judge(self, notification: Notification, context: Mapping[str, Any]) -> Judgement:
        chat = self._client()
        started = time.monotonic()
        deadline = started + self.settings.timeout
        if not self._slots.acquire(timeout=self.settings.timeout):
            raise LLMFailure(WAITED_FOR_A_SLOT)
        try:
            self._check_breaker()  # after the wait for a slot: it may have opened meanwhile
            self._spend_budget()
            message = self._ask(chat, notification, context, deadline)
        finally:
            self._slots.release()
        verdict = parse_verdict(self._answer_data(message))
        usage = _usage(message, time.monotonic() - started)
        return Judgement(verdict, analyzer="llm", model=self.settings.model, usage=usage)

    def _check_breaker(self) -> None:
        with self._lock:
            refusal = self._breaker.refusal(time.monotonic())
        if refusal:
            raise LLMFailure(refusal)

    def _spend_budget(self) -> None:
        now = time.monotonic()
        with self._lock:
            while self._recent_calls and now - self._recent_calls[0] > 60:
                self._recent_calls.popleft()
            if len(self._recent_calls) >= self.settings.requests_per_minute:
                raise LLMFailure(
                    f"LLM budget of {self.settings.requests_per_minute} requests/minute spent"
                )
            self._recent_calls.append(now)

    def _ask(
        self, chat: Any, notification: Notification, context: Mapping[str, Any], deadline: float
    ) -> Any:
        from market_agent.analysis.deadline import deadline as deadline_scope

        allowed = self.actions.allowed_for(notification)
        messages = self._messages(notification, context, allowed)
        options = self._format_options([a.name for a in allowed])
        failures: list[str] = []
        error: Exception | None = None
        for attempt in range(1 + self.settings.max_retries):
            remaining = deadline - time.monotonic()
            if remaining <= MIN_REQUEST_SECONDS:
                failures.append(f"LLM timed out after {self.settings.timeout:g} s")
                break
            try:
                with deadline_scope(deadline):
                    message = chat.invoke(messages, timeout=remaining, **options)
            except Exception as exc:
                error = exc
                failures.append(describe_llm_error(exc, self.settings.timeout))
                wait = self._after_failure(exc)
                if attempt < self.settings.max_retries and _retryable(exc):
                    left = deadline - time.monotonic()
                    if wait is not None and wait > left - MIN_REQUEST_SECONDS:
                        failures[-1] += f"; Retry-After {wait:g} s is beyond the deadline"
                        break
                    # Half the time left, so that a short timeout still leaves the retry some.
                    time.sleep(wait if wait is not None else min(1.0, max(0.0, left / 2)))
                    continue
                break
            with self._lock:
                self._breaker.failures = 0
            return message
        raise LLMFailure(_failure_reason(failures)) from error

    def _after_failure(self, exc: Exception) -> float | None:
        """Update the breaker; the provider's Retry-After in seconds, when it gave one."""
        status = getattr(exc, "status_code", None)
        now = time.monotonic()
        wait = retry_after(exc) if status == 429 else None
        with self._lock:
            if wait is not None:
                self._breaker.open(
                    now, wait, f"LLM rate-limited (HTTP 429, Retry-After {wait:g} s)"
                )
            elif status == 429 or (isinstance(status, int) and status >= 500):
                self._breaker.failed(now)
        return wait

    def _messages(
        self, notification: Notification, context: Mapping[str, Any], allowed: Sequence[ActionInfo]
    ) -> list[tuple[str, str]]:
        managed = self.actions.managed_service
        system = system_prompt(
            tuple((a.name, a.does) for a in allowed),
            tuple(tuple(sorted(m.items())) for m in managed),
            self.settings.structured_output == "json_mode",
        )
        human = build_user_prompt(notification, context, managed_service=managed)
        return [("system", system), ("human", human)]

    def _format_options(self, allowed: Sequence[str]) -> dict[str, Any]:
        """How the answer's shape is asked for, by `llm.structured_output`."""
        mode = self.settings.structured_output
        if mode == "json_mode":  # the schema is in the system prompt
            return {"response_format": {"type": "json_object"}}
        schema = verdict_schema(allowed)
        if mode == "function_calling":
            function = {"name": SCHEMA_NAME, "description": "The verdict.", "parameters": schema}
            return {
                "tools": [{"type": "function", "function": function}],
                "tool_choice": {"type": "function", "function": {"name": SCHEMA_NAME}},
            }
        json_schema = {"name": SCHEMA_NAME, "schema": schema}
        return {"response_format": {"type": "json_schema", "json_schema": json_schema}}

    def _answer_data(self, message: Any) -> Any:
        if self.settings.structured_output == "function_calling":
            calls = getattr(message, "tool_calls", None) or []
            if calls:
                return calls[0].get("args")
            invalid = getattr(message, "invalid_tool_calls", None) or []
            if invalid:
                return _json_of(str(invalid[0].get("args") or ""))
        return _json_of(_text_of(getattr(message, "content", "")))

    def _client(self) -> Any:
        """The chat model, built once (the deadline is given per request)."""
        with self._lock:
            if self._chat is None:
                self._chat = self._build_chat()
            return self._chat

    def _build_chat(self) -> Any:
        from langchain_openai import ChatOpenAI  # heavy: import only when the LLM runs

        from market_agent.analysis.deadline import deadline_client

        settings = self.settings
        return ChatOpenAI(
            model=settings.model,
            base_url=settings.base_url,
            api_key=SecretStr(settings.resolved_api_key() or "not-needed"),
            timeout=settings.timeout,
            max_retries=0,  # retries are ours, bounded by the overall deadline
            # The ignore: mypy knows this field only by its pydantic alias,
            # max_completion_tokens; ChatOpenAI accepts its name too (populate_by_name).
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            http_client=deadline_client(timeout=settings.timeout),
        )


def parse_verdict(data: Any) -> Verdict:
    """Validate the model's answer (free text bounded first); the reason names the field."""
    if not isinstance(data, dict):
        raise LLMFailure(f"LLM output is a JSON {type(data).__name__}, not an object")
    bounded = dict(data)
    if isinstance(bounded.get("description"), str):
        bounded["description"] = bounded_text(bounded["description"], MAX_DESCRIPTION_CHARS)
    steps = bounded.get("recommended_actions")
    if isinstance(steps, list):
        bounded["recommended_actions"] = [
            bounded_text(s, MAX_STEP_CHARS) if isinstance(s, str) else s
            for s in steps[:MAX_RECOMMENDED]
        ]
    try:
        return Verdict.model_validate(bounded)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '(answer)'}: {e['msg']}"
            for e in exc.errors(include_url=False)[:3]
        ]
        raise LLMFailure("LLM output failed the schema: " + "; ".join(problems)) from None


def _text_of(content: Any) -> str:
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content or "")


_CODE_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL | re.IGNORECASE)


def _json_of(text: str) -> Any:
    fenced = _CODE_FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    if not text.strip():
        raise LLMFailure("LLM output is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise LLMFailure(f"LLM output is not JSON: {exc.msg} at {where}") from None


def retry_after(exc: Exception) -> float | None:
    """Seconds from a 429's `retry-after-ms` or `Retry-After` (seconds or HTTP date)."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _failure_reason(failures: Sequence[str]) -> str:
    """The first failure is the cause (a retry cut short by the deadline often just times
    out): "LLM rate-limited (HTTP 429)", plus "(retry: ...)" when the retry failed otherwise."""
    if not failures:  # the wait for a slot left no time for a call
        return WAITED_FOR_A_SLOT
    first, last = failures[0], failures[-1]
    return first if last == first else f"{first} (retry: {last})"


def _usage(message: Any, elapsed: float) -> Usage:
    meta = getattr(message, "usage_metadata", None) or {}
    return Usage(
        input_tokens=meta.get("input_tokens"),
        output_tokens=meta.get("output_tokens"),
        latency_ms=round(elapsed * 1000, 1),
    )


def _kinds(exc: Exception) -> set[str]:
    """Class names along the MRO: LangChain wraps openai's errors in subclasses."""
    return {cls.__name__ for cls in type(exc).__mro__}


def _retryable(exc: Exception) -> bool:
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status == 429 or status >= 500
    return bool(_kinds(exc) & {"APIConnectionError", "APITimeoutError"})


def describe_llm_error(exc: Exception, timeout: float) -> str:
    """A one-line reason that never includes request headers or keys."""
    kinds = _kinds(exc)
    status = getattr(exc, "status_code", None)
    if "APITimeoutError" in kinds:
        return f"LLM timed out after {timeout:g} s"
    if "APIConnectionError" in kinds:
        return "LLM endpoint unreachable (connection failed)"
    if status == 429:
        return "LLM rate-limited (HTTP 429)"
    if status in (401, 403):
        return f"LLM rejected the API key (HTTP {status})"
    if isinstance(status, int):
        return f"LLM endpoint answered HTTP {status}"
    if "LengthFinishReasonError" in kinds:
        return "LLM answer cut at max_tokens (finish_reason: length)"
    if kinds & {"JSONDecodeError", "ValueError"}:
        return f"LLM answer could not be read: {redact_text(_first_line(str(exc)))[:200]}"
    return f"LLM call failed ({type(exc).__name__}): {redact_text(_first_line(str(exc)))[:200]}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
