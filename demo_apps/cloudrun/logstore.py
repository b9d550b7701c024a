"""Revision log lines kept as Cloud Logging entries, in one bounded ring buffer per revision.

A JSON line becomes a `jsonPayload` entry; the fields Cloud Run's logging agent treats specially
(`severity`, `time`/`timestamp`, `httpRequest`, `logging.googleapis.com/trace|spanId|labels`) move to
the entry itself. Any other line is a `textPayload` entry: severity DEFAULT on stdout, ERROR on
stderr, as Cloud Run records them.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

SEVERITY_NUMBERS: dict[str, int] = {
    "DEFAULT": 0,
    "DEBUG": 100,
    "INFO": 200,
    "NOTICE": 300,
    "WARNING": 400,
    "ERROR": 500,
    "CRITICAL": 600,
    "ALERT": 700,
    "EMERGENCY": 800,
}
SEVERITY_NAMES: dict[int, str] = {number: name for name, number in SEVERITY_NUMBERS.items()}
_SEVERITY_ALIASES = {
    "WARN": "WARNING",
    "ERR": "ERROR",
    "FATAL": "CRITICAL",
    "CRIT": "CRITICAL",
    "TRACE": "DEBUG",
    "INFORMATION": "INFO",
}
RESOURCE_TYPE = "cloud_run_revision"
STDOUT = "run.googleapis.com/stdout"
STDERR = "run.googleapis.com/stderr"
SYSTEM = "run.googleapis.com/varlog/system"
# Cloud Run caps one entry at 256 KB; keep the emulator's far smaller.
MAX_LINE_CHARS = 64 * 1024


def severity_number(value: str | int) -> int | None:
    """Cloud Logging's severity order; names are case-insensitive, numbers round down to a level."""
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        number = int(value)
        return max((level for level in SEVERITY_NAMES if level <= number), default=0)
    name = str(value).strip().upper()
    name = _SEVERITY_ALIASES.get(name, name)
    return SEVERITY_NUMBERS.get(name)


