"""Reading saved Alertmanager payloads: files, stdin, JSON documents or JSON Lines.

Accepted shapes, per JSON document:
- a webhook notification object (``{"alerts": [...], ...}``);
- a JSON array of alerts as ``GET /api/v2/alerts`` returns it, analysed as one group.

A file is JSON Lines when its first line is a complete JSON value; otherwise it is
one (pretty-printed) document. Problems are reported per file and line, and reading
goes on with the next line or file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pydantic import BaseModel, ValidationError

from market_agent.errors import describe_problem
from market_agent.models import ApiAlert, Notification, notification_from_api_alerts

#: A single (non-JSON-Lines) document larger than this is refused.
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
#: One JSON Lines line larger than this is refused (the rest of the file is still read).
MAX_LINE_BYTES = 8 * 1024 * 1024
#: Deepest nesting of objects and arrays `listen` accepts in a notification (README).
#: Alertmanager's own payloads are 4 deep; the pipeline's serialisers stop at 255.
MAX_DEPTH = 64
#: Validation problems named in one message about one document; the rest are counted.
MAX_PROBLEMS_SHOWN = 10


@dataclass(frozen=True, slots=True)
class Parsed:
    """One notification read from `source` (at `line` for JSON Lines)."""

    source: str
    line: int | None
    notification: Notification


@dataclass(frozen=True, slots=True)
class InputProblem:
    source: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}: line {self.line}"
        return f"{where}: {self.message}"


class PayloadError(ValueError):
    """A JSON value that is not an accepted Alertmanager payload."""


def read_source(name: str, stdin: BinaryIO | None = None) -> Iterator[Parsed | InputProblem]:
    """Yield every notification in one input (`-` is stdin), or the problems found."""
    if name == "-":
        if stdin is None:
            yield InputProblem(name, None, "no standard input available")
            return
        yield from _read_stream(name, stdin)
        return
    path = Path(name)
    try:
        if path.is_dir():
            yield InputProblem(name, None, "is a directory, expected a JSON file")
            return
        with path.open("rb") as handle:
            yield from _read_stream(name, handle)
    except FileNotFoundError:
        yield InputProblem(name, None, "no such file")
    except PermissionError:
        yield InputProblem(name, None, "permission denied")
    except OSError as exc:
        yield InputProblem(name, None, f"cannot read: {exc.strerror or exc}")


def _read_stream(name: str, handle: BinaryIO) -> Iterator[Parsed | InputProblem]:
    first = handle.readline(MAX_LINE_BYTES + 1)
    while first and not first.strip():
        first = handle.readline(MAX_LINE_BYTES + 1)
    if not first:
        yield InputProblem(name, None, "empty input, expected a JSON notification")
        return
    if first.endswith(b"\n") or len(first) <= MAX_LINE_BYTES:
        try:
            first_value = _loads(first)
        except PayloadError:
            first_value = _INCOMPLETE
        if first_value is not _INCOMPLETE:
            yield from _json_lines(name, handle, first, first_value)
            return
    yield from _single_document(name, handle, first)


_INCOMPLETE = object()


def _json_lines(
    name: str, handle: BinaryIO, first: bytes, first_value: Any
) -> Iterator[Parsed | InputProblem]:
    yield _to_parsed(name, 1, first_value)
    number = 1
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            yield InputProblem(name, number, f"line longer than {MAX_LINE_BYTES} bytes")
            _skip_rest_of_line(handle)
            continue
        if not line.strip():
            continue
        try:
            value = _loads(line, one_line=True)
        except PayloadError as exc:
            yield InputProblem(name, number, str(exc))
            continue
        yield _to_parsed(name, number, value)


def _skip_rest_of_line(handle: BinaryIO) -> None:
    while True:
        chunk = handle.readline(MAX_LINE_BYTES)
        if not chunk or chunk.endswith(b"\n"):
            return


def _single_document(name: str, handle: BinaryIO, head: bytes) -> Iterator[Parsed | InputProblem]:
    rest = handle.read(MAX_DOCUMENT_BYTES + 1 - len(head))
    data = head + rest
    if len(data) > MAX_DOCUMENT_BYTES:
        limit = MAX_DOCUMENT_BYTES // (1024 * 1024)
        yield InputProblem(
            name,
            None,
            f"larger than the {limit} MiB limit for one JSON document; "
            "split it into JSON Lines (one notification per line)",
        )
        return
    try:
        value = _loads(data)
    except PayloadError as exc:
        yield InputProblem(name, None, str(exc))
        return
    yield _to_parsed(name, None, value)


def _to_parsed(name: str, line: int | None, value: Any) -> Parsed | InputProblem:
    try:
        return Parsed(name, line, parse_payload(value))
    except PayloadError as exc:
        return InputProblem(name, line, str(exc))


def _loads(data: bytes, *, one_line: bool = False) -> Any:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    if "\x00" in text:
        raise PayloadError("binary data, expected JSON text")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(_json_problem(exc, text, one_line)) from None
    except RecursionError:
        raise PayloadError("not valid JSON: nested too deeply") from None


def _json_problem(exc: json.JSONDecodeError, text: str, one_line: bool) -> str:
    """`not valid JSON: ...`; a document cut short says so, and where it ends (within
    a JSON Lines line, whose number the caller gives, only the column)."""
    content = text.rstrip()
    if exc.pos >= len(content) or exc.msg.startswith("Unterminated string"):
        line = content.count("\n") + 1
        column = len(content) - (content.rfind("\n") + 1) + 1
        where = f"column {column}" if one_line else f"line {line} column {column}"
        return f"not valid JSON: it ended early at {where} (truncated?)"
    where = f"column {exc.colno}" if exc.lineno == 1 else f"line {exc.lineno}, column {exc.colno}"
    return f"not valid JSON: {exc.msg} ({where})"


def deeper_than(value: Any, limit: int) -> bool:
    """Whether a decoded JSON value nests objects and arrays more than `limit` deep
    (a scalar is 0 deep, `[]` 1). Level by level, without recursion: no depth can
    exhaust the stack, and a list comprehension per container keeps it quick."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for item in level:
            children = item.values() if item.__class__ is dict else item
            below += [c for c in children if c.__class__ is dict or c.__class__ is list]
        level = below
    return False


