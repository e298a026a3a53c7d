"""The `loki` backend against a stand-in HTTP server on loopback.

No Loki package is installable here, so the stand-in serves `GET
/loki/api/v1/query_range` answers in Loki's documented format (`resultType`
`streams`, values `[["<unix ns>", "<line>"], ...]`) and records each request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from market_agent.logs.base import LogQuery, LogSourceError
from market_agent.logs.factory import build_log_source
from market_agent.settings import load_settings

NOW = datetime.now(UTC).replace(microsecond=0)


def ns(moment: datetime) -> str:
    return str(int(moment.timestamp()) * 1_000_000_000)


class StandInLoki(ThreadingHTTPServer):
    answer: tuple[int, Any] = (200, {})
    requests: list[tuple[str, dict[str, list[str]], str | None]]


class Handler(BaseHTTPRequestHandler):
    server: StandInLoki

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        auth = self.headers.get("Authorization")
        self.server.requests.append((url.path, parse_qs(url.query), auth))
        status, body = self.server.answer
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loki() -> Iterator[StandInLoki]:
    server = StandInLoki(("127.0.0.1", 0), Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def source_for(tmp_path: Path, url: str, extra: str = "") -> Any:
    config = tmp_path / "market-agent.toml"
    config.write_text(
        f'[logs]\nbackend = "loki"\nurl = "{url}"\n'
        f"query = '{{job=\"market-predictor\"}}'\ntimeout = 2\n{extra}"
    )
    source = build_log_source(load_settings(config))
    assert source is not None and source.name == "loki"
    return source


def streams(*result: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "streams", "result": list(result)}}


def test_query_range_streams_are_merged_oldest_first(tmp_path: Path, loki: StandInLoki) -> None:
    loki.answer = (
        200,
        streams(
            {
                "stream": {"job": "market-predictor", "level": "error"},
                "values": [
                    [ns(NOW - timedelta(seconds=10)), "MemoryError: unable to allocate"],
                    [ns(NOW - timedelta(seconds=30)), "prediction failed"],
                ],
            },
            {
                "stream": {"job": "market-predictor"},
                "values": [[ns(NOW - timedelta(seconds=20)), '{"level": "warn", "msg": "slow"}']],
            },
        ),
    )
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    url = f"http://127.0.0.1:{loki.server_address[1]}"
    source = source_for(tmp_path, url, f'token_file = "{token}"\n')
    since = NOW - timedelta(minutes=10)
    lines = source.read(LogQuery(since=since, limit=100), timeout=2)
    assert [(line.level, line.message) for line in lines] == [
        ("error", "prediction failed"),
        ("warning", "slow"),
        ("error", "MemoryError: unable to allocate"),
    ]
    assert lines[0].timestamp == NOW - timedelta(seconds=30)
    ((path, params, auth),) = loki.requests
    assert path == "/loki/api/v1/query_range"
    assert params["query"] == ['{job="market-predictor"}']
    assert params["start"] == [ns(since)]
    assert (params["limit"], params["direction"]) == (["100"], ["backward"])
    assert auth == "Bearer s3cret-token"
    # A substring filter is a quoted LogQL line filter, never spliced in as LogQL.
    source.read(LogQuery(since=since, contains='say "hi" } or {x="y"'), timeout=2)
    assert loki.requests[-1][1]["query"] == [
        '{job="market-predictor"} |= "say \\"hi\\" } or {x=\\"y\\""'
    ]


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (
            (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}),
            "bad_output",
        ),
        ((200, "not json"), "bad_output"),
        ((400, {"message": "parse error at line 1"}), "error"),
        ((401, "no"), "permission"),
    ],
)
def test_bad_answers_are_typed_failures(
    tmp_path: Path, loki: StandInLoki, answer: tuple[int, Any], kind: str
) -> None:
    loki.answer = answer
    source = source_for(tmp_path, f"http://127.0.0.1:{loki.server_address[1]}")
    with pytest.raises(LogSourceError) as caught:
        source.read(LogQuery(since=NOW), timeout=2)
    assert caught.value.kind == kind


def test_unreachable_loki(tmp_path: Path, silent_llm: str) -> None:
    source = source_for(tmp_path, "http://127.0.0.1:9")  # nothing listens on discard
    with pytest.raises(LogSourceError) as caught:
        source.read(LogQuery(since=NOW), timeout=2)
    assert caught.value.kind == "unreachable"
    hung = source_for(tmp_path, silent_llm.removesuffix("/v1"))  # accepts, never answers
    with pytest.raises(LogSourceError) as caught:
        hung.read(LogQuery(since=NOW), timeout=0.3)
    assert caught.value.kind == "timeout"