def format_timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(value: Any) -> float | None:
    """RFC 3339 text, epoch seconds, or `{"seconds", "nanos"}` -> epoch seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict) and "seconds" in value:
        try:
            return float(value["seconds"]) + float(value.get("nanos", 0)) / 1e9
        except (TypeError, ValueError):
            return None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        # Python takes at most microseconds: cut longer fractions (nanoseconds) down.
        if "." in text:
            head, _, tail = text.partition(".")
            digits = "".join(itertools.takewhile(str.isdigit, tail))
            text = f"{head}.{digits[:6]}{tail[len(digits) :]}"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return None


@dataclass(frozen=True, slots=True)
class LogOrigin:
    project: str
    location: str
    service: str
    revision: str

    @property
    def labels(self) -> dict[str, str]:
        return {
            "service_name": self.service,
            "revision_name": self.revision,
            "configuration_name": self.service,
            "location": self.location,
            "project_id": self.project,
        }


@dataclass(frozen=True, slots=True)
class LogRecord:
    seq: int
    timestamp: float
    receive_timestamp: float
    severity: int
    log_id: str
    origin: LogOrigin
    json_payload: dict[str, Any] | None = None
    text_payload: str | None = None
    http_request: dict[str, Any] | None = None
    trace: str | None = None
    span_id: str | None = None
    labels: dict[str, str] | None = None

    @property
    def log_name(self) -> str:
        return f"projects/{self.origin.project}/logs/{quote(self.log_id, safe='')}"

    @property
    def insert_id(self) -> str:
        return f"{self.seq:016x}"

    @property
    def text(self) -> str:
        """The line as a person would read it, for condition messages."""
        if self.text_payload is not None:
            return self.text_payload
        payload = self.json_payload or {}
        message = payload.get("message")
        return str(message) if message is not None else json.dumps(payload, separators=(",", ":"))

    def as_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "logName": self.log_name,
            "resource": {"type": RESOURCE_TYPE, "labels": self.origin.labels},
            "timestamp": format_timestamp(self.timestamp),
            "receiveTimestamp": format_timestamp(self.receive_timestamp),
            "severity": SEVERITY_NAMES[self.severity],
            "insertId": self.insert_id,
            "labels": {"instanceId": f"local-{self.origin.revision}", **(self.labels or {})},
        }
        if self.json_payload is not None:
            entry["jsonPayload"] = self.json_payload
        else:
            entry["textPayload"] = self.text_payload or ""
        if self.http_request is not None:
            entry["httpRequest"] = self.http_request
        if self.trace:
            entry["trace"] = self.trace
        if self.span_id:
            entry["spanId"] = self.span_id
        return entry


class LogStore:
    def __init__(self, *, per_revision: int) -> None:
        self._per_revision = per_revision
        self._buffers: dict[tuple[str, str], deque[LogRecord]] = {}
        self._seq = itertools.count(1)

    def _buffer(self, origin: LogOrigin) -> deque[LogRecord]:
        key = (origin.service, origin.revision)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = deque(maxlen=self._per_revision)
        return buffer

    def append_line(self, origin: LogOrigin, log_id: str, line: str) -> LogRecord:
        """One line a revision wrote to stdout or stderr."""
        received = time.time()
        line = line.rstrip("\r\n")[:MAX_LINE_CHARS]
        payload = _json_object(line)
        if payload is None:
            severity = SEVERITY_NUMBERS["ERROR"] if log_id == STDERR else SEVERITY_NUMBERS["DEFAULT"]
            record = LogRecord(
                next(self._seq), received, received, severity, log_id, origin, text_payload=line
            )
        else:
            record = _structured(next(self._seq), received, log_id, origin, payload)
        self._buffer(origin).append(record)
        return record

    def append_system(self, origin: LogOrigin, text: str, *, severity: str = "INFO") -> LogRecord:
        """A platform message about a revision (start, exit, failed health check)."""
        received = time.time()
        record = LogRecord(
            next(self._seq), received, received, SEVERITY_NUMBERS[severity], SYSTEM, origin, text_payload=text
        )
        self._buffer(origin).append(record)
        return record

    def records(self, *, service: str | None = None, revision: str | None = None) -> Iterator[LogRecord]:
        for (service_name, revision_name), buffer in list(self._buffers.items()):
            if service is not None and service_name != service:
                continue
            if revision is not None and revision_name != revision:
                continue
            yield from buffer

    def tail(self, service: str, revision: str, count: int) -> list[LogRecord]:
        buffer = self._buffers.get((service, revision))
        if not buffer:
            return []
        return [record for record in buffer if record.log_id != SYSTEM][-count:]


def _json_object(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _structured(
    seq: int, received: float, log_id: str, origin: LogOrigin, payload: dict[str, Any]
) -> LogRecord:
    severity_value = payload.pop("severity", None)
    if severity_value is None:
        severity_value = payload.pop("level", None)
    severity = severity_number(severity_value) if isinstance(severity_value, str | int) else None
    timestamp = None
    for key in ("timestamp", "time"):
        if key in payload:
            timestamp = parse_timestamp(payload[key])
            if timestamp is not None:
                del payload[key]
                break
    http_request = payload.pop("httpRequest", None)
    labels = payload.pop("logging.googleapis.com/labels", None)
    trace = payload.pop("logging.googleapis.com/trace", None)
    span_id = payload.pop("logging.googleapis.com/spanId", None)
    return LogRecord(
        seq=seq,
        timestamp=timestamp if timestamp is not None else received,
        receive_timestamp=received,
        severity=severity if severity is not None else SEVERITY_NUMBERS["DEFAULT"],
        log_id=log_id,
        origin=origin,
        json_payload=payload,
        http_request=http_request if isinstance(http_request, dict) else None,
        trace=str(trace) if trace else None,
        span_id=str(span_id) if span_id else None,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else None,
    )