def has_lone_surrogate(value: Any) -> bool:
    """Whether any string of a decoded JSON value (object keys included) holds a lone
    surrogate (JSON's `"\\ud800"`): text that is not Unicode, which no UTF-8 encoder
    (the audit log's, the analysis process's) can write."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and not _encodes(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_payload(value: Any) -> Notification:
    """Validate one decoded JSON value as a notification (or an /api/v2/alerts list)."""
    if isinstance(value, dict):
        if "alerts" not in value:
            raise PayloadError(
                "expected an Alertmanager webhook notification (an object with 'alerts') "
                "or a JSON array of alerts"
            )
        return _validate(Notification, value)
    if isinstance(value, list):
        if not value:
            raise PayloadError("empty alert list, expected at least one alert")
        api_alerts = [_validate(ApiAlert, item, f"[{i}]") for i, item in enumerate(value)]
        return notification_from_api_alerts(api_alerts)
    raise PayloadError(
        f"expected a JSON object (webhook notification) or array (alerts), got {_json_type(value)}"
    )


_Model = TypeVar("_Model", bound=BaseModel)


def _validate(model: type[_Model], value: Any, prefix: str = "") -> _Model:
    if not isinstance(value, dict):
        raise PayloadError(f"{prefix or 'value'}: expected an object, got {_json_type(value)}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise PayloadError(describe_validation_error(exc, prefix)) from None
    except RecursionError:
        raise PayloadError("nested too deeply") from None


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """Every problem as a phrase naming the field: `alerts must not be empty;
    alerts[0].labels.severity must be a string` (past ten, how many more)."""
    errors = exc.errors(include_url=False)
    shown = [
        describe_problem(
            error,
            prefix + _location(error["loc"]) or "payload",
            table="an object",
            array="an array",
        )
        for error in errors[:MAX_PROBLEMS_SHOWN]
    ]
    hidden = len(errors) - len(shown)
    return "; ".join(shown) + (f"; and {hidden} more problems like these" if hidden else "")


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")
