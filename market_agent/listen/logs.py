"""Log lines on stderr, as text or JSON lines (`listen` and its analysis process)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
#: Longest log message (before the timestamp, level and logger): alert text is untrusted,
#: and one huge label must not make a huge line.
MAX_LOG_MESSAGE = 2000
#: Longest alert name or label value quoted in a log message.
MAX_LOGGED_LABEL = 120


def clip(text: str, limit: int = MAX_LOGGED_LABEL) -> str:
    """`text`, cut to `limit` characters with a note of how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class _BoundedMessage(logging.Filter):
    """Cuts every message to MAX_LOG_MESSAGE characters (tracebacks are left whole)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if len(message) > MAX_LOG_MESSAGE:
            record.msg, record.args = clip(message, MAX_LOG_MESSAGE), None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message (+ extra fields)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


JsonFormatter.converter = time.gmtime


def configure_logging(log_format: str, level: str = "info") -> None:
    """market-agent's and uvicorn's loggers to stderr, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_BoundedMessage())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("market_agent", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
