"""Cloud Monitoring as a trigger: its webhook notifications, mapped to the alerts the webhook records.

The notification (schema version 1.2, "Create and manage notification channels", Webhooks:
https://cloud.google.com/monitoring/support/notification-options#webhooks) is a JSON object
`{"version": "1.2", "incident": {...}}` whose incident carries `incident_id` (the same on the open
and the closed notification), `state` (`open` or `closed`), `started_at` and `ended_at` (Unix
seconds; `ended_at` null or absent while open), `scoping_project_id`, `url` (the incident in the
console), `severity`, `resource` (`type`, `labels`: for Cloud Run `service_name`, `revision_name`,
`location`, `project_id`), `metric` (`type`, `displayName`, `labels`), `policy_name`,
`condition_name`, `condition` (the policy's condition as the Monitoring API has it), `summary`,
`threshold_value`, `observed_value` and `documentation`. The console's "Test connection" sends
`version: "test"` with a made-up incident; it is answered and never recorded.

The same notification arrives either directly (a webhook notification channel) or as the data of a
Pub/Sub message (a Pub/Sub channel, pushed to Remediator: `analyzer.pubsub`). Either way it becomes one
`WebhookAlert` and goes through the Alertmanager webhook's `ingest`, so the semantics are the same:
- alertname: the PromQL condition's `alertRule` when there is one (the name Alertmanager would give
  the same rule), else the policy's name, else the condition's;
- service: `resource.labels.service_name` (a notification without one is ignored, like an alert
  without a `service` label);
- fingerprint: a hash of `incident_id`, so a notification and its repeats, through either path, are
  one alert; `starts_at` is `started_at`; `closed` resolves it.

Webhook channels authenticate with a token in the URL's query (the `webhook_tokenauth` channel type:
Cloud Monitoring sends no custom header) or with HTTP Basic credentials (`webhook_basicauth`); both are
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from aiohttp import BasicAuth, web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analyzer.admission import (
    ALERTNAME_MAX_CHARS,
    SERVICE_NAME,
    SERVICE_NAME_RULE,
    AlertLimits,
    WebhookAlert,
    clean_text,
)
from analyzer.exceptions import FeatureDisabled, PayloadInvalid, Unauthorized
from analyzer.pubsub import PushAuthConfig, PushMessage
from analyzer.webhook import JsonInteger, ParsedPayload
from incidents.runtime import Secret

ACTOR: Final = "cloud-monitoring"
# The query parameter of a token-authenticated webhook channel's URL.
TOKEN_PARAMETER: Final = "auth_token"
BASIC_CHALLENGE: Final = 'Basic realm="remediator", charset="UTF-8"'
MAX_INCIDENT_ID_CHARS: Final = 255
# 9999-12-31T23:59:59Z, the last second a datetime can hold.
MAX_UNIX_SECONDS: Final = 253402300799
# Version 1.x: later minor versions add fields; "test" is the console's test notification.
VERSION = re.compile(r"1\.[0-9]{1,3}|test")
STATE = re.compile(r"(?i)open|closed")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Cloud Monitoring's severities (AlertPolicy.severity) as the label Remediator's alerts carry.
SEVERITIES: Final = {"critical": "critical", "error": "error", "warning": "warning"}
FALLBACK_ALERTNAME: Final = "CloudMonitoringIncident"


@dataclass(frozen=True, kw_only=True)
class BasicCredentials:
    username: str
    password: Secret


@dataclass(frozen=True, kw_only=True)
class CloudMonitoringConfig:
    """CLOUD_MONITORING_TOKEN, CLOUD_MONITORING_USERNAME/PASSWORD and CLOUD_MONITORING_PUBSUB_*.

    The webhook is refused (403) without a token or basic credentials, and Pub/Sub pushes without
    `pubsub`: an unauthenticated trigger could open incidents, or close them with a forged `closed`.
    """

    token: Secret | None = None
    basic: BasicCredentials | None = None
    pubsub: PushAuthConfig | None = None


def authenticate_webhook(request: web.Request, config: CloudMonitoringConfig | None) -> None:
    """401 unless the request carries the configured token (query) or basic credentials."""
    token = config.token if config is not None else None
    basic = config.basic if config is not None else None
    if token is None and basic is None:
        raise FeatureDisabled(
            "the Cloud Monitoring webhook is disabled: set CLOUD_MONITORING_TOKEN, or "
            "CLOUD_MONITORING_USERNAME and CLOUD_MONITORING_PASSWORD"
        )
    offered = request.query.get(TOKEN_PARAMETER)
    if token is not None and offered is not None and token.matches(offered):
        return
    header = request.headers.get("Authorization", "")
    if basic is not None and header[:6].lower() == "basic ":
        try:
            credentials = BasicAuth.decode(header, encoding="utf-8")
        except ValueError:
            credentials = None
        if credentials is not None:
            # Both compared, always: the answer's timing says nothing about which one was wrong.
            same_user = hmac.compare_digest(credentials.login.encode(), basic.username.encode())
            same_password = basic.password.matches(credentials.password)
            if same_user and same_password:
                return
    raise Unauthorized(
        f"the Cloud Monitoring webhook needs the channel's token (?{TOKEN_PARAMETER}=) or its "
        "HTTP Basic credentials",
        challenge=BASIC_CHALLENGE,
    )


class _Resource(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: str | None = None
    labels: dict[str, str] | None = None


class _Metric(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: str | None = None


class _Incident(BaseModel):
    """The fields of a 1.2 incident Remediator reads, with their JSON types (strict)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    incident_id: str = Field(min_length=1, max_length=MAX_INCIDENT_ID_CHARS)
    state: str
    started_at: JsonInteger = Field(ge=0, le=MAX_UNIX_SECONDS)
    ended_at: JsonInteger | None = Field(default=None, ge=0, le=MAX_UNIX_SECONDS)
    scoping_project_id: str | None = None
    url: str | None = None
    severity: str | None = None
    resource: _Resource | None = None
    metric: _Metric | None = None
    policy_name: str | None = None
    condition_name: str | None = None
    condition: dict[str, Any] | None = None
    summary: str | None = None
    # Untyped in the documentation's examples (a string, or an object with `content`).
    documentation: Any = None
    threshold_value: Any = None
    observed_value: Any = None


