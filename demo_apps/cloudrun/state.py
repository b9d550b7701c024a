"""Every service of the emulator and the rules for changing them, without I/O.

The registry validates a whole request before it changes anything, so a rejected request leaves no
trace. It decides what a change needs (a new revision to start, new routing, new capacity) and the
control plane carries that out, reporting back with `mark_ready` / `mark_failed`.
"""

from __future__ import annotations

import random
import secrets
import string
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from demo_apps.cloudrun.exceptions import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from demo_apps.cloudrun.model import (
    INGRESS_TRAFFIC_ALL,
    LAUNCH_STAGE_GA,
    SERVICE_ID_PATTERN,
    SERVICE_OUTPUT_FIELDS,
    CommonReason,
    ConditionState,
    Revision,
    RevisionReason,
    Service,
    TrafficTarget,
    TrafficType,
    apply_update_mask,
    normalize_template,
    parse_traffic,
    resolve_traffic,
    utcnow,
    validate_service_scaling,
    validate_template,
)

_SPECIAL_FIELDS = ("template", "traffic", "scaling")


def random_suffix() -> str:
    return "".join(random.choices(string.ascii_lowercase, k=3))


def new_etag() -> str:
    return secrets.token_urlsafe(12)


@dataclass(frozen=True, slots=True)
class Change:
    """What an accepted create/update needs from the control plane."""

    service: Service
    new_revision: Revision | None
    routing_changed: bool
    scaling_changed: bool


