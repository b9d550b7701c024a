"""HTTP handlers of the analyzer: the Alertmanager webhook, the incidents API, health and metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from analyzer import approvals, keys
from analyzer.exceptions import Conflict, FeatureDisabled, PayloadInvalid, Unauthorized
from analyzer.middlewares import status_for
from analyzer.views import incident_detail, incident_summary
from analyzer.webhook import ingest, parse_payload
from incidents import IncidentStatus
from incidents.endpoints import liveness, metrics_exposition, readiness
from incidents.models import utcnow
from incidents.repository import ActionRepository, IncidentRepository
from incidents.secrets import Secret

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
MAX_LIST_LIMIT = 500

routes = web.RouteTableDef()


def _require_bearer(request: web.Request, token: Secret | None, *, what: str) -> None:
    if token is None:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials or not token.matches(credentials.strip()):
        raise Unauthorized(f"{what} needs a valid bearer token")


def _incident_id(request: web.Request) -> int:
    raw = request.match_info["incident_id"]
    try:
        value = int(raw)
    except ValueError:
        raise PayloadInvalid(f"incident id must be an integer, got {raw!r}", field="incident_id") from None
    if value < 1:
        raise PayloadInvalid("incident id must be positive", field="incident_id")
    return value


@routes.post("/api/v1/alerts")
async def receive_alerts(request: web.Request) -> web.Response:
    """Alertmanager webhook (v4). Answers 2xx only once every alert is durably recorded."""
    app = request.app
    metrics = app[keys.METRICS]
    started = time.perf_counter()
    try:
        _require_bearer(request, app[keys.CONFIG].webhook_token, what="the webhook")
        payload = parse_payload(await request.read())
        result = await ingest(app[keys.STORE], payload, now=utcnow(), recent=app[keys.RECENT_NOTIFICATIONS])
    except Exception as exc:
        code = exc.status if isinstance(exc, web.HTTPException) else status_for(exc)
        metrics.webhook_requests.labels(str(code)).inc()
        raise
    finally:
        metrics.webhook_duration.observe(time.perf_counter() - started)
    metrics.webhook_requests.labels("200").inc()
    for outcome in ("new", "duplicate", "resolved", "ignored"):
        metrics.alerts_received.labels(outcome).inc(getattr(result, outcome))
    metrics.incidents_opened.inc(len(result.opened_incidents))
    metrics.incidents_ended.labels("closed").inc(len(result.closed_incidents))
    app[keys.PROCESSOR].notify(result.opened_incidents)
    return web.json_response(result.as_dict())


@routes.get("/api/v1/incidents")
async def list_incidents(request: web.Request) -> web.Response:
    query = request.query
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        raise PayloadInvalid("limit must be an integer", field="limit") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise PayloadInvalid(f"limit must be between 1 and {MAX_LIST_LIMIT}", field="limit")
    statuses = [s for s in query.get("status", "").split(",") if s]
    valid = {s.value for s in IncidentStatus}
    unknown = [s for s in statuses if s not in valid]
    if unknown:
        raise PayloadInvalid(
            f"unknown status {', '.join(unknown)}; one of {', '.join(sorted(valid))}", field="status"
        )
    async with request.app[keys.STORE].session() as session:
        repo = IncidentRepository(session)
        rows = await repo.list_incidents(
            limit=limit, status=statuses or None, service=query.get("service") or None
        )
        alerts = await repo.list_alerts_for([row.id for row in rows])
    return web.json_response({"incidents": [incident_summary(row, alerts[row.id]) for row in rows]})


@routes.get("/api/v1/incidents/{incident_id}")
async def get_incident(request: web.Request) -> web.Response:
    return web.json_response(await _incident_document(request, _incident_id(request)))


async def _incident_document(request: web.Request, incident_id: int) -> dict[str, Any]:
    async with request.app[keys.STORE].session() as session:
        repo = IncidentRepository(session)
        incident = await repo.get(incident_id)
        alerts = await repo.list_alerts(incident_id)
        actions = await ActionRepository(session).list_for_incident(incident_id)
        events = await repo.events.list_for_incident(incident_id)
    return incident_detail(incident, alerts, actions, events)


async def _approval_request(request: web.Request) -> tuple[int, str, str | None]:
    token = request.app[keys.CONFIG].api_token
    if token is None:
        raise FeatureDisabled("approvals are disabled: set REMEDIATOR_API_TOKEN to enable them")
    _require_bearer(request, token, what="approving or rejecting")
    incident_id = _incident_id(request)
    body: Any = {}
    if request.can_read_body:
        try:
            body = json.loads(await request.read() or b"{}")
        except json.JSONDecodeError as exc:
            raise PayloadInvalid(f"malformed JSON: {exc.msg}", field="body") from None
    if not isinstance(body, dict):
        raise PayloadInvalid("body must be a JSON object", field="body")
    by = body.get("by", "api")
    comment = body.get("comment")
    if not isinstance(by, str) or not by.strip() or len(by) > 100:
        raise PayloadInvalid("by must be a non-empty string of at most 100 characters", field="by")
    if comment is not None and (not isinstance(comment, str) or len(comment) > 1000):
        raise PayloadInvalid("comment must be a string of at most 1000 characters", field="comment")
    return incident_id, by.strip(), comment


@routes.post("/api/v1/incidents/{incident_id}/approve")
async def approve_incident(request: web.Request) -> web.Response:
    incident_id, by, comment = await _approval_request(request)
    await approvals.approve(request.app[keys.STORE], incident_id, by=by, comment=comment, now=utcnow())
    return web.json_response({"id": incident_id, "status": IncidentStatus.QUEUED.value})


@routes.post("/api/v1/incidents/{incident_id}/reject")
async def reject_incident(request: web.Request) -> web.Response:
    incident_id, by, comment = await _approval_request(request)
    await approvals.reject(request.app[keys.STORE], incident_id, by=by, comment=comment, now=utcnow())
    return web.json_response({"id": incident_id, "status": IncidentStatus.CLOSED.value})


@routes.post("/api/v1/incidents/{incident_id}/explain")
async def explain_incident(request: web.Request) -> web.Response:
    # Explaining may call a paid model, so it sits behind the API token when one is configured.
    _require_bearer(request, request.app[keys.CONFIG].api_token, what="explaining")
    incident_id = _incident_id(request)
    detail = await _incident_document(request, incident_id)
    if not detail["decision"]:
        raise Conflict(f"incident {incident_id} has no decision yet", incident_id=incident_id)
    explanation = await request.app[keys.EXPLAINER].explain(detail)
    return web.json_response(
        {
            "id": incident_id,
            "summary": explanation.summary,
            "source": explanation.source,
            "fallback_reason": explanation.fallback_reason,
        }
    )


@routes.get("/api/v1/openapi.yaml")
async def openapi_yaml(request: web.Request) -> web.Response:
    return web.Response(text=OPENAPI_PATH.read_text(), content_type="application/yaml")


@routes.get("/api/v1/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(yaml.safe_load(OPENAPI_PATH.read_text()))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return liveness()


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    return await readiness(request.app[keys.STORE])


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return metrics_exposition(request.app[keys.REGISTRY])
