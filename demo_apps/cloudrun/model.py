"""The emulator's data model: services, revisions, traffic and scaling, without I/O.

Resources keep the user's writable fields as the normalised JSON the codec produced (camelCase keys,
integer enums), so every field Cloud Run accepts round-trips; what the emulator acts on (traffic,
scaling, readiness) is typed here.

Scaling rule (service-level `Service.scaling` combined with a revision's `template.scaling`):

- manual scaling (`scalingMode` MANUAL): min = max = `manualInstanceCount`;
- otherwise min = the larger of the service's and the revision's `minInstanceCount` (both are floors:
  Cloud Run keeps the revision's minimum while the service-level minimum is also honoured);
- max = the service's `maxInstanceCount` if set, else the revision's, else 100;
- min is capped at max, and max is at least 1 (a process always serves).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from demo_apps.cloudrun.exceptions import InvalidArgument

DEFAULT_CONCURRENCY = 80
MAX_CONCURRENCY = 1000
DEFAULT_MAX_INSTANCES = 100
DEFAULT_REQUEST_TIMEOUT = "300s"
LAUNCH_STAGE_GA = 4
INGRESS_TRAFFIC_ALL = 1
SCALING_MODE_MANUAL = 2

# Cloud Run: lowercase letters, digits and hyphens, starting with a letter, at most 49 characters.
SERVICE_ID_PATTERN = re.compile(r"^[a-z](?:[-a-z0-9]{0,47}[a-z0-9])?$")
REVISION_NAME_PATTERN = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
# Set by the platform; Cloud Run refuses them in a template.
RESERVED_ENV_NAMES = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"})

# Fields of a Service the platform owns: ignored in requests, filled in answers.
SERVICE_OUTPUT_FIELDS = frozenset(
    {
        "name",
        "uid",
        "generation",
        "createTime",
        "updateTime",
        "deleteTime",
        "expireTime",
        "creator",
        "lastModifier",
        "urls",
        "observedGeneration",
        "terminalCondition",
        "conditions",
        "latestReadyRevision",
        "latestCreatedRevision",
        "trafficStatuses",
        "uri",
        "satisfiesPzs",
        "reconciling",
        "etag",
    }
)
# RevisionTemplate fields that a Revision carries under the same name.
TEMPLATE_TO_REVISION_FIELDS = (
    "labels",
    "annotations",
    "scaling",
    "vpcAccess",
    "maxInstanceRequestConcurrency",
    "timeout",
    "serviceAccount",
    "containers",
    "volumes",
    "executionEnvironment",
    "encryptionKey",
    "serviceMesh",
    "encryptionKeyShutdownDuration",
    "sessionAffinity",
    "nodeSelector",
    "gpuZonalRedundancyDisabled",
)


class TrafficType(IntEnum):
    UNSPECIFIED = 0
    LATEST = 1
    REVISION = 2


class ConditionState(IntEnum):
    UNSPECIFIED = 0
    PENDING = 1
    RECONCILING = 2
    FAILED = 3
    SUCCEEDED = 4


class ConditionSeverity(IntEnum):
    UNSPECIFIED = 0
    ERROR = 1
    WARNING = 2
    INFO = 3


class CommonReason(IntEnum):
    UNDEFINED = 0
    UNKNOWN = 1
    REVISION_FAILED = 3
    PROGRESS_DEADLINE_EXCEEDED = 4
    CONTAINER_MISSING = 6


class RevisionReason(IntEnum):
    UNDEFINED = 0
    PENDING = 1
    HEALTH_CHECK_CONTAINER_ERROR = 6


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class TrafficTarget:
    """One entry of `Service.traffic` as requested."""

    type: TrafficType
    revision: str = ""
    percent: int = 0
    tag: str = ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": int(self.type)}
        if self.revision:
            out["revision"] = self.revision
        if self.percent:
            out["percent"] = self.percent
        if self.tag:
            out["tag"] = self.tag
        return out


@dataclass(frozen=True, slots=True)
class TrafficStatus:
    """One entry of `Service.traffic_statuses`: a target resolved to the revision it serves."""

    type: TrafficType
    revision: str
    percent: int
    tag: str = ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": int(self.type), "revision": self.revision}
        if self.percent:
            out["percent"] = self.percent
        if self.tag:
            out["tag"] = self.tag
        return out


LATEST_ONLY: tuple[TrafficTarget, ...] = (TrafficTarget(TrafficType.LATEST, percent=100),)


@dataclass(frozen=True, slots=True)
class Capacity:
    """What a revision process is told about its capacity (`PUT /_emulator/scaling`)."""

    min_instances: int
    max_instances: int
    concurrency: int

    def as_json(self) -> dict[str, int]:
        return {
            "min_instances": self.min_instances,
            "max_instances": self.max_instances,
            "concurrency": self.concurrency,
        }

    def as_env(self) -> dict[str, str]:
        return {
            "DEMO_CONCURRENCY": str(self.concurrency),
            "DEMO_MIN_INSTANCES": str(self.min_instances),
            "DEMO_MAX_INSTANCES": str(self.max_instances),
        }


def effective_capacity(service_scaling: Mapping[str, Any], template: Mapping[str, Any]) -> Capacity:
    """Combine service-level and revision-level scaling (the rule is in the module docstring)."""
    concurrency = int(template.get("maxInstanceRequestConcurrency") or DEFAULT_CONCURRENCY)
    if int(service_scaling.get("scalingMode", 0)) == SCALING_MODE_MANUAL:
        count = int(service_scaling.get("manualInstanceCount", 0))
        return Capacity(min_instances=count, max_instances=max(count, 1), concurrency=concurrency)
    revision_scaling = template.get("scaling") or {}
    minimum = max(
        int(service_scaling.get("minInstanceCount", 0)), int(revision_scaling.get("minInstanceCount", 0))
    )
    maximum = int(
        service_scaling.get("maxInstanceCount")
        or revision_scaling.get("maxInstanceCount")
        or DEFAULT_MAX_INSTANCES
    )
    maximum = max(maximum, 1)
    return Capacity(min_instances=min(minimum, maximum), max_instances=maximum, concurrency=concurrency)


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    state: ConditionState
    message: str = ""
    last_transition_time: datetime | None = None
    severity: ConditionSeverity = ConditionSeverity.UNSPECIFIED
    reason: CommonReason = CommonReason.UNDEFINED
    revision_reason: RevisionReason = RevisionReason.UNDEFINED

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "state": int(self.state)}
        if self.message:
            out["message"] = self.message
        if self.last_transition_time is not None:
            out["lastTransitionTime"] = rfc3339(self.last_transition_time)
        if self.severity:
            out["severity"] = int(self.severity)
        # `reason` and `revisionReason` are one oneof: the more specific one wins.
        if self.revision_reason:
            out["revisionReason"] = int(self.revision_reason)
        elif self.reason:
            out["reason"] = int(self.reason)
        return out


@dataclass(slots=True)
class Revision:
    name: str
    service_id: str
    uid: str
    generation: int
    template: dict[str, Any]
    create_time: datetime
    update_time: datetime
    state: ConditionState = ConditionState.RECONCILING
    message: str = ""
    reason: CommonReason = CommonReason.UNDEFINED
    revision_reason: RevisionReason = RevisionReason.PENDING
    transition_time: datetime | None = None

    @property
    def ready(self) -> bool:
        return self.state is ConditionState.SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.state is ConditionState.FAILED

    @property
    def container(self) -> dict[str, Any]:
        return self.template["containers"][0]

    @property
    def image(self) -> str:
        return str(self.container.get("image", ""))

    def env(self) -> dict[str, str]:
        return {item["name"]: str(item.get("value", "")) for item in self.container.get("env", [])}

    def ready_condition(self) -> Condition:
        severity = ConditionSeverity.ERROR if self.failed else ConditionSeverity.UNSPECIFIED
        return Condition(
            type="Ready",
            state=self.state,
            message=self.message,
            last_transition_time=self.transition_time or self.create_time,
            severity=severity,
            reason=self.reason,
            revision_reason=self.revision_reason if not self.ready else RevisionReason.UNDEFINED,
        )


@dataclass(slots=True)
class Service:
    project: str
    location: str
    service_id: str
    uid: str
    uri: str
    create_time: datetime
    update_time: datetime
    generation: int
    etag: str
    # Writable fields other than template, traffic and scaling (description, labels, ingress, ...).
    spec: dict[str, Any]
    template: dict[str, Any]
    traffic: tuple[TrafficTarget, ...]
    scaling: dict[str, Any]
    revisions: dict[str, Revision] = field(default_factory=dict)
    revision_counter: int = 0
    latest_created: str = ""
    latest_ready: str = ""
    # The traffic actually served: the last traffic spec that resolved to ready revisions.
    routing: tuple[TrafficStatus, ...] = ()
    observed_generation: int = 0

    @property
    def name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/services/{self.service_id}"

    def revision_name(self, revision: str) -> str:
        return f"{self.name}/revisions/{revision}"

    def ready_revisions(self) -> list[Revision]:
        return [revision for revision in self.revisions.values() if revision.ready]

    def routing_weights(self) -> dict[str, int]:
        """Percent of requests per revision, summed over targets."""
        weights: dict[str, int] = {}
        for status in self.routing:
            if status.percent:
                weights[status.revision] = weights.get(status.revision, 0) + status.percent
        return weights


def normalize_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """A template with Cloud Run's defaults filled in, so equal templates compare equal."""
    out = copy.deepcopy(dict(template))
    out.setdefault("maxInstanceRequestConcurrency", DEFAULT_CONCURRENCY)
    out.setdefault("timeout", DEFAULT_REQUEST_TIMEOUT)
    scaling = out.setdefault("scaling", {})
    scaling.setdefault("maxInstanceCount", DEFAULT_MAX_INSTANCES)
    return out


