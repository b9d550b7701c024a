"""What the Alertmanager webhook admits: each alert checked on its own against what the store can hold.

PostgreSQL refuses what SQLite quietly keeps (a NUL character, a `service` longer than its column),
and one refused row used to fail the whole notification with a 500: Alertmanager retried it for
ever and the other alerts of that notification were never recorded. So every alert is checked here,
before any database work, against the column sizes in `incidents.models`, Cloud Run's naming rules
for the `service` and revision labels, Alertmanager's wire format for fingerprints and timestamps,
and the caps in `AlertLimits`. An alert that fails is skipped with a `Rejection` (its index, a short
reason that labels a metric, the field, a sentence); the others are recorded. Should the store still
refuse an admitted alert (a rule missing here), the webhook records it in a savepoint of its own and
skips it with the reason `refused_by_store`: one alert never costs the others (analyzer/webhook.py).

Label names and values are identity: an alert whose labels break a rule is rejected, never altered.
Annotations and the generator URL are free text for humans: control characters other than tab,
newline and carriage return are stripped and over-long values are cut with a visible marker, so a
verbose description never costs the alert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from incidents import AlertInfo
from incidents.models import Incident, IncidentAlert

# Column sizes of what a webhook alert writes, read from the models so the two never drift apart.
ALERTNAME_MAX_CHARS: int = IncidentAlert.__table__.c.alertname.type.length  # type: ignore[attr-defined]
SEVERITY_MAX_CHARS: int = min(
    IncidentAlert.__table__.c.severity.type.length,  # type: ignore[attr-defined]
    Incident.__table__.c.severity.type.length,  # type: ignore[attr-defined]
)
FINGERPRINT_MAX_CHARS: int = IncidentAlert.__table__.c.fingerprint.type.length  # type: ignore[attr-defined]
SERVICE_COLUMN_CHARS: int = Incident.__table__.c.service.type.length  # type: ignore[attr-defined]

# Cloud Run service ids: "It must begin with letter, and cannot end with hyphen; must contain fewer
# than 50 characters", with only lowercase letters, digits and hyphens (Cloud Run Admin API v2,
# CreateServiceRequest.service_id:
# https://cloud.google.com/python/docs/reference/run/latest/google.cloud.run_v2.types.CreateServiceRequest).
SERVICE_NAME_MAX_CHARS = 49
SERVICE_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,47}[a-z0-9])?")
SERVICE_NAME_RULE = (
    "lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen, "
    f"at most {SERVICE_NAME_MAX_CHARS} characters"
)
assert SERVICE_NAME_MAX_CHARS <= SERVICE_COLUMN_CHARS

# Cloud Run revisions are Knative revisions (https://cloud.google.com/run/docs/reference/rest/v1/namespaces.revisions),
# named like every Kubernetes object of their kind with a DNS label (RFC 1035): lowercase letters,
# digits and hyphens, starting with a letter, not ending with a hyphen, at most 63 characters
# (https://kubernetes.io/docs/concepts/overview/working-with-objects/names/). Alerts carry the
# revision as `revision` (the demo apps' OpenTelemetry attribute) or `revision_name` (Cloud Run's own
# metrics through Managed Prometheus). That a revision belongs to the alert's service (its name
# starts with the service's) is for the collector to find out: the OpenAPI document cannot state a
# rule across two labels, and what it states is exactly what is admitted.
REVISION_LABELS = ("revision", "revision_name")
REVISION_NAME_MAX_CHARS = 63
REVISION_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
REVISION_NAME_RULE = (
    "lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen, "
    f"at most {REVISION_NAME_MAX_CHARS} characters"
)

# Alertmanager renders fingerprints as 16 lowercase hex digits (prometheus/common,
# model/fingerprinting.go: `fmt.Sprintf("%016x", uint64(f))`); any hex up to the column size passes.
FINGERPRINT = re.compile(rf"[0-9a-fA-F]{{1,{FINGERPRINT_MAX_CHARS}}}")

# RFC 3339 date-time, the format Alertmanager's JSON timestamps use (Go's time.Time, RFC 3339 with
# nanoseconds). Python keeps microseconds, so further digits are dropped, not rounded.
RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
    r"(?:\.(?P<fraction>\d+))?(?P<offset>[Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,  # \d is [0-9] only: int() would read other scripts' digits too
)
# Alertmanager's "no end time" (Go's zero time.Time).
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)

# C0 control characters. PostgreSQL refuses NUL in text and JSONB; the rest have no place in a label.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# In free text, tab, newline and carriage return are kept.
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

DEFAULT_MAX_ALERTS = 500
DEFAULT_MAX_LABELS = 64
DEFAULT_MAX_LABEL_CHARS = 1024
DEFAULT_MAX_ANNOTATION_CHARS = 4096

# Reasons an alert is rejected; each labels remediator_alerts_rejected_total{reason}.
MALFORMED = "malformed"
BAD_TIMESTAMP = "bad_timestamp"
BAD_FINGERPRINT = "bad_fingerprint"
BAD_SERVICE_NAME = "bad_service_name"
BAD_REVISION_NAME = "bad_revision_name"
VALUE_TOO_LONG = "value_too_long"
CONTROL_CHARACTER = "control_character"
TOO_MANY_LABELS = "too_many_labels"
# Admitted, but the store refused the alert's row (a DataError): a rule this module lacks.
REFUSED_BY_STORE = "refused_by_store"
REASONS = (
    MALFORMED,
    BAD_TIMESTAMP,
    BAD_FINGERPRINT,
    BAD_SERVICE_NAME,
    BAD_REVISION_NAME,
    VALUE_TOO_LONG,
    CONTROL_CHARACTER,
    TOO_MANY_LABELS,
    REFUSED_BY_STORE,
)


@dataclass(frozen=True, kw_only=True)
class AlertLimits:
    """Caps on one webhook payload (REMEDIATOR_MAX_ALERTS_PER_PAYLOAD, ..._LABELS_PER_ALERT,
    ..._LABEL_CHARS, ..._ANNOTATION_CHARS)."""

    max_alerts: int = DEFAULT_MAX_ALERTS
    # Applies to labels and to annotations, separately.
    max_labels: int = DEFAULT_MAX_LABELS
    # A label name or value, and an annotation name. The columns that hold alertname, severity and
    # fingerprint are narrower and win for those.
    max_label_chars: int = DEFAULT_MAX_LABEL_CHARS
    # An annotation value or the generator URL; longer ones are cut, with a marker.
    max_annotation_chars: int = DEFAULT_MAX_ANNOTATION_CHARS


@dataclass(frozen=True, kw_only=True)
class Rejection:
    index: int
    reason: str
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "reason": self.reason, "field": self.field, "message": self.message}


class AlertRejected(Exception):
    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message


class _AlertShape(BaseModel):
    """The JSON types of one alert (strict: a number is not a string)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str  # Alertmanager's field names
    endsAt: str | None = None
    generatorURL: str | None = None
    fingerprint: str

    @field_validator("endsAt", "generatorURL", mode="before")
    @classmethod
    def _absent_not_null(cls, value: Any) -> Any:
        # Absent or a string: the document allows no null (only an absent field is unset).
        if value is None:
            raise ValueError("must be a string when present, not null")
        return value


