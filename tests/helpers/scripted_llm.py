"""A loopback OpenAI-compatible chat endpoint that answers from a script.

    with ScriptedLLM([Status(429, {"Retry-After": "1"}), Answer(VERDICT)]) as llm:
        settings = LLMSettings(base_url=llm.url, ...)

Each request takes the next step of the script; the last step repeats. A step is
an `Answer` (a verdict dict, or raw text, as the assistant's content, or as the
arguments of a tool call when the request asked for tools: the tool it forced, else
`alert_verdict`, else its first), `ToolCalls` (the assistant calls these tools, as an
investigating model does), a `Status` (an error answer with headers), `Hang` (reads
the request, never answers) or `Trickle` (a valid answer sent in pieces, `interval`
seconds apart). HTTP/1.1 keep-alive, so a
client can reuse its connection. Records every request body and connection.
Used by the tests and by `bench/bench_llm.py` and `bench/eval_llm.py`'s test.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Answer:
    content: Mapping[str, Any] | str
    prompt_tokens: int = 321
    completion_tokens: int = 54


@dataclass(frozen=True)
class ToolCalls:
    """The assistant calls tools: (name, arguments) pairs; arguments as a dict, or raw
    text sent as it is (e.g. malformed JSON)."""

    calls: Sequence[tuple[str, Mapping[str, Any] | str]]
    prompt_tokens: int = 321
    completion_tokens: int = 54


@dataclass(frozen=True)
class Status:
    code: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = '{"error": {"message": "scripted failure", "type": "server_error"}}'


@dataclass(frozen=True)
class Hang:
    pass


@dataclass(frozen=True)
class Trickle:
    answer: Answer
    pieces: int = 12
    interval: float = 5.0


Step = Answer | ToolCalls | Status | Hang | Trickle


def completion(answer: Answer | ToolCalls, request: Mapping[str, Any]) -> dict[str, Any]:
    """A chat.completion for `request`: a tool call when it asked for tools."""
    if isinstance(answer, ToolCalls):
        message = _tool_calls_message(answer.calls)
    else:
        text = answer.content if isinstance(answer.content, str) else json.dumps(answer.content)
        message = {"role": "assistant", "content": text}
        if request.get("tools"):
            message = _tool_calls_message([(_answer_tool(request), text)])
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 1,
        "model": request.get("model", "scripted"),
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        },
    }


def _answer_tool(request: Mapping[str, Any]) -> str:
    """The tool an answer goes to: the one forced, else `alert_verdict`, else the first."""
    choice = request.get("tool_choice")
    if isinstance(choice, dict):
        return str(choice["function"]["name"])
    names = [tool["function"]["name"] for tool in request["tools"]]
    return "alert_verdict" if "alert_verdict" in names else names[0]


def _tool_calls_message(calls: Sequence[tuple[str, Mapping[str, Any] | str]]) -> dict[str, Any]:
    tool_calls = [
        {
            "id": f"call_{index}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            },
        }
        for index, (name, arguments) in enumerate(calls, 1)
    ]
    return {"role": "assistant", "content": None, "tool_calls": tool_calls}


class ScriptedLLM:
    """The endpoint; `script` may also be a function of the request body."""

    def __init__(self, script: Sequence[Step] | Callable[[dict[str, Any]], Step]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _next(self, body: dict[str, Any]) -> Step:
        with self._lock:
            self.requests.append(body)
            if callable(self.script):
                return self.script(body)
            return self.script[min(len(self.requests), len(self.script)) - 1]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out as two writes: without this, Nagle's algorithm
                # and the client's delayed ACK add ~40 ms to every answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with scripted._lock:
                    scripted.connections += 1

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                body = json.loads(raw or b"{}")
                scripted._play(self, scripted._next(body), body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _play(self, handler: BaseHTTPRequestHandler, step: Step, body: dict[str, Any]) -> None:
        if isinstance(step, Hang):
            handler.close_connection = True
            self._stopping.wait(60)
            return
        if isinstance(step, Status):
            self._send(handler, step.code, step.body.encode(), step.headers)
            return
        answer = step.answer if isinstance(step, Trickle) else step
        data = json.dumps(completion(answer, body)).encode()
        if isinstance(step, Trickle):
            self._trickle(handler, data, step)
        else:
            self._send(handler, 200, data)

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        code: int,
        data: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        handler.send_response(code)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    def _trickle(self, handler: BaseHTTPRequestHandler, data: bytes, step: Trickle) -> None:
        handler.close_connection = True
        handler.send_response(200)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        size = -(-len(data) // step.pieces)
        try:
            for start in range(0, len(data), size):
                handler.wfile.write(data[start : start + size])
                handler.wfile.flush()
                if self._stopping.wait(step.interval):
                    return
        except OSError:  # the client gave up
            return

    def __enter__(self) -> ScriptedLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()
