"""Changes to Cloud Run: traffic (rollback, release) and service-level scaling.

Every call has a timeout; 429, 5xx, timeouts and connection errors are retried with exponential
backoff a bounded number of times; 400/403/404/409 fail at once with the API's own message. Google
and requests errors are translated here, at the edge, into `CloudRunCallFailed` subclasses.

An update carries the etag of the Service it was computed from, when the caller has it: Cloud Run
then refuses it if the service changed since ("A system-generated fingerprint for this version of
the resource. May be used to detect modification conflict during updates.", Service.etag,
https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.services). Google's APIs
answer such a conflict with ABORTED (HTTP 409), "the client should retry at a higher level (e.g.,
restarting a read-modify-write sequence)", or FAILED_PRECONDITION (HTTP 400) for a conditional
update whose condition does not hold (google.rpc.Code,
https://github.com/googleapis/googleapis/blob/master/google/rpc/code.proto; resource freshness,
https://google.aip.dev/154). Either becomes `ServiceChanged`: a late apply (a worker that read the
service, then stalled while someone deployed or moved traffic) never overwrites the newer change.
One exception: when a retry of this same update is refused because an earlier attempt of it landed
(the answer was lost, the change was made, the etag moved on), the service already looks as the
update wants it, and that is success.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import requests
from google.api_core import exceptions as google_exceptions
from google.api_core.future import polling
from google.cloud import run_v2
from google.protobuf import field_mask_pb2

from actuator.config import RetryConfig
from actuator.exceptions import PermanentCloudRunError, ServiceChanged, TransientCloudRunError
from actuator.metrics import ActuatorMetrics
from collector import CloudRunClients, short_name

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_CODES = frozenset({408, 429, 500, 502, 503, 504})
# Google's status names for an update whose etag no longer matches (see the module docstring).
STALE_ETAG_STATUSES = frozenset({"ABORTED", "FAILED_PRECONDITION"})
# The client polls operations from 1 s up; traffic and scaling changes finish in well under that,
# and a rollback waiting a second for nothing is a second of outage.
OPERATION_POLLING = polling.DEFAULT_POLLING.with_delay(initial=0.1, multiplier=1.5, maximum=2.0)
TrafficType = run_v2.TrafficTargetAllocationType


def traffic_spec(service: run_v2.Service) -> list[dict[str, Any]]:
    """The service's traffic targets as plain data (for the action record, and to undo a change)."""
    return [
        {
            "type": "LATEST"
            if target.type_ == TrafficType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
            else "REVISION",
            "revision": short_name(target.revision) if target.revision else None,
            "percent": int(target.percent),
            **({"tag": target.tag} if target.tag else {}),
        }
        for target in service.traffic
    ]


def pinned_to(revision: str, *, current: run_v2.Service) -> list[run_v2.TrafficTarget]:
    """All traffic to `revision`, keeping the service's traffic tags."""
    return _all_traffic_to(
        run_v2.TrafficTarget(type_=TrafficType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION, revision=revision),
        current=current,
    )


def all_to_latest(*, current: run_v2.Service) -> list[run_v2.TrafficTarget]:
    """All traffic to the latest ready revision, keeping the service's traffic tags."""
    return _all_traffic_to(
        run_v2.TrafficTarget(type_=TrafficType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST), current=current
    )


def serves_only(target: run_v2.TrafficTarget, service: run_v2.Service) -> bool:
    """Whether the service's traffic already goes wholly to `target` (tags aside)."""
    serving = [t for t in service.traffic if t.percent > 0]
    return len(serving) == 1 and _same_target(serving[0], target) and serving[0].percent == 100


def _same_target(a: run_v2.TrafficTarget, b: run_v2.TrafficTarget) -> bool:
    if a.type_ != b.type_:
        return False
    if a.type_ == TrafficType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST:
        return True
    return short_name(a.revision) == short_name(b.revision)


def _all_traffic_to(target: run_v2.TrafficTarget, *, current: run_v2.Service) -> list[run_v2.TrafficTarget]:
    """`target` at 100%, and every tagged target of `current` kept at 0%.

    An update replaces the whole traffic list, and a tag lives on a traffic target ("a string to be
    part of the URI to exclusively reference this target", google.cloud.run.v2.TrafficTarget,
    https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.services#TrafficTarget):
    a rollback that sent only `target` would delete every tagged URL (a canary's, a pinned
    `stable`), which a rollback has no business doing. A tag already on `target` stays on it; one
    revision is named by one entry (Cloud Run refuses duplicate targets).
    """
    main = run_v2.TrafficTarget(type_=target.type_, revision=target.revision, percent=100)
    kept: list[run_v2.TrafficTarget] = []
    for existing in current.traffic:
        if not existing.tag:
            continue
        if _same_target(existing, target):
            main.tag = existing.tag
            continue
        kept.append(
            run_v2.TrafficTarget(
                type_=existing.type_,
                revision=short_name(existing.revision) or "",
                percent=0,
                tag=existing.tag,
            )
        )
    return [main, *kept]