@dataclass(frozen=True, kw_only=True)
class WebhookAlert:
    """One alert that passed every check, with its free text cleaned."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str | None
    fingerprint: str
    # Its place in the payload's `alerts`, to name it in a rejection.
    index: int = 0

    @property
    def service(self) -> str | None:
        return self.labels.get("service") or None

    def to_alert_info(self) -> AlertInfo:
        return AlertInfo(
            name=self.labels["alertname"],
            status=self.status,
            severity=self.labels.get("severity"),
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            fingerprint=self.fingerprint,
            labels=self.labels,
            annotations=self.annotations,
            generator_url=self.generator_url,
        )


def _preview(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def clean_text(value: str, limit: int) -> str:
    """Control characters (but tab, newline, carriage return) out; cut to `limit` with a marker."""
    text = _CONTROL_IN_TEXT.sub("", value)
    if len(text) <= limit:
        return text
    marker = f"... [cut {len(text) - limit} characters]"
    return text[: max(0, limit - len(marker))] + marker


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 date-time as an aware UTC datetime; ValueError naming the problem otherwise.

    A leap second (:60) becomes the last microsecond before it; an instant outside years 1-9999
    once converted to UTC (or in year 0000) is clamped to that range (only Alertmanager's zero time
    comes near it).
    """
    match = RFC3339.fullmatch(value)
    if match is None:
        raise ValueError("not an RFC 3339 date-time (e.g. 2026-11-28T12:00:00Z)")
    second = int(match["second"])
    leap = second == 60
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    offset_text = match["offset"].upper()
    year, month, day = (int(part) for part in match["date"].split("-"))
    if year == 0:  # RFC 3339 has a year 0000; Python's datetime starts at year 1
        return datetime.min.replace(tzinfo=UTC)
    try:
        offset = timedelta(0)
        if offset_text != "Z":
            sign = 1 if offset_text[0] == "+" else -1
            hours, minutes = int(offset_text[1:3]), int(offset_text[4:6])
            if hours > 23 or minutes > 59:
                raise ValueError("offset out of range")
            offset = sign * timedelta(hours=hours, minutes=minutes)
        local = datetime(
            year,
            month,
            day,
            int(match["hour"]),
            int(match["minute"]),
            59 if leap else second,
            999999 if leap else int(fraction),
        )
    except ValueError as exc:
        raise ValueError(f"not a valid date-time ({exc})") from None
    # Convert to UTC without leaving datetime's range (year 1 minus an offset would).
    if offset > timedelta(0) and local - datetime.min < offset:
        return datetime.min.replace(tzinfo=UTC)
    if offset < timedelta(0) and datetime.max - local < -offset:
        return datetime.max.replace(tzinfo=UTC)
    return (local - offset).replace(tzinfo=UTC)


