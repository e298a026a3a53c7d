"""A loopback HTTP/1.1 relay that notes when each request arrives: Alertmanager -> relay
-> `listen`, so a benchmark knows when a notification reached the agent.

It forwards bytes unchanged (the bearer token included) over one upstream connection
per client connection, and records, for each request, the arrival time (Unix seconds,
once its headers are in), the time the answer came back, the status, and the JSON
bodies (both small here). Its own cost, a loopback hop, is counted against the agent.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

HEADER_END = b"\r\n\r\n"


@dataclass
class Delivery:
    arrived: float
    answered: float = 0.0
    status: int = 0
    request: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def notification_status(self) -> str | None:
        return self.request.get("status")

    @property
    def alertnames(self) -> set[str]:
        alerts = self.request.get("alerts") or []
        return {a.get("labels", {}).get("alertname", "") for a in alerts if isinstance(a, dict)}


class TimingRelay:
    """Serve on `port`, forward to `upstream_port` (both 127.0.0.1); a context manager."""

    def __init__(self, port: int, upstream_port: int) -> None:
        self.port = port
        self.upstream_port = upstream_port
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def __enter__(self) -> TimingRelay:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the timing relay did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            while True:
                request = await _read_message(reader)
                if request is None:
                    return
                delivery = Delivery(arrived=time.time(), request=_json(request[1]))
                up_writer.write(request[0] + request[1])
                await up_writer.drain()
                response = await _read_message(up_reader)
                if response is None:
                    return
                delivery.answered = time.time()
                delivery.status = int(response[0].split(b" ", 2)[1])
                delivery.response = _json(response[1])
                with self._lock:
                    self.deliveries.append(delivery)
                writer.write(response[0] + response[1])
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
            return
        finally:
            up_writer.close()
            writer.close()


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """(head with its blank line, body) of one HTTP/1.1 message with a Content-Length."""
    try:
        head = await reader.readuntil(HEADER_END)
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head, body


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