class Registry:
    def __init__(
        self,
        *,
        project: str,
        location: str,
        clock: Callable[[], datetime] = utcnow,
        suffix: Callable[[], str] = random_suffix,
    ) -> None:
        self.project = project
        self.location = location
        self._clock = clock
        self._suffix = suffix
        self._services: dict[str, Service] = {}

    # -- reads ---------------------------------------------------------------------------------

    def check_location(self, project: str, location: str) -> None:
        if project != self.project or location != self.location:
            raise NotFound(
                f"projects/{project}/locations/{location} is not served by this emulator "
                f"(it serves projects/{self.project}/locations/{self.location})"
            )

    def get(self, service_id: str) -> Service:
        service = self._services.get(service_id)
        if service is None:
            raise NotFound(
                f"Resource 'projects/{self.project}/locations/{self.location}/services/{service_id}' "
                "was not found",
            )
        return service

    def list(self) -> list[Service]:
        return sorted(self._services.values(), key=lambda service: service.service_id)

    def get_revision(self, service_id: str, revision: str) -> Revision:
        service = self.get(service_id)
        found = service.revisions.get(revision)
        if found is None:
            raise NotFound(f"Resource '{service.revision_name(revision)}' was not found")
        return found

    def find_service(self, service_id: str) -> Service | None:
        return self._services.get(service_id)

    def find_revision(self, service_id: str, revision: str) -> Revision | None:
        service = self._services.get(service_id)
        return None if service is None else service.revisions.get(revision)

    # -- writes --------------------------------------------------------------------------------

    def create(self, service_id: str, body: Mapping[str, Any], *, uri: str, validate_only: bool) -> Change:
        if not SERVICE_ID_PATTERN.match(service_id or ""):
            raise InvalidArgument(
                f"Invalid value '{service_id}' for service_id: must use only lowercase letters, digits and "
                "hyphens, start with a letter, not end with a hyphen, and be at most 49 characters"
            )
        if service_id in self._services:
            raise AlreadyExists(f"Resource '{self._services[service_id].name}' already exists")
        name = f"projects/{self.project}/locations/{self.location}/services/{service_id}"
        _check_body_name(body, name)
        spec, template, traffic, scaling = _split(body, service_id)
        revision_name = str(template.get("revision") or "")
        for target in traffic:
            if target.type is TrafficType.REVISION and target.revision != revision_name:
                raise InvalidArgument(f"spec.traffic: Revision '{target.revision}' was not found")
        now = self._clock()
        service = Service(
            project=self.project,
            location=self.location,
            service_id=service_id,
            uid=str(uuid.uuid4()),
            uri=uri,
            create_time=now,
            update_time=now,
            generation=1,
            etag=new_etag(),
            spec=spec,
            template=template,
            traffic=traffic,
            scaling=scaling,
        )
        if validate_only:
            return Change(service, None, routing_changed=False, scaling_changed=False)
        self._services[service_id] = service
        revision = self._new_revision(service, now)
        return Change(service, revision, routing_changed=False, scaling_changed=False)

    def update(
        self,
        service_id: str,
        body: Mapping[str, Any],
        *,
        mask: Sequence[str] | None,
        validate_only: bool,
    ) -> Change:
        service = self.get(service_id)
        _check_body_name(body, service.name)
        etag = str(body.get("etag", ""))
        # An update carrying an etag is refused once the service changed since: ABORTED (HTTP 409),
        # what Google's APIs answer a stale etag with (https://google.aip.dev/154; google.rpc.Code
        # ABORTED: "retry at a higher level (e.g., restarting a read-modify-write sequence)").
        if etag and etag != service.etag:
            raise Aborted(f"etag '{etag}' does not match the current etag of '{service.name}'")
        if mask:
            merged = apply_update_mask(_writable(service), body, mask)
        else:
            merged = {key: value for key, value in body.items() if key not in SERVICE_OUTPUT_FIELDS}
        spec, template, traffic, scaling = _split(merged, service_id)
        template_changed = template != service.template
        new_name = ""
        if template_changed:
            new_name = str(template.get("revision") or "")
            if new_name and new_name in service.revisions:
                raise AlreadyExists(
                    f"Revision named '{new_name}' with different configuration already exists"
                )
        if traffic != service.traffic:
            self._check_traffic_targets(service, traffic, pending=new_name, deploying=template_changed)
        if validate_only:
            return Change(service, None, routing_changed=False, scaling_changed=False)

        now = self._clock()
        scaling_changed = scaling != service.scaling
        service.spec, service.template, service.traffic, service.scaling = spec, template, traffic, scaling
        service.generation += 1
        service.update_time = now
        service.etag = new_etag()
        revision = self._new_revision(service, now) if template_changed else None
        routing_changed = self._reroute(service)
        self._settle(service)
        return Change(service, revision, routing_changed=routing_changed, scaling_changed=scaling_changed)

    def delete(self, service_id: str, *, etag: str = "") -> Service:
        service = self.get(service_id)
        if etag and etag != service.etag:
            raise Aborted(f"etag '{etag}' does not match the current etag of '{service.name}'")
        del self._services[service_id]
        return service

    def delete_revision(self, service_id: str, revision_name: str) -> Revision:
        service = self.get(service_id)
        revision = self.get_revision(service_id, revision_name)
        if revision_name in service.routing_weights() or any(
            target.revision == revision_name for target in service.traffic
        ):
            raise FailedPrecondition(f"Revision '{revision_name}' is serving traffic and cannot be deleted")
        if revision_name == service.latest_created:
            raise FailedPrecondition(
                f"Revision '{revision_name}' is the latest created revision and cannot be deleted"
            )
        del service.revisions[revision_name]
        if service.latest_ready == revision_name:
            ready = service.ready_revisions()
            service.latest_ready = ready[-1].name if ready else ""
        return revision

    def mark_ready(self, service_id: str, revision_name: str) -> bool:
        """A revision became ready; returns whether the served traffic changed."""
        service = self._services.get(service_id)
        revision = None if service is None else service.revisions.get(revision_name)
        if service is None or revision is None:
            return False
        revision.state = ConditionState.SUCCEEDED
        revision.message = ""
        revision.reason = CommonReason.UNDEFINED
        revision.revision_reason = RevisionReason.UNDEFINED
        revision.transition_time = revision.update_time = self._clock()
        ready = service.ready_revisions()
        service.latest_ready = ready[-1].name
        changed = self._reroute(service)
        self._settle(service)
        return changed

    def mark_failed(
        self,
        service_id: str,
        revision_name: str,
        *,
        message: str,
        reason: CommonReason,
        revision_reason: RevisionReason = RevisionReason.UNDEFINED,
    ) -> None:
        service = self._services.get(service_id)
        revision = None if service is None else service.revisions.get(revision_name)
        if service is None or revision is None:
            return
        revision.state = ConditionState.FAILED
        revision.message = message
        revision.reason = reason
        revision.revision_reason = revision_reason
        revision.transition_time = revision.update_time = self._clock()
        self._settle(service)

    # -- internals -----------------------------------------------------------------------------

    def _new_revision(self, service: Service, now: datetime) -> Revision:
        service.revision_counter += 1
        name = str(service.template.get("revision") or "")
        while not name or name in service.revisions:
            name = f"{service.service_id}-{service.revision_counter:05d}-{self._suffix()}"
        revision = Revision(
            name=name,
            service_id=service.service_id,
            uid=str(uuid.uuid4()),
            generation=1,
            template=service.template,
            create_time=now,
            update_time=now,
        )
        service.revisions[name] = revision
        service.latest_created = name
        return revision

    def _check_traffic_targets(
        self, service: Service, traffic: Sequence[TrafficTarget], *, pending: str, deploying: bool
    ) -> None:
        for target in traffic:
            if target.type is TrafficType.LATEST:
                if not deploying and not service.latest_ready:
                    raise InvalidArgument(
                        f"spec.traffic: Service '{service.service_id}' has no ready revision to send LATEST "
                        "traffic to"
                    )
                continue
            if deploying and target.revision == pending:
                continue
            revision = service.revisions.get(target.revision)
            if revision is None:
                raise InvalidArgument(f"spec.traffic: Revision '{target.revision}' was not found")
            if not revision.ready:
                raise InvalidArgument(
                    f"spec.traffic: Revision '{target.revision}' is not ready and cannot serve traffic"
                )

    def _reroute(self, service: Service) -> bool:
        routing = resolve_traffic(
            service.traffic,
            latest_ready=service.latest_ready,
            ready=(revision.name for revision in service.ready_revisions()),
        )
        if routing is None or routing == service.routing:
            return False
        service.routing = routing
        return True

    def _settle(self, service: Service) -> None:
        latest = service.revisions.get(service.latest_created)
        if latest is None or latest.state is not ConditionState.RECONCILING:
            service.observed_generation = service.generation


def _writable(service: Service) -> dict[str, Any]:
    return {
        **service.spec,
        "template": service.template,
        "traffic": [target.as_json() for target in service.traffic],
        "scaling": service.scaling,
    }


def _check_body_name(body: Mapping[str, Any], name: str) -> None:
    given = str(body.get("name", ""))
    if given and given != name:
        raise InvalidArgument(f"service.name: '{given}' does not match the request's '{name}'")


def _split(
    body: Mapping[str, Any], service_id: str
) -> tuple[dict[str, Any], dict[str, Any], tuple[TrafficTarget, ...], dict[str, Any]]:
    spec = {
        key: value
        for key, value in body.items()
        if key not in SERVICE_OUTPUT_FIELDS and key not in _SPECIAL_FIELDS
    }
    spec.setdefault("ingress", INGRESS_TRAFFIC_ALL)
    spec.setdefault("launchStage", LAUNCH_STAGE_GA)
    template = dict(body.get("template") or {})
    validate_template(template, service_id)
    scaling = dict(body.get("scaling") or {})
    validate_service_scaling(scaling)
    traffic = parse_traffic(body.get("traffic") or [])
    return spec, normalize_template(template), traffic, scaling
