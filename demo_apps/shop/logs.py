"""Structured log lines on stdout, one JSON object per line, the way Cloud Run's logging agent reads them.

Every line has `severity`, `message`, `time` (RFC 3339, UTC), `service` and `revision`. A request line
adds Cloud Logging's `httpRequest` (requestMethod, requestUrl, status, latency as "0.123s", ...) and
the request's trace id, both as `requestId` and, when GOOGLE_CLOUD_PROJECT is known, as
`logging.googleapis.com/trace`. Severity follows the answer: ERROR for 5xx, WARNING for 429, INFO
otherwise.

The emulator reads these lines from the process's stdout as they come, so each is flushed at once.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

SEVERITY_BY_LEVEL = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


def rfc3339(epoch_seconds: float) -> str:
    """UTC time with milliseconds and a `Z`, as Cloud Logging writes it."""
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def severity_for_status(status: int) -> str:
    if status >= 500:
        return "ERROR"
    if status == 429:
        return "WARNING"
    return "INFO"


class StructuredLogger:
    """Writes one JSON log entry per line to `stream` (stdout unless told otherwise)."""

    def __init__(
        self,
        *,
        service: str,
        revision: str,
        project: str | None = None,
        stream: TextIO | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.revision = revision
        self.project = project
        self._stream = stream
        self._wall_clock = wall_clock

    def info(self, message: str, **fields: Any) -> None:
        self.write("INFO", message, **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self.write("WARNING", message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self.write("ERROR", message, **fields)

    def write(self, severity: str, message: str, **fields: Any) -> None:
        entry: dict[str, Any] = {
            "severity": severity,
            "message": message,
            "time": rfc3339(self._wall_clock()),
            "service": self.service,
            "revision": self.revision,
        }
        entry.update(fields)
        # Looked up on each write so pytest's capture (which swaps sys.stdout) sees the lines.
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(json.dumps(entry, default=str, separators=(",", ":")) + "\n")
        stream.flush()

    def request(
        self,
        *,
        message: str,
        method: str,
        path: str,
        status: int,
        latency_s: float,
        trace_id: str,
        user_agent: str | None = None,
        remote_ip: str | None = None,
        response_size: int | None = None,
        **fields: Any,
    ) -> None:
        """One line for one answered request, in Cloud Logging's `httpRequest` shape."""
        http_request: dict[str, Any] = {
            "requestMethod": method,
            "requestUrl": path,
            "status": status,
            "latency": f"{latency_s:.3f}s",
            "protocol": "HTTP/1.1",
        }
        if user_agent:
            http_request["userAgent"] = user_agent
        if remote_ip:
            http_request["remoteIp"] = remote_ip
        if response_size is not None:
            http_request["responseSize"] = str(response_size)
        trace_fields: dict[str, Any] = {"requestId": trace_id}
        if self.project:
            trace_fields["logging.googleapis.com/trace"] = f"projects/{self.project}/traces/{trace_id}"
        self.write(severity_for_status(status), message, httpRequest=http_request, **trace_fields, **fields)


class StructuredLogHandler(logging.Handler):
    """Sends the standard library's log records (aiohttp's, asyncio's) through a `StructuredLogger`."""

    def __init__(self, logger: StructuredLogger) -> None:
        super().__init__()
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            severity = SEVERITY_BY_LEVEL.get(record.levelno, "DEFAULT")
            self._logger.write(severity, message, logger=record.name)
        except Exception:
            self.handleError(record)
