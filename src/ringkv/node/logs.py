"""Logs: the node's log format, human-readable (the default) or JSON lines (``--log-format json``).

A JSON line carries the time, level, logger, node id and message, the request id while a client
request that sent ``X-Request-Id`` is being served, and the exception's traceback if any.
Secrets never reach a log line by design (tokens are kept as digests, Secrets by name only);
as a last guard, anything after ``Bearer`` in a message is redacted.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar

LOG_FORMATS = ("text", "json")
REQUEST_ID_HEADER = "X-Request-Id"
# The id of the client request being served (set only when the client sent one).
REQUEST_ID: ContextVar[str | None] = ContextVar("ringkv_request_id", default=None)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")


def request_id_of(value: str | None) -> str | None:
    """A client's request id if it is a plain token of at most 128 characters, else None (an
    odd header value is not copied into the logs)."""
    return value if value and _REQUEST_ID.match(value) else None


class JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self.node_id,
            "message": _BEARER.sub(r"\1[redacted]", record.getMessage()),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            doc["request_id"] = request_id
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure(node_id: str, level: str, log_format: str = "text") -> None:
    """Send the process's logs to stderr in ``log_format`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(node_id))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {node_id} %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