def _check_label_text(field: str, value: str, *, limit: int, what: str) -> None:
    if _CONTROL.search(value):
        raise AlertRejected(CONTROL_CHARACTER, field, f"{field}: {what} contains a control character")
    if len(value) > limit:
        raise AlertRejected(
            VALUE_TOO_LONG, field, f"{field}: {what} is {len(value)} characters, more than {limit}"
        )


def _check_labels(labels: dict[str, str], limits: AlertLimits) -> None:
    if len(labels) > limits.max_labels:
        raise AlertRejected(
            TOO_MANY_LABELS, "labels", f"labels: {len(labels)} labels, more than {limits.max_labels}"
        )
    for name, value in labels.items():
        if not name:
            raise AlertRejected(MALFORMED, "labels", "labels: a label name is empty")
        _check_label_text("labels", name, limit=limits.max_label_chars, what=f"label name {_preview(name)}")
        _check_label_text(f"labels.{name}", value, limit=limits.max_label_chars, what="the value")
    alertname = labels.get("alertname")
    if alertname is None:
        raise AlertRejected(MALFORMED, "labels", "labels must include alertname")
    if not alertname:
        raise AlertRejected(MALFORMED, "labels.alertname", "labels.alertname is empty")
    if len(alertname) > ALERTNAME_MAX_CHARS:
        raise AlertRejected(
            VALUE_TOO_LONG,
            "labels.alertname",
            f"labels.alertname is {len(alertname)} characters, more than {ALERTNAME_MAX_CHARS}",
        )
    severity = labels.get("severity")
    if severity is not None and len(severity) > SEVERITY_MAX_CHARS:
        raise AlertRejected(
            VALUE_TOO_LONG,
            "labels.severity",
            f"labels.severity is {len(severity)} characters, more than {SEVERITY_MAX_CHARS}",
        )
    service = labels.get("service")
    # An empty service label is no service label (Prometheus drops empty labels): the alert is ignored.
    if service and SERVICE_NAME.fullmatch(service) is None:
        raise AlertRejected(
            BAD_SERVICE_NAME,
            "labels.service",
            f"labels.service {_preview(service)} is not a Cloud Run service name ({SERVICE_NAME_RULE})",
        )
    for name in REVISION_LABELS:
        revision = labels.get(name)
        # An empty revision label is no revision label, as for `service`.
        if revision and REVISION_NAME.fullmatch(revision) is None:
            raise AlertRejected(
                BAD_REVISION_NAME,
                f"labels.{name}",
                f"labels.{name} {_preview(revision)} is not a Cloud Run revision name ({REVISION_NAME_RULE})",
            )


