"""HTTP handlers of the analyzer: the Alertmanager webhook, Cloud Monitoring's notifications (webhook
and Pub/Sub push), the incidents API, health and metrics."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analyzer import approvals, cloud_monitoring, keys
from analyzer.admission import SERVICE_NAME, SERVICE_NAME_RULE, AlertLimits, Rejection
from analyzer.exceptions import (
    AlertsRejected,
    Conflict,
    FeatureDisabled,
    PayloadInvalid,
    Unauthorized,
    UnsupportedMediaType,
)
from analyzer.metrics import AnalyzerMetrics
from analyzer.middlewares import bearer_credentials, holds_token, status_for
from analyzer.pubsub import PushMessage, parse_push
from analyzer.redaction import redact_context_logs
from analyzer.views import incident_detail, incident_summary
from analyzer.webhook import IngestResult, ingest, parse_payload
from incidents import (
    ActionRepository,
    IncidentNotFound,
    IncidentRepository,
    IncidentStatus,
    take_over,
    utcnow,
)
from incidents.outbox import OutboxRepository
from incidents.runtime import Secret, liveness, metrics_exposition, readiness

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
MAX_LIST_LIMIT = 500
# Incident ids are PostgreSQL bigints; a larger number names no incident (and must not reach the driver).
MAX_INCIDENT_ID = 2**63 - 1
_INCIDENT_ID = re.compile(r"[0-9]+")
# Who approves and what they say: no control characters, and a name that is not only spaces (ASCII
# spaces: regex engines disagree on what else is white space, and the document must mean the same).
APPROVER_PATTERN = r"^[^\x00-\x1f\x7f]*[^ \x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
COMMENT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
INSECURE_WARNING = (
    "started with --insecure-no-auth: the webhook accepts alerts from anyone who can reach this address"
)

log = logging.getLogger("analyzer.http")
Body = TypeVar("Body", bound=BaseModel)

routes = web.RouteTableDef()


def _require_bearer(request: web.Request, *tokens: Secret | None, what: str) -> None:
    """Open when no token is configured; otherwise any of `tokens` is accepted."""
    if all(token is None for token in tokens):
        return
    if not holds_token(request, *tokens):
        raise Unauthorized(f"{what} needs a valid bearer token")


def _require_api_token(request: web.Request, *, what: str) -> None:
    token = request.app[keys.CONFIG].api_token
    if token is None:
        raise FeatureDisabled(f"{what} is disabled: set REMEDIATOR_API_TOKEN to enable it")
    _require_bearer(request, token, what=what)


def _require_json(request: web.Request) -> None:
    """A body must be declared as JSON. A browser sends a cross-site form or `text/plain` post
    without asking first (no CORS preflight), but never `application/json`: so this also keeps
    web pages from posting alerts."""
    if request.content_type != "application/json":
        declared = request.headers.get("Content-Type") or "none"
        raise UnsupportedMediaType(f"the body must be application/json (Content-Type: {declared[:100]})")


def _incident_id(request: web.Request) -> int:
    raw = request.match_info["incident_id"]
    if _INCIDENT_ID.fullmatch(raw) is None:
        if raw.startswith("-") and _INCIDENT_ID.fullmatch(raw[1:]):
            raise PayloadInvalid("incident id must be positive", field="incident_id")
        raise PayloadInvalid(f"incident id must be an integer, got {raw[:40]!r}", field="incident_id")
    value = int(raw)
    if value < 1:
        raise PayloadInvalid("incident id must be positive", field="incident_id")
    if value > MAX_INCIDENT_ID:
        raise IncidentNotFound(value)
    return value


def _log_rejections(rejected: list[Rejection], request_id: str | None) -> None:
    for rejection in rejected:
        log.warning(
            "alert rejected: %s",
            rejection.message,
            extra={
                "reason": rejection.reason,
                "field": rejection.field,
                "alert_index": rejection.index,
                "request_id": request_id,
            },
        )


def _count_and_log_rejections(
    metrics: AnalyzerMetrics, rejected: list[Rejection], request: web.Request
) -> None:
    for rejection in rejected:
        metrics.alerts_rejected.labels(rejection.reason).inc()
    _log_rejections(rejected, request.headers.get("X-Request-Id"))


def _nothing_recorded(rejected: list[Rejection]) -> AlertsRejected:
    ordered = sorted(rejected, key=lambda rejection: rejection.index)
    first = ordered[0]
    more = f" (and {len(ordered) - 1} more, see rejected)" if len(ordered) > 1 else ""
    return AlertsRejected(
        f"no alert of the payload can be recorded: {first.message}{more}",
        field=first.field,
        rejected=[rejection.as_dict() for rejection in ordered],
    )


@routes.post("/api/v1/alerts")
async def receive_alerts(request: web.Request) -> web.Response:
    """Alertmanager webhook (v4). Answers 2xx only once every admitted alert is durably recorded.

    Alerts are checked one by one (`analyzer.admission`): the ones that cannot be recorded are
    listed in the answer's `rejected` and the others are recorded. When none can be, the answer is
    400 with every reason. Why 4xx and not 2xx or 5xx: Alertmanager retries 5xx answers only
    ("2xx status codes are successful, anything else is a failure and only 5xx status codes should
    be retried", prometheus/alertmanager notify/util.go, `Retrier`), and it logs a failed
    notification together with the body of the answer and counts it in
    alertmanager_notifications_failed_total. A resend would be refused again, so a retry only
    wastes work; a 2xx would mark as delivered a notification of which nothing was recorded; a
    4xx tells the operator, in Alertmanager's own log, exactly which alert broke which rule.
    """
    app = request.app
    config = app[keys.CONFIG]
    metrics = app[keys.METRICS]
    started = time.perf_counter()
    try:
        _require_bearer(request, config.webhook_token, what="the webhook")
        _require_json(request)
        payload = parse_payload(await request.read(), config.alert_limits)
        _count_and_log_rejections(metrics, payload.rejected, request)
        if not payload.alerts:
            raise _nothing_recorded(payload.rejected)
        result = await ingest(
            app[keys.STORE],
            payload,
            now=utcnow(),
            recent=app[keys.RECENT_NOTIFICATIONS],
            lifecycle=config.lifecycle,
        )
        _count_and_log_rejections(metrics, result.refused, request)
        # A payload whose alerts were all rejected, refused or ignored (no service named) wrote
        # nothing: its rejections are the answer, and a 4xx puts them in Alertmanager's own log.
        if result.rejected and not (result.new or result.duplicate or result.resolved):
            raise _nothing_recorded(result.rejected)
    except Exception as exc:
        code = exc.status if isinstance(exc, web.HTTPException) else status_for(exc)
        metrics.webhook_requests.labels(str(code)).inc()
        raise
    finally:
        metrics.webhook_duration.observe(time.perf_counter() - started)
    metrics.webhook_requests.labels("200").inc()
    for outcome in ("new", "duplicate", "resolved", "ignored"):
        metrics.alerts_received.labels(outcome).inc(getattr(result, outcome))
    _after_ingest(app, result)
    return web.json_response(result.as_dict())


def _after_ingest(app: web.Application, result: IngestResult) -> None:
    """What every trigger does once its alerts are committed: count incidents, start the analyses."""
    metrics = app[keys.METRICS]
    metrics.incidents_opened.inc(len(result.opened_incidents))
    metrics.recurrences.inc(len(result.recurred_incidents))
    for trigger in result.reanalysis_triggers:
        metrics.reanalyses.labels(trigger).inc()
    metrics.incidents_ended.labels("closed").inc(len(result.closed_incidents))
    app[keys.PROCESSOR].notify(result.to_analyse)


@contextmanager
def _counted_cloud_monitoring(app: web.Application, endpoint: str) -> Iterator[None]:
    counter = app[keys.METRICS].cloud_monitoring_requests
    try:
        yield
    except Exception as exc:
        code = exc.status if isinstance(exc, web.HTTPException) else status_for(exc)
        counter.labels(endpoint, str(code)).inc()
        raise
    counter.labels(endpoint, "200").inc()


async def _ingest_cloud_monitoring(
    app: web.Application, notification: cloud_monitoring.Notification, *, via: str
) -> IngestResult:
    result = await ingest(
        app[keys.STORE],
        notification.as_payload(),
        now=utcnow(),
        recent=app[keys.RECENT_NOTIFICATIONS],
        actor=cloud_monitoring.ACTOR,
        lifecycle=app[keys.CONFIG].lifecycle,
    )
    for outcome in ("new", "duplicate", "resolved", "ignored"):
        app[keys.METRICS].cloud_monitoring_notifications.labels(outcome).inc(getattr(result, outcome))
    _after_ingest(app, result)
    incident_ids = result.opened_incidents + result.joined_incidents + result.closed_incidents
    what = "test notification, nothing recorded" if notification.test else notification.alert.status
    log.info(
        "Cloud Monitoring notification %s: %s",
        notification.alert.labels["alertname"],
        what,
        extra={
            "via": via,
            "cloud_monitoring_incident_id": notification.incident_id,
            "service": notification.alert.service,
            "incident_id": incident_ids[0] if incident_ids else None,
            **{outcome: getattr(result, outcome) for outcome in ("new", "duplicate", "resolved", "ignored")},
        },
    )
    return result


@routes.post("/api/v1/cloud-monitoring")
async def receive_cloud_monitoring(request: web.Request) -> web.Response:
    """A Cloud Monitoring webhook notification channel (schema 1.2). 2xx only once it is recorded.

    Cloud Monitoring logs a notification it could not deliver; a 4xx names the field that was wrong.
    """
    app = request.app
    config = app[keys.CONFIG]
    with _counted_cloud_monitoring(app, "webhook"):
        cloud_monitoring.authenticate_webhook(request, config.cloud_monitoring)
        _require_json(request)
        notification = cloud_monitoring.parse_notification(await request.read(), config.alert_limits)
        result = await _ingest_cloud_monitoring(app, notification, via="webhook")
    return web.json_response(result.as_dict())


@routes.post("/api/v1/cloud-monitoring/pubsub")
async def receive_cloud_monitoring_push(request: web.Request) -> web.Response:
    """A Cloud Monitoring notification pushed by a Pub/Sub subscription.

    Pub/Sub redelivers every message not answered 102, 200, 201, 202 or 204
    (https://cloud.google.com/pubsub/docs/push). So: a refused token (401/403) or an unreachable
    store (503) is answered so, and Pub/Sub delivers again once the cause is fixed: nothing is lost.
    A message that can never be recorded (no data, not JSON, not a valid notification) is answered
    200 with `discarded` saying why, logged with its message id and counted in
    remediator_cloud_monitoring_discarded_total{reason}: redelivering it would fail the same way
    until it expires, and keep the subscription's backlog growing. A body that is not a push
    envelope at all (Pub/Sub never sends one) is a 400 naming the field.
    """
    app = request.app
    config = app[keys.CONFIG]
    with _counted_cloud_monitoring(app, "pubsub"):
        verifier = app.get(keys.PUSH_VERIFIER)
        if verifier is None:
            raise FeatureDisabled(
                "Cloud Monitoring's Pub/Sub pushes are disabled: set CLOUD_MONITORING_PUBSUB_AUDIENCE and "
                "CLOUD_MONITORING_PUBSUB_SERVICE_ACCOUNT"
            )
        await verifier.verify(bearer_credentials(request))
        _require_json(request)
        message = parse_push(await request.read())
        try:
            notification = cloud_monitoring.notification_from_push(message, config.alert_limits)
        except cloud_monitoring.UnrecordableMessage as discard:
            return _acknowledge_unrecordable(app, message, discard)
        result = await _ingest_cloud_monitoring(app, notification, via="pubsub")
    return web.json_response(result.as_dict())


def _acknowledge_unrecordable(
    app: web.Application, message: PushMessage, discard: cloud_monitoring.UnrecordableMessage
) -> web.Response:
    app[keys.METRICS].cloud_monitoring_discarded.labels(discard.reason).inc()
    log.warning(
        "Pub/Sub message discarded: %s",
        discard.message,
        extra={
            "reason": discard.reason,
            "field": discard.field,
            "message_id": message.message_id,
            "publish_time": message.publish_time,
            "subscription": message.subscription,
            "data_bytes": len(message.data or b""),
            "data_preview": repr((message.data or b"")[:512]),
        },
    )
    return web.json_response(
        {
            "discarded": True,
            "reason": discard.reason,
            "error": discard.message,
            "field": discard.field,
            "message_id": message.message_id,
        }
    )


@routes.get("/api/v1/incidents")
async def list_incidents(request: web.Request) -> web.Response:
    query = request.query
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        raise PayloadInvalid("limit must be an integer", field="limit") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise PayloadInvalid(f"limit must be between 1 and {MAX_LIST_LIMIT}", field="limit")
    statuses: list[str] | None = None
    if "status" in query:
        statuses = query["status"].split(",")
        valid = {s.value for s in IncidentStatus}
        unknown = [s for s in statuses if s not in valid]
        if unknown:
            named = ", ".join(repr(s[:40]) for s in unknown)
            raise PayloadInvalid(f"unknown status {named}; one of {', '.join(sorted(valid))}", field="status")
    service = query.get("service")
    if service is not None and SERVICE_NAME.fullmatch(service) is None:
        raise PayloadInvalid(
            f"service {service[:60]!r} is not a Cloud Run service name ({SERVICE_NAME_RULE})", field="service"
        )
    async with request.app[keys.STORE].session() as session:
        repo = IncidentRepository(session)
        rows = await repo.list_incidents(limit=limit, status=statuses, service=service)
        alerts = await repo.list_alerts_for([row.id for row in rows])
    return web.json_response({"incidents": [incident_summary(row, alerts[row.id]) for row in rows]})


@routes.get("/api/v1/incidents/{incident_id}")
async def get_incident(request: web.Request) -> web.Response:
    incident_id = _incident_id(request)
    detail = await _incident_document(request, incident_id)
    # Log lines can carry whatever the service printed: only the API token's holder sees them whole.
    if not holds_token(request, request.app[keys.CONFIG].api_token):
        detail["context"] = redact_context_logs(detail["context"])
    return web.json_response(detail)


async def _incident_document(request: web.Request, incident_id: int) -> dict[str, Any]:
    async with request.app[keys.STORE].session() as session:
        repo = IncidentRepository(session)
        incident = await repo.get(incident_id)
        alerts = await repo.list_alerts(incident_id)
        actions = await ActionRepository(session).list_for_incident(incident_id)
        events = await repo.events.list_for_incident(incident_id)
        deliveries = await OutboxRepository(session).list_for_incident(incident_id)
        following = await repo.list_following(incident_id)
    return incident_detail(incident, alerts, actions, events, deliveries, following)


class ApprovalRequest(BaseModel):
    """The optional body of approve and reject. Free text lands in the timeline, so control
    characters (PostgreSQL refuses NUL) are refused rather than stored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    by: str = Field(default="api", min_length=1, max_length=100, pattern=APPROVER_PATTERN)
    comment: str | None = Field(default=None, max_length=1000, pattern=COMMENT_PATTERN)


def _parsed_body(body: bytes, model: type[Body]) -> Body:
    """The JSON body as `model`, or a 400 naming the first problem."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "json_invalid":
            raise PayloadInvalid(f"malformed JSON: {error['msg']}", field="body") from None
        if error["type"] == "model_type":
            raise PayloadInvalid("body must be a JSON object", field="body") from None
        location = ".".join(str(part) for part in error["loc"])
        raise PayloadInvalid(f"{location}: {error['msg']}", field=location) from None


async def _approval_request(request: web.Request) -> tuple[int, str, str | None]:
    _require_api_token(request, what="approving or rejecting")
    incident_id = _incident_id(request)
    body = await request.read() if request.can_read_body else b""
    if not body:
        return incident_id, "api", None
    _require_json(request)
    parsed = _parsed_body(body, ApprovalRequest)
    return incident_id, parsed.by.strip(" "), parsed.comment


async def _answer(request: web.Request, *, approved: bool) -> int:
    incident_id, by, comment = await _approval_request(request)
    app = request.app
    await approvals.answer(
        app[keys.STORE],
        incident_id,
        approved=approved,
        by=by,
        comment=comment,
        now=utcnow(),
        rules=app[keys.APPROVALS],
        metrics=app[keys.METRICS],
        wake=app[keys.PROCESSOR].notify,
    )
    return incident_id


@routes.post("/api/v1/incidents/{incident_id}/approve")
async def approve_incident(request: web.Request) -> web.Response:
    incident_id = await _answer(request, approved=True)
    return web.json_response({"id": incident_id, "status": IncidentStatus.QUEUED.value})


@routes.post("/api/v1/incidents/{incident_id}/reject")
async def reject_incident(request: web.Request) -> web.Response:
    incident_id = await _answer(request, approved=False)
    return web.json_response({"id": incident_id, "status": IncidentStatus.CLOSED.value})


class HandoverRequest(BaseModel):
    """The body of escalate and close: why (required: it becomes the incident's reason) and who."""

    model_config = ConfigDict(extra="ignore", strict=True)

    reason: str = Field(min_length=1, max_length=1000, pattern=APPROVER_PATTERN)
    by: str = Field(default="api", min_length=1, max_length=100, pattern=APPROVER_PATTERN)


async def _handover(request: web.Request, to: IncidentStatus) -> web.Response:
    """A human takes the incident out of Remediator's hands (incidents/handover.py)."""
    verb = "escalating" if to is IncidentStatus.ESCALATED else "closing"
    _require_api_token(request, what=f"{verb} an incident")
    incident_id = _incident_id(request)
    body = await request.read() if request.can_read_body else b""
    if not body:
        raise PayloadInvalid(f"{verb} an incident needs a JSON body with its reason", field="reason")
    _require_json(request)
    parsed = _parsed_body(body, HandoverRequest)
    await take_over(
        request.app[keys.STORE], incident_id, to=to, by=parsed.by.strip(" "), reason=parsed.reason.strip(" ")
    )
    return web.json_response({"id": incident_id, "status": to.value})


@routes.post("/api/v1/incidents/{incident_id}/escalate")
async def escalate_incident(request: web.Request) -> web.Response:
    return await _handover(request, IncidentStatus.ESCALATED)


@routes.post("/api/v1/incidents/{incident_id}/close")
async def close_incident(request: web.Request) -> web.Response:
    return await _handover(request, IncidentStatus.CLOSED)


@routes.post("/api/v1/incidents/{incident_id}/explain")
async def explain_incident(request: web.Request) -> web.Response:
    # Explaining may call a paid model: always behind the API token, and capped per minute.
    _require_api_token(request, what="explaining")
    incident_id = _incident_id(request)
    detail = await _incident_document(request, incident_id)
    if not detail["decision"]:
        raise Conflict(f"incident {incident_id} has no decision yet", incident_id=incident_id)
    request.app[keys.EXPLAIN_LIMIT].admit("explaining")
    explanation = await request.app[keys.EXPLAINER].explain(detail)
    return web.json_response(
        {
            "id": incident_id,
            "summary": explanation.summary,
            "source": explanation.source,
            "fallback_reason": explanation.fallback_reason,
        }
    )


def openapi_document(limits: AlertLimits) -> dict[str, Any]:
    """The OpenAPI document with this server's webhook limits in the alert schemas."""
    document: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text())
    schemas = document["components"]["schemas"]
    schemas["AlertmanagerWebhook"]["properties"]["alerts"]["maxItems"] = limits.max_alerts
    alert = schemas["AlertmanagerAlert"]["properties"]
    for name in ("labels", "annotations"):
        alert[name]["maxProperties"] = limits.max_labels
        alert[name]["propertyNames"]["maxLength"] = limits.max_label_chars
    alert["labels"]["additionalProperties"]["maxLength"] = limits.max_label_chars
    return document


@routes.get("/api/v1/openapi.yaml")
async def openapi_yaml(request: web.Request) -> web.Response:
    document = openapi_document(request.app[keys.CONFIG].alert_limits)
    return web.Response(text=yaml.safe_dump(document, sort_keys=False), content_type="application/yaml")


@routes.get("/api/v1/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[keys.CONFIG].alert_limits))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return liveness()


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    warnings = [INSECURE_WARNING] if request.app[keys.CONFIG].insecure_no_auth else []
    return await readiness(request.app[keys.STORE], warnings=warnings)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return metrics_exposition(request.app[keys.REGISTRY])
