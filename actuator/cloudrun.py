"""Changes to Cloud Run: traffic (rollback, release) and service-level scaling.

Every call has a timeout; 429, 5xx, timeouts and connection errors are retried with exponential
backoff a bounded number of times; 400/403/404/409 fail at once with the API's own message. Google
and requests errors are translated here, at the edge, into `CloudRunCallFailed` subclasses.
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
from actuator.exceptions import PermanentCloudRunError, TransientCloudRunError
from actuator.metrics import ActuatorMetrics
from collector import CloudRunClients, short_name

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_CODES = frozenset({408, 429, 500, 502, 503, 504})
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


def pinned_to(revision: str) -> list[run_v2.TrafficTarget]:
    return [
        run_v2.TrafficTarget(
            type_=TrafficType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION, revision=revision, percent=100
        )
    ]


def all_to_latest() -> list[run_v2.TrafficTarget]:
    return [run_v2.TrafficTarget(type_=TrafficType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST, percent=100)]


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

    async def set_traffic(self, service: str, traffic: list[run_v2.TrafficTarget]) -> run_v2.Service:
        body = run_v2.Service(name=self.clients.service_name(service), traffic=traffic)
        return await self._update(service, body, ["traffic"])

    async def set_scaling(self, service: str, *, min_instances: int, max_instances: int) -> run_v2.Service:
        body = run_v2.Service(
            name=self.clients.service_name(service),
            scaling=run_v2.ServiceScaling(min_instance_count=min_instances, max_instance_count=max_instances),
        )
        return await self._update(service, body, ["scaling"])

    async def _update(self, service: str, body: run_v2.Service, paths: list[str]) -> run_v2.Service:
        request = run_v2.UpdateServiceRequest(service=body, update_mask=field_mask_pb2.FieldMask(paths=paths))

        def update_and_wait() -> run_v2.Service:
            operation = self.clients.services.update_service(
                request=request, timeout=self.retry.call_timeout, retry=None
            )
            return operation.result(timeout=self.retry.operation_timeout, polling=OPERATION_POLLING)

        # Setting traffic or scaling to given values is idempotent, so a retried update is safe.
        return await self._call("UpdateService", service, update_and_wait)

    async def _call(self, method: str, service: str, call: Callable[[], T]) -> T:
        delay = self.retry.initial_delay
        for attempt in range(1, self.retry.attempts + 1):
            try:
                result = await asyncio.to_thread(call)
            except google_exceptions.GoogleAPICallError as exc:
                code = int(exc.code) if exc.code is not None else None
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