def _clean_annotations(annotations: dict[str, str], limits: AlertLimits) -> dict[str, str]:
    if len(annotations) > limits.max_labels:
        raise AlertRejected(
            TOO_MANY_LABELS,
            "annotations",
            f"annotations: {len(annotations)} annotations, more than {limits.max_labels}",
        )
    cleaned = {}
    for name, value in annotations.items():
        if not name:
            raise AlertRejected(MALFORMED, "annotations", "annotations: an annotation name is empty")
        _check_label_text(
            "annotations", name, limit=limits.max_label_chars, what=f"annotation name {_preview(name)}"
        )
        cleaned[name] = clean_text(value, limits.max_annotation_chars)
    return cleaned


def _timestamp(field: str, value: str) -> datetime:
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise AlertRejected(BAD_TIMESTAMP, field, f"{field} {_preview(value)} is {exc}") from None


def _shape_error(error: ValidationError) -> AlertRejected:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "alert"
    return AlertRejected(MALFORMED, field, f"{field}: {first['msg']}")


def admit_alert(raw: Any, limits: AlertLimits) -> WebhookAlert:
    """Check one alert of a payload; `AlertRejected` says why it cannot be recorded."""
    if not isinstance(raw, dict):
        raise AlertRejected(MALFORMED, "alert", "an alert must be a JSON object")
    try:
        shape = _AlertShape.model_validate(raw)
    except ValidationError as exc:
        raise _shape_error(exc) from None
    _check_labels(shape.labels, limits)
    if FINGERPRINT.fullmatch(shape.fingerprint) is None:
        raise AlertRejected(
            BAD_FINGERPRINT,
            "fingerprint",
            f"fingerprint {_preview(shape.fingerprint)} is not 1 to {FINGERPRINT_MAX_CHARS} hex digits",
        )
    annotations = _clean_annotations(shape.annotations, limits)
    starts_at = _timestamp("startsAt", shape.startsAt)
    ends_at = _timestamp("endsAt", shape.endsAt) if shape.endsAt is not None else None
    return WebhookAlert(
        status=shape.status,
        labels=shape.labels,
        annotations=annotations,
        starts_at=starts_at,
        ends_at=None if ends_at == ZERO_TIME else ends_at,
        generator_url=(
            clean_text(shape.generatorURL, limits.max_annotation_chars)
            if shape.generatorURL is not None
            else None
        ),
        fingerprint=shape.fingerprint,
    )


def admit_alerts(raw_alerts: list[Any], limits: AlertLimits) -> tuple[list[WebhookAlert], list[Rejection]]:
    """Every alert of a payload, each on its own: the admitted ones, and why the others were not."""
    admitted: list[WebhookAlert] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(raw_alerts):
        try:
            admitted.append(replace(admit_alert(raw, limits), index=index))
        except AlertRejected as exc:
            rejected.append(
                Rejection(
                    index=index, reason=exc.reason, field=f"alerts.{index}.{exc.field}", message=exc.message
                )
            )
    return admitted, rejected
