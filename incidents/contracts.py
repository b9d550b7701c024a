"""IncidentContext, Decision and Scenario, version 1 (see docs/contracts in the README), and the
actions the actuator executes.

The collector produces an `IncidentContext`, every decision engine reads one and answers with a
`Decision`, and the evaluation harness replays `Scenario` files. Unknown fields are ignored on input
so a newer producer never breaks an older consumer. Times are RFC 3339 UTC, rates are fractions,
latencies milliseconds, request rates requests per second.

An `ActionRequest` (`RollbackAction`, `ScaleAction`, `ReleaseAction`) is what the analyzer, an approval
or a manual command asks the actuator to do. The store keeps it as `actions.type` plus the JSON
`actions.params` (`ActionRequest.to_params()`), and the actuator reads it back through `read_action`,
which validates it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from incidents.exceptions import InvalidAction

CONTEXT_SCHEMA: Final = "incident-context/v1"


def _as_utc(value: datetime) -> datetime:
    # A naive time in a context is taken as UTC: every producer of this contract writes UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_rfc3339(value: datetime) -> str:
    """`2026-01-10T14:32:40Z`, with fractional seconds only when there are any."""
    value = _as_utc(value)
    text = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc), PlainSerializer(format_rfc3339, return_type=str)]


class _Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ActionType(StrEnum):
    ROLLBACK = "ROLLBACK"
    SCALE_UP = "SCALE_UP"
    INVESTIGATE = "INVESTIGATE"
    NONE = "NONE"


# Actions that change Cloud Run; the others leave it alone.
CHANGING_ACTIONS: frozenset[ActionType] = frozenset({ActionType.ROLLBACK, ActionType.SCALE_UP})


class ActionKind(StrEnum):
    """What the actuator is asked to do: `actions.type` in the store."""

    ROLLBACK = "ROLLBACK"  # all traffic to one named revision
    SCALE_UP = "SCALE_UP"  # service-level min/max instances, for a SCALE_UP decision
    SCALE = "SCALE"  # service-level min/max instances, as a human set them (`remediator scale`)
    RELEASE = "RELEASE"  # all traffic back to the latest ready revision (`remediator release`)


class ServiceRef(_Contract):
    name: str = Field(min_length=1)
    project: str = "local"
    region: str = "local"
    # The service as Cloud Run described it when the context was collected (optional: absent when
    # Cloud Run could not be read, and in contexts recorded before these existed). `generation`
    # grows with every change of the desired state; an approval is checked against it, so a human
    # never approves a decision made on a service that has changed since.
    generation: int | None = None
    etag: str | None = None


class AlertInfo(_Contract):
    name: str
    status: Literal["firing", "resolved"]
    severity: str | None = None
    starts_at: UtcDateTime
    ends_at: UtcDateTime | None = None
    fingerprint: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generator_url: str | None = None


class Thresholds(_Contract):
    error_rate: float = Field(ge=0, le=1)
    latency_p95_ms: float = Field(gt=0)
    min_requests: int = Field(ge=0)


class Figures(_Contract):
    """Request rate, error ratio and p95 latency over some window; null when unknown or no traffic."""

    request_rate_rps: float | None = None
    error_rate: float | None = None
    latency_p95_ms: float | None = None


class ServiceMetrics(Figures):
    window_seconds: int = Field(gt=0)
    requests_in_window: float | None = None
    baseline: Figures = Field(default_factory=Figures)
    # Extension: the length of the baseline window (it ends a little before the alert fired).
    baseline_window_seconds: int | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    series: dict[str, list[tuple[float, float]]] | None = None


class RevisionHistory(_Contract):
    """What a revision looked like while it last served traffic."""

    error_rate: float | None = None
    latency_p95_ms: float | None = None
    request_rate_rps: float | None = None
    served_until: UtcDateTime | None = None


class Revision(_Contract):
    name: str
    created_at: UtcDateTime | None = None
    traffic_percent: int = Field(default=0, ge=0, le=100)
    ready: bool = False
    latest: bool = False
    metrics: Figures = Field(default_factory=Figures)
    history: RevisionHistory | None = None
    # Extension: this revision's own figures in the baseline window before the alert. A revision
    # that served healthily before the onset did not bring the fault with its deploy.
    baseline: Figures | None = None


class Scaling(_Contract):
    min_instances: int | None = None
    max_instances: int | None = None
    current_instances: float | None = None
    concurrency: int | None = None
    cpu: str | None = None
    memory: str | None = None
    utilization: float | None = None


class LogLine(_Contract):
    timestamp: UtcDateTime | None = None
    severity: str = "DEFAULT"
    revision: str | None = None
    message: str = ""


class RecentAction(_Contract):
    # RELEASE (traffic back to LATEST) and SCALE (any min/max) are manual commands' actions.
    action: ActionType | ActionKind
    at: UtcDateTime
    target_revision: str | None = None
    # The revision the action moved traffic away from (a rollback's failing revision).
    from_revision: str | None = None
    outcome: str | None = None
    manual: bool = False


class IncidentContext(_Contract):
    schema_: Literal["incident-context/v1"] = Field(default=CONTEXT_SCHEMA, alias="schema")
    observed_at: UtcDateTime
    service: ServiceRef
    alert: AlertInfo
    thresholds: Thresholds
    metrics: ServiceMetrics
    revisions: list[Revision] = Field(default_factory=list)
    scaling: Scaling = Field(default_factory=Scaling)
    logs: list[LogLine] = Field(default_factory=list)
    recent_actions: list[RecentAction] = Field(default_factory=list)
    gaps: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _newest_first(self) -> IncidentContext:
        # `revisions` is newest first, and which revision is older decides the rollback target. A
        # producer that lists them in another order but gives every creation time is put in order;
        # one without all the times is read as written (analyzer/evidence.py refuses a rollback
        # when the times it has contradict that order).
        known = [r.created_at for r in self.revisions if r.created_at is not None]
        if len(known) == len(self.revisions) and known != sorted(known, reverse=True):
            order = sorted(range(len(known)), key=known.__getitem__, reverse=True)
            self.revisions = [self.revisions[index] for index in order]
        return self

    def revision(self, name: str | None) -> Revision | None:
        return next((r for r in self.revisions if r.name == name), None)

    def serving_revisions(self) -> list[Revision]:
        """Revisions with a traffic share, newest first. A revision reached only through its tag URL
        (smoke tests) has requests but no share: it does not serve the service."""
        return [r for r in self.revisions if r.traffic_percent > 0]

    def newest_serving_revision(self) -> Revision | None:
        """The newest revision with a traffic share: what a rollback moves traffic away from."""
        return next((r for r in self.revisions if r.traffic_percent > 0), None)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class ScaleChange(_Contract):
    min_instances: int = Field(ge=0)
    max_instances: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ScaleChange:
        if self.min_instances > self.max_instances:
            raise ValueError("min_instances must not exceed max_instances")
        return self


class Decision(_Contract):
    action: ActionType
    target_revision: str | None = None
    scale: ScaleChange | None = None
    confidence: float = Field(ge=0, le=1)
    root_cause: str = ""
    explanation: str = ""
    evidence: list[str] = Field(default_factory=list)
    engine: str = "rules"

    @model_validator(mode="after")
    def _complete(self) -> Decision:
        if self.action is ActionType.ROLLBACK and not self.target_revision:
            raise ValueError("a ROLLBACK decision needs target_revision")
        if self.action is ActionType.SCALE_UP and self.scale is None:
            raise ValueError("a SCALE_UP decision needs scale")
        return self

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def action_request(self, *, from_revision: str | None = None) -> ActionRequest:
        """The action this decision asks the actuator for; ValueError for INVESTIGATE and NONE.

        `from_revision` is the revision a rollback moves traffic away from, when known.
        """
        if self.action is ActionType.ROLLBACK:
            return RollbackAction(
                target_revision=self.target_revision or "",
                from_revision=from_revision,
                decision_engine=self.engine,
            )
        if self.action is ActionType.SCALE_UP and self.scale is not None:
            return ScaleAction(
                type=ActionKind.SCALE_UP,
                min_instances=self.scale.min_instances,
                max_instances=self.scale.max_instances,
                decision_engine=self.engine,
            )
        raise ValueError(f"a {self.action.value} decision asks for no action")


def describe_decision(decision: Decision) -> str:
    """A decision in words, for timelines and policy reasons: `roll back to X`, `investigate`."""
    if decision.action in CHANGING_ACTIONS:
        try:
            return decision.action_request().describe()
        except ValueError:  # an incomplete copy of a decision: say what it is
            pass
    return decision.action.value.lower()


class _ActionFields(_Contract):
    # The engine whose decision asked for the action; None when a human asked.
    decision_engine: str | None = None

    def to_params(self) -> dict[str, Any]:
        """`actions.params` in the store: every field but the type, and none that is unset."""
        return self.model_dump(mode="json", exclude={"type"}, exclude_none=True)


class RollbackAction(_ActionFields):
    type: Literal[ActionKind.ROLLBACK] = ActionKind.ROLLBACK
    target_revision: str = Field(min_length=1)
    # The revision traffic moves away from (the failing one), when known.
    from_revision: str | None = None

    def describe(self, service: str | None = None) -> str:
        where = f" {service}" if service else ""
        return f"roll back{where} to {self.target_revision}"


class ScaleAction(ScaleChange, _ActionFields):
    type: Literal[ActionKind.SCALE_UP, ActionKind.SCALE] = ActionKind.SCALE_UP

    def describe(self, service: str | None = None) -> str:
        where = f" {service}" if service else ""
        return f"scale{where} to min {self.min_instances} / max {self.max_instances} instances"


class ReleaseAction(_ActionFields):
    type: Literal[ActionKind.RELEASE] = ActionKind.RELEASE

    def describe(self, service: str | None = None) -> str:
        return f"release {service or 'the service'} to its latest ready revision"


ActionRequest = Annotated[RollbackAction | ScaleAction | ReleaseAction, Field(discriminator="type")]
_ACTION_REQUEST: TypeAdapter[ActionRequest] = TypeAdapter(ActionRequest)


def read_action(type_: str, params: Mapping[str, Any] | None) -> ActionRequest:
    """Validate a stored action (`actions.type`, `actions.params`); `InvalidAction` says what is wrong."""
    if type_ not in ActionKind.__members__:
        known = ", ".join(kind.value for kind in ActionKind)
        raise InvalidAction(f"unknown action type {type_!r} (known: {known})")
    try:
        return _ACTION_REQUEST.validate_python({**(params or {}), "type": type_})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != type_)
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidAction(
            f"{type_} action with params {dict(params or {})} is invalid: "
            + (f"{where}: {message}" if where else message)
        ) from None


class Expectation(_Contract):
    action: ActionType
    target_revision: str | None = None
    acceptable: list[ActionType] = Field(default_factory=list)
    forbidden: list[ActionType] = Field(default_factory=list)


class Scenario(_Contract):
    id: str = Field(min_length=1)
    category: str
    description: str = ""
    context: IncidentContext
    expect: Expectation
