"""Services and revisions as the Admin API answers them (JSON, camelCase, integer enums)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from demo_apps.cloudrun.codec import render_revision, render_service
from demo_apps.cloudrun.model import (
    TEMPLATE_TO_REVISION_FIELDS,
    Condition,
    ConditionSeverity,
    ConditionState,
    Revision,
    Service,
    effective_capacity,
    rfc3339,
)


def service_resource(service: Service, *, delete_time: datetime | None = None) -> dict[str, Any]:
    latest = service.revisions.get(service.latest_created)
    reconciling = latest is not None and latest.state is ConditionState.RECONCILING
    ready = _service_ready(service, latest)
    out: dict[str, Any] = {
        **service.spec,
        "name": service.name,
        "uid": service.uid,
        "generation": str(service.generation),
        "createTime": rfc3339(service.create_time),
        "updateTime": rfc3339(service.update_time),
        "creator": "emulator@local",
        "lastModifier": "emulator@local",
        "template": service.template,
        "traffic": [target.as_json() for target in service.traffic],
        "urls": [service.uri],
        "uri": service.uri,
        "observedGeneration": str(service.observed_generation),
        "terminalCondition": ready.as_json(),
        "conditions": [condition.as_json() for condition in _service_conditions(service, latest, ready)],
        "trafficStatuses": [status.as_json() for status in service.routing],
        "reconciling": reconciling,
        "etag": service.etag,
    }
    if service.scaling:
        out["scaling"] = service.scaling
    if service.latest_created:
        out["latestCreatedRevision"] = service.revision_name(service.latest_created)
    if service.latest_ready:
        out["latestReadyRevision"] = service.revision_name(service.latest_ready)
    if delete_time is not None:
        out["deleteTime"] = rfc3339(delete_time)
    return render_service(out)


def _service_ready(service: Service, latest: Revision | None) -> Condition:
    if latest is None:
        return Condition(type="Ready", state=ConditionState.PENDING, last_transition_time=service.update_time)
    if latest.state is ConditionState.FAILED:
        return Condition(
            type="Ready",
            state=ConditionState.FAILED,
            message=f"Revision '{latest.name}' is not ready and cannot serve traffic. {latest.message}",
            last_transition_time=latest.transition_time,
            severity=ConditionSeverity.ERROR,
            reason=latest.reason,
        )
    if latest.state is ConditionState.RECONCILING:
        return Condition(
            type="Ready",
            state=ConditionState.RECONCILING,
            message=f"Deploying revision '{latest.name}'.",
            last_transition_time=service.update_time,
        )
    return Condition(
        type="Ready",
        state=ConditionState.SUCCEEDED,
        last_transition_time=max(service.update_time, latest.transition_time or latest.create_time),
    )


def _service_conditions(service: Service, latest: Revision | None, ready: Condition) -> list[Condition]:
    routes = Condition(
        type="RoutesReady",
        state=ConditionState.SUCCEEDED if service.routing else ConditionState.PENDING,
        last_transition_time=service.update_time,
    )
    configurations = Condition(
        type="ConfigurationsReady",
        state=ready.state if latest is not None else ConditionState.PENDING,
        message=ready.message,
        last_transition_time=ready.last_transition_time,
        severity=ready.severity,
        reason=ready.reason,
    )
    return [routes, configurations]


def revision_resource(service: Service, revision: Revision) -> dict[str, Any]:
    template = revision.template
    capacity = effective_capacity(service.scaling, template)
    out: dict[str, Any] = {
        field: template[field] for field in TEMPLATE_TO_REVISION_FIELDS if field in template
    }
    out.update(
        {
            "name": service.revision_name(revision.name),
            "uid": revision.uid,
            "generation": str(revision.generation),
            "createTime": rfc3339(revision.create_time),
            "updateTime": rfc3339(revision.update_time),
            "launchStage": service.spec.get("launchStage", 0),
            "service": service.name,
            "reconciling": revision.state is ConditionState.RECONCILING,
            "conditions": [revision.ready_condition().as_json()],
            "observedGeneration": "0" if revision.state is ConditionState.RECONCILING else "1",
            "scalingStatus": {"desiredMinInstanceCount": capacity.min_instances},
            "etag": f"{revision.uid}-{int(revision.state)}",
        }
    )
    return render_revision(out)