def validate_template(template: Mapping[str, Any], service_id: str) -> None:
    containers = template.get("containers") or []
    if not containers:
        raise InvalidArgument("spec.template.containers: at least one container is required")
    if not str(containers[0].get("image", "")).strip():
        raise InvalidArgument("spec.template.containers[0].image: an image is required")
    for index, container in enumerate(containers):
        reserved = sorted({item.get("name", "") for item in container.get("env", [])} & RESERVED_ENV_NAMES)
        if reserved:
            raise InvalidArgument(
                f"spec.template.containers[{index}].env: The following reserved env names were provided: "
                f"{', '.join(reserved)}. These values are automatically set by the system."
            )
        for item in container.get("env", []):
            if "valueSource" in item:
                raise InvalidArgument(
                    f"spec.template.containers[{index}].env[{item.get('name', '')}]: valueSource "
                    "(Secret Manager) is not supported by the emulator; use value"
                )
    concurrency = int(template.get("maxInstanceRequestConcurrency", 0))
    if not 0 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidArgument(
            f"spec.template.max_instance_request_concurrency: must be between 1 and {MAX_CONCURRENCY}"
        )
    _validate_bounds(template.get("scaling") or {}, "spec.template.scaling")
    revision = str(template.get("revision", ""))
    if revision:
        if not revision.startswith(f"{service_id}-"):
            raise InvalidArgument(
                f"spec.template.revision: Revision name must be prefixed by the name of the enclosing "
                f"Service: '{service_id}-'"
            )
        if not REVISION_NAME_PATTERN.match(revision):
            raise InvalidArgument(
                f"spec.template.revision: '{revision}' must use only lowercase letters, digits and hyphens"
            )