class CloudRunChanger:
    def __init__(
        self,
        clients: CloudRunClients,
        *,
        retry: RetryConfig,
        metrics: ActuatorMetrics,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.clients = clients
        self.retry = retry
        self.metrics = metrics
        self._sleep = sleep

    async def get_service(self, service: str) -> run_v2.Service:
        return await self._call(
            "GetService",
            service,
            lambda: self.clients.services.get_service(
                name=self.clients.service_name(service), timeout=self.retry.call_timeout, retry=None
            ),
        )

    async def get_revision(self, service: str, revision: str) -> run_v2.Revision:
        return await self._call(
            "GetRevision",
            service,
            lambda: self.clients.revisions.get_revision(
                name=self.clients.revision_name(service, revision),
                timeout=self.retry.call_timeout,
                retry=None,
            ),
        )

    async def set_traffic(
        self, service: str, traffic: list[run_v2.TrafficTarget], *, etag: str | None = None
    ) -> run_v2.Service:
        """Set the service's traffic; with `etag`, only if the service is still the one read then."""
        body = run_v2.Service(name=self.clients.service_name(service), traffic=traffic, etag=etag or "")
        wanted = traffic_spec(body)
        return await self._update(
            service, body, ["traffic"], done=lambda found: traffic_spec(found) == wanted
        )

    async def set_scaling(
        self, service: str, *, min_instances: int, max_instances: int, etag: str | None = None
    ) -> run_v2.Service:
        """Set the service's min and max instances; with `etag`, only if the service is unchanged."""
        body = run_v2.Service(
            name=self.clients.service_name(service),
            scaling=run_v2.ServiceScaling(min_instance_count=min_instances, max_instance_count=max_instances),
            etag=etag or "",
        )

        def done(found: run_v2.Service) -> bool:
            scaling = found.scaling
            return (scaling.min_instance_count, scaling.max_instance_count) == (min_instances, max_instances)

        return await self._update(service, body, ["scaling"], done=done)

    async def _update(
        self,
        service: str,
        body: run_v2.Service,
        paths: list[str],
        *,
        done: Callable[[run_v2.Service], bool],
    ) -> run_v2.Service:
        request = run_v2.UpdateServiceRequest(service=body, update_mask=field_mask_pb2.FieldMask(paths=paths))

        def update_and_wait() -> run_v2.Service:
            operation = self.clients.services.update_service(
                request=request, timeout=self.retry.call_timeout, retry=None
            )
            return operation.result(timeout=self.retry.operation_timeout, polling=OPERATION_POLLING)

        # Setting traffic or scaling to given values is idempotent, so a retried update is safe; with
        # an etag, a retry whose earlier attempt landed is refused, and the re-read below tells.
        try:
            return await self._call("UpdateService", service, update_and_wait, conditional=bool(body.etag))
        except ServiceChanged:
            current = await self.get_service(service)
            if done(current):
                log.info(
                    "update refused for a stale etag, but the service already is as it asked",
                    extra={"service": service, "paths": paths},
                )
                return current
            raise

    async def _call(
        self, method: str, service: str, call: Callable[[], T], *, conditional: bool = False
    ) -> T:
        """`conditional`: the call carries an etag, so a refusal for a stale one is `ServiceChanged`
        (FAILED_PRECONDITION means other things on other calls)."""
        delay = self.retry.initial_delay
        for attempt in range(1, self.retry.attempts + 1):
            try:
                result = await asyncio.to_thread(call)
            except google_exceptions.GoogleAPICallError as exc:
                code = int(exc.code) if exc.code is not None else None
                if conditional and _stale_etag(exc):
                    self.metrics.cloud_run_calls.labels(method, "failed").inc()
                    raise ServiceChanged(
                        f"{method} refused: {service} changed since it was read (the etag no longer "
                        f"matches: {code} {exc.message}); nothing was applied",
                        code=code,
                        service=service,
                    ) from exc
                if code not in TRANSIENT_CODES:
                    self.metrics.cloud_run_calls.labels(method, "failed").inc()
                    raise PermanentCloudRunError(
                        f"{method} failed: {code} {exc.message}", code=code, service=service
                    ) from exc
                failure = f"{code} {exc.message}"
            except (
                requests.Timeout,
                requests.ConnectionError,
                concurrent.futures.TimeoutError,
                google_exceptions.RetryError,
            ) as exc:
                failure = f"{type(exc).__name__}: {exc}"[:300]
            else:
                self.metrics.cloud_run_calls.labels(method, "ok").inc()
                return result
            if attempt == self.retry.attempts:
                self.metrics.cloud_run_calls.labels(method, "failed").inc()
                raise TransientCloudRunError(
                    f"{method} failed after {attempt} attempts: {failure}", service=service
                )
            self.metrics.cloud_run_calls.labels(method, "retried").inc()
            log.warning(
                "Cloud Run call failed; retrying",
                extra={"service": service, "method": method, "attempt": attempt, "error": failure},
            )
            await self._sleep(delay)
            delay = min(delay * self.retry.multiplier, self.retry.max_delay)
        raise AssertionError("unreachable")


def _stale_etag(error: google_exceptions.GoogleAPICallError) -> bool:
    """Whether Cloud Run refused a call because an etag it carried no longer matches.

    Over REST the client picks the exception class from the HTTP status alone (409 Conflict, 400
    BadRequest), so the status name is read from the error body; a long-running operation's error
    comes back with its gRPC code (Aborted, FailedPrecondition).
    """
    if isinstance(error, google_exceptions.Aborted | google_exceptions.FailedPrecondition):
        return True
    response = getattr(error, "response", None)
    if response is None:
        return False
    try:
        status = response.json()["error"]["status"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return status in STALE_ETAG_STATUSES