class _Notification(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    version: str
    incident: _Incident


@dataclass(frozen=True, kw_only=True)
class Notification:
    """A notification as the alert the webhook records; `test` ones are never recorded."""

    alert: WebhookAlert
    incident_id: str
    test: bool

    def as_payload(self) -> ParsedPayload:
        # A test notification, or one without a service, is passed on without a service label:
        # `ingest` then counts it as ignored.
        return ParsedPayload(received=1, alerts=[self.alert], rejected=[])


def _label_text(value: str, limit: int) -> str:
    """A value that lands in a label: no control characters at all, cut to `limit` with a marker."""
    return clean_text(_CONTROL.sub(" ", value).strip(), limit)


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _prometheus_alert_rule(condition: dict[str, Any] | None) -> str | None:
    promql = (condition or {}).get("conditionPrometheusQueryLanguage")
    rule = promql.get("alertRule") if isinstance(promql, dict) else None
    return rule if isinstance(rule, str) else None


def _instant(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def fingerprint(incident_id: str) -> str:
    """32 hex digits, never one of Alertmanager's 16: the two senders' alerts cannot collide."""
    return hashlib.sha256(f"cloud-monitoring:{incident_id}".encode()).hexdigest()[:32]


def parse_notification(body: bytes | str, limits: AlertLimits | None = None) -> Notification:
    """A Cloud Monitoring notification; `PayloadInvalid` naming the first field that is wrong."""
    limits = limits or AlertLimits()
    try:
        parsed = _Notification.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "json_invalid":
            raise PayloadInvalid(f"malformed JSON: {error['msg']}", field="body") from None
        if error["type"] == "model_type" and not error["loc"]:
            raise PayloadInvalid("body must be a JSON object", field="body") from None
        location = ".".join(str(part) for part in error["loc"])
        raise PayloadInvalid(f"{location}: {error['msg']}", field=location) from None
    if VERSION.fullmatch(parsed.version) is None:
        raise PayloadInvalid(
            f"version {parsed.version[:20]!r} is not a Cloud Monitoring notification schema 1.x",
            field="version",
        )
    incident = parsed.incident
    if STATE.fullmatch(incident.state) is None:
        raise PayloadInvalid(
            f"incident.state {incident.state[:20]!r} is neither open nor closed", field="incident.state"
        )
    if _CONTROL.search(incident.incident_id):
        raise PayloadInvalid(
            "incident.incident_id contains a control character", field="incident.incident_id"
        )
    resource_labels = (incident.resource.labels if incident.resource else None) or {}
    service = resource_labels.get("service_name")
    if service is not None and SERVICE_NAME.fullmatch(service) is None:
        raise PayloadInvalid(
            f"incident.resource.labels.service_name {service[:60]!r} is not a Cloud Run service name "
            f"({SERVICE_NAME_RULE})",
            field="incident.resource.labels.service_name",
        )
    test = parsed.version == "test"
    status: Literal["firing", "resolved"] = "firing" if incident.state.lower() == "open" else "resolved"

    names = (_prometheus_alert_rule(incident.condition), incident.policy_name, incident.condition_name)
    cleaned_names = (_label_text(name, ALERTNAME_MAX_CHARS) for name in names if name)
    labels = {"alertname": next((name for name in cleaned_names if name), FALLBACK_ALERTNAME)}
    if service is not None and not test:
        labels["service"] = service
    severity = SEVERITIES.get((incident.severity or "").strip().lower())
    if severity is not None:
        labels["severity"] = severity
    descriptive = {
        "revision_name": resource_labels.get("revision_name"),
        "location": resource_labels.get("location"),
        "project": incident.scoping_project_id,
        "resource_type": incident.resource.type if incident.resource else None,
        "cloud_monitoring_incident_id": incident.incident_id,
    }
    for name, value in descriptive.items():
        if value:
            labels[name] = _label_text(value, limits.max_label_chars)

    documentation = incident.documentation
    if isinstance(documentation, dict):
        documentation = documentation.get("content")
    free_text = {
        "summary": incident.summary,
        "policy_name": incident.policy_name,
        "condition_name": incident.condition_name,
        "documentation": documentation if isinstance(documentation, str) else None,
        "threshold_value": _scalar_text(incident.threshold_value),
        "observed_value": _scalar_text(incident.observed_value),
        "metric_type": incident.metric.type if incident.metric else None,
    }
    annotations = {
        name: clean_text(value, limits.max_annotation_chars) for name, value in free_text.items() if value
    }
    ended_at = incident.ended_at
    alert = WebhookAlert(
        status=status,
        labels=labels,
        annotations=annotations,
        starts_at=_instant(incident.started_at),
        ends_at=_instant(ended_at) if status == "resolved" and ended_at else None,
        generator_url=clean_text(incident.url, limits.max_annotation_chars) if incident.url else None,
        fingerprint=fingerprint(incident.incident_id),
    )
    return Notification(alert=alert, incident_id=incident.incident_id, test=test)


class UnrecordableMessage(Exception):
    """A pushed message no redelivery could ever record; `reason` labels the discard metric."""

    def __init__(self, reason: Literal["no_data", "not_json", "invalid"], message: str, field: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field


def notification_from_push(message: PushMessage, limits: AlertLimits | None = None) -> Notification:
    """The notification a Pub/Sub message carries; `UnrecordableMessage` when it carries none."""
    if message.data is None:
        raise UnrecordableMessage("no_data", "the message has no data", "message.data")
    try:
        text = message.data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnrecordableMessage("not_json", "message.data is not UTF-8 text", "message.data") from None
    try:
        return parse_notification(text, limits)
    except PayloadInvalid as exc:
        if exc.field == "body":
            raise UnrecordableMessage("not_json", f"message.data: {exc.message}", "message.data") from None
        raise UnrecordableMessage(
            "invalid", f"message.data: {exc.message}", f"message.data.{exc.field}"
        ) from None