def validate_service_scaling(scaling: Mapping[str, Any]) -> None:
    _validate_bounds(scaling, "spec.scaling")
    if int(scaling.get("manualInstanceCount", 0)) < 0:
        raise InvalidArgument("spec.scaling.manual_instance_count: must not be negative")


def _validate_bounds(scaling: Mapping[str, Any], where: str) -> None:
    minimum = int(scaling.get("minInstanceCount", 0))
    maximum = int(scaling.get("maxInstanceCount", 0))
    if minimum < 0 or maximum < 0:
        raise InvalidArgument(f"{where}: instance counts must not be negative")
    if maximum and minimum > maximum:
        raise InvalidArgument(
            f"{where}: min_instance_count ({minimum}) must not be greater than max_instance_count ({maximum})"
        )


def parse_traffic(items: Sequence[Mapping[str, Any]]) -> tuple[TrafficTarget, ...]:
    """`Service.traffic` as typed targets, with the structural checks Cloud Run makes."""
    if not items:
        return LATEST_ONLY
    targets: list[TrafficTarget] = []
    for index, item in enumerate(items):
        raw_type = int(item.get("type", 0))
        revision = str(item.get("revision", ""))
        percent = int(item.get("percent", 0))
        if raw_type == TrafficType.UNSPECIFIED and revision:
            raw_type = TrafficType.REVISION
        if raw_type not in (TrafficType.LATEST, TrafficType.REVISION):
            raise InvalidArgument(f"spec.traffic[{index}].type: must be LATEST (1) or REVISION (2)")
        traffic_type = TrafficType(raw_type)
        if traffic_type is TrafficType.REVISION and not revision:
            raise InvalidArgument(f"spec.traffic[{index}].revision: required for a REVISION target")
        if traffic_type is TrafficType.LATEST and revision:
            raise InvalidArgument(f"spec.traffic[{index}].revision: must be empty for a LATEST target")
        if not 0 <= percent <= 100:
            raise InvalidArgument(f"spec.traffic[{index}].percent: must be between 0 and 100, got {percent}")
        targets.append(TrafficTarget(traffic_type, revision, percent, str(item.get("tag", ""))))
    keys = [target.revision if target.type is TrafficType.REVISION else "LATEST" for target in targets]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise InvalidArgument(f"spec.traffic: duplicate targets for {', '.join(duplicates)}")
    tags = [target.tag for target in targets if target.tag]
    if len(tags) != len(set(tags)):
        raise InvalidArgument("spec.traffic: tags must be unique")
    total = sum(target.percent for target in targets)
    if total != 100:
        raise InvalidArgument(f"spec.traffic: percents must add up to 100, got {total}")
    return tuple(targets)


def resolve_traffic(
    targets: Iterable[TrafficTarget], *, latest_ready: str, ready: Iterable[str]
) -> tuple[TrafficStatus, ...] | None:
    """Targets resolved to ready revisions, or None while one of them cannot be served."""
    ready_names = set(ready)
    statuses: list[TrafficStatus] = []
    for target in targets:
        revision = latest_ready if target.type is TrafficType.LATEST else target.revision
        if not revision or revision not in ready_names:
            return None
        statuses.append(TrafficStatus(target.type, revision, target.percent, target.tag))
    return tuple(statuses)


def apply_update_mask(current: Mapping[str, Any], patch: Mapping[str, Any], paths: Iterable[str]) -> dict:
    """Copy each masked path from `patch` into a copy of `current` (absent in `patch`: cleared)."""
    out = copy.deepcopy(dict(current))
    for path in paths:
        parts = [_camel(part) for part in path.split(".") if part]
        if not parts:
            continue
        source: Any = patch
        for part in parts:
            source = source.get(part) if isinstance(source, Mapping) else None
        target = out
        for part in parts[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = {}
                target[part] = child
            target = child
        if source is None:
            target.pop(parts[-1], None)
        else:
            target[parts[-1]] = copy.deepcopy(source)
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)
