"""The control plane: carries out what the registry accepted, with processes, routers and operations.

A create, or an update that changes the template, answers at once with an operation that is not
done; a background task starts the new revision's process, waits for its health check and then
reports to the registry, which moves traffic if the traffic spec says so, and finishes the operation
(with the Service, or with the revision's failure). Updates that need no new process (traffic,
service-level scaling, labels) are applied before the answer, and their operation is already done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

import aiohttp

from demo_apps.cloudrun.codec import REVISION_TYPE_URL, SERVICE_TYPE_URL
from demo_apps.cloudrun.config import MAX_RESTART_BACKOFF_S, EmulatorConfig
from demo_apps.cloudrun.exceptions import FailedPrecondition
from demo_apps.cloudrun.images import command_for_image
from demo_apps.cloudrun.logstore import LogOrigin, LogStore
from demo_apps.cloudrun.model import (
    RESERVED_ENV_NAMES,
    CommonReason,
    Revision,
    Service,
    effective_capacity,
    utcnow,
)
from demo_apps.cloudrun.operations import Operation, OperationStore
from demo_apps.cloudrun.platform_metrics import PlatformMetrics
from demo_apps.cloudrun.resources import revision_resource, service_resource
from demo_apps.cloudrun.revisions import ProcessSettings, RevisionProcess, RevisionStartError, free_port
from demo_apps.cloudrun.router import Route, ServiceRouter
from demo_apps.cloudrun.state import Change, Registry

logger = logging.getLogger(__name__)

# Never inherited from the emulator's own environment: the platform or the template sets them.
_NOT_INHERITED_PREFIXES = ("DEMO_",)
_NOT_INHERITED = RESERVED_ENV_NAMES | {"HOST"}


FIRST_SCRAPE_POLL_S = 0.2


def _seconds(duration: Any, default: float) -> float:
    text = str(duration or "")
    if text.endswith("s"):
        with contextlib.suppress(ValueError):
            return float(text[:-1])
    return default


class ControlPlane:
    def __init__(
        self,
        *,
        config: EmulatorConfig,
        logs: LogStore,
        proxy_session: aiohttp.ClientSession,
        control_session: aiohttp.ClientSession,
        platform: PlatformMetrics | None = None,
    ) -> None:
        self.config = config
        self.logs = logs
        self.platform = platform
        self.registry = Registry(project=config.project, location=config.region)
        self.operations = OperationStore(project=config.project, location=config.region)
        self._proxy_session = proxy_session
        self._control_session = control_session
        self._routers: dict[str, ServiceRouter] = {}
        self._processes: dict[tuple[str, str], RevisionProcess] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()
        self._closed = False
        self._settings = ProcessSettings(
            host=config.bind_host,
            startup_timeout_s=config.startup_timeout_s,
            stop_timeout_s=config.stop_timeout_s,
            restart_backoff_s=config.restart_backoff_s,
            max_restart_backoff_s=MAX_RESTART_BACKOFF_S,
            echo_logs=config.echo_revision_logs,
        )

    # -- services --------------------------------------------------------------------------------

    async def create_service(
        self, service_id: str, body: Mapping[str, Any], *, validate_only: bool
    ) -> dict[str, Any]:
        async with self._write_lock:
            if validate_only:
                change = self.registry.create(service_id, body, uri="", validate_only=True)
                return self._done(change.service)
            # Validate before opening a port, so a rejected request leaves nothing behind.
            self.registry.create(service_id, body, uri="", validate_only=True)
            platform = self.platform
            router = ServiceRouter(
                service=service_id,
                host=self.config.bind_host,
                session=self._proxy_session,
                on_request=(
                    (
                        lambda revision, status, seconds: platform.record_request(
                            service_id, revision, status, seconds * 1000.0
                        )
                    )
                    if platform is not None
                    else None
                ),
            )
            await router.start()
            try:
                change = self.registry.create(service_id, body, uri=router.uri, validate_only=False)
            except BaseException:
                await router.close()
                raise
            self._routers[service_id] = router
            logger.info("service created", extra={"service": service_id, "uri": router.uri})
            return self._carry_out(change)

    async def update_service(
        self,
        service_id: str,
        body: Mapping[str, Any],
        *,
        mask: Sequence[str] | None,
        validate_only: bool,
        allow_missing: bool,
    ) -> dict[str, Any]:
        if allow_missing and self.registry.find_service(service_id) is None:
            return await self.create_service(service_id, body, validate_only=validate_only)
        async with self._write_lock:
            change = self.registry.update(service_id, body, mask=mask, validate_only=validate_only)
            if validate_only:
                return self._done(change.service)
            if change.routing_changed:
                self._apply_routing(change.service)
            if change.scaling_changed:
                await self._push_capacity(change.service)
            logger.info(
                "service updated",
                extra={
                    "service": service_id,
                    "generation": change.service.generation,
                    "new_revision": change.new_revision.name if change.new_revision else None,
                },
            )
            return self._carry_out(change)

    async def delete_service(self, service_id: str, *, etag: str, validate_only: bool) -> dict[str, Any]:
        async with self._write_lock:
            if validate_only:
                return self._done(self.registry.get(service_id))
            service = self.registry.delete(service_id, etag=etag)
            resource = service_resource(service, delete_time=utcnow())
            operation = self.operations.start(type_url=SERVICE_TYPE_URL, metadata=resource)
            self._spawn(self._tear_down(service, resource, operation), f"delete {service_id}")
            logger.info("service deleted", extra={"service": service_id})
            return operation.as_json()

    def get_service(self, service_id: str) -> dict[str, Any]:
        return service_resource(self.registry.get(service_id))

    def list_services(self) -> list[dict[str, Any]]:
        return [service_resource(service) for service in self.registry.list()]

    # -- revisions -------------------------------------------------------------------------------

    def get_revision(self, service_id: str, revision: str) -> dict[str, Any]:
        service = self.registry.get(service_id)
        return revision_resource(service, self.registry.get_revision(service_id, revision))

    def list_revisions(self, service_id: str) -> list[dict[str, Any]]:
        service = self.registry.get(service_id)
        newest_first = sorted(
            service.revisions.values(),
            key=lambda revision: (revision.create_time, revision.name),
            reverse=True,
        )
        return [revision_resource(service, revision) for revision in newest_first]

    async def delete_revision(
        self, service_id: str, revision_name: str, *, validate_only: bool
    ) -> dict[str, Any]:
        async with self._write_lock:
            service = self.registry.get(service_id)
            revision = self.registry.get_revision(service_id, revision_name)
            resource = revision_resource(service, revision)
            if not validate_only:
                self.registry.delete_revision(service_id, revision_name)
                process = self._processes.pop((service_id, revision_name), None)
                if process is not None:
                    await process.stop()
            operation = self.operations.start(type_url=REVISION_TYPE_URL, metadata=resource)
            self.operations.succeed(operation, resource)
            return operation.as_json()

    # -- service discovery -----------------------------------------------------------------------

    def sd_targets(self) -> list[dict[str, Any]]:
        groups = []
        # A revision is listed from the moment its process exists, not once it is ready: Prometheus
        # can then scrape it (its series at zero) before it takes traffic, and count its first request.
        for (service_id, revision_name), process in sorted(self._processes.items()):
            if not process.running:
                continue
            groups.append(
                {
                    "targets": [process.address],
                    "labels": {
                        "service": service_id,
                        "revision": revision_name,
                        "configuration": service_id,
                        "project": self.config.project,
                        "region": self.config.region,
                    },
                }
            )
        return groups

    async def probe_capacity(self) -> None:
        """Read every running revision's instances and utilization into the platform metrics. A
        revision that does not answer gets no reading: its gauge has no point for the period."""
        if self.platform is None:
            return
        platform = self.platform
        probes = [(key, process) for key, process in self._processes.items() if process.ready]

        async def probe(service_id: str, revision_name: str, process: RevisionProcess) -> None:
            url = f"http://{process.address}/_emulator/scaling"
            try:
                async with self._control_session.get(
                    url, timeout=aiohttp.ClientTimeout(total=2.0)
                ) as response:
                    if response.status != 200:
                        return
                    state = await response.json()
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return
            platform.record_capacity(
                service_id,
                revision_name,
                instances=int(state.get("instances", 0)),
                busy=int(state.get("busy", 0)),
                concurrency=int(state.get("concurrency", 1)),
                utilization=float(state.get("utilization", 0.0)),
            )

        await asyncio.gather(*(probe(service, revision, process) for (service, revision), process in probes))

    def process(self, service_id: str, revision_name: str) -> RevisionProcess | None:
        return self._processes.get((service_id, revision_name))

    def router(self, service_id: str) -> ServiceRouter | None:
        return self._routers.get(service_id)

    # -- lifecycle -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every revision process and router; nothing the emulator started outlives this."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        processes = list(self._processes.values())
        self._processes.clear()
        await asyncio.gather(*(process.stop() for process in processes), return_exceptions=True)
        routers = list(self._routers.values())
        self._routers.clear()
        await asyncio.gather(*(router.close() for router in routers), return_exceptions=True)
        logger.info("control plane stopped", extra={"processes": len(processes), "routers": len(routers)})

    # -- internals -------------------------------------------------------------------------------

    def _done(self, service: Service) -> dict[str, Any]:
        resource = service_resource(service)
        operation = self.operations.start(type_url=SERVICE_TYPE_URL, metadata=resource)
        self.operations.succeed(operation, resource)
        return operation.as_json()

    def _carry_out(self, change: Change) -> dict[str, Any]:
        if change.new_revision is None:
            return self._done(change.service)
        resource = service_resource(change.service)
        operation = self.operations.start(type_url=SERVICE_TYPE_URL, metadata=resource)
        self._spawn(
            self._deploy(change.service, change.new_revision, operation),
            f"deploy {change.new_revision.name}",
        )
        return operation.as_json()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deploy(self, service: Service, revision: Revision, operation: Operation) -> None:
        try:
            await self._start_revision(service, revision)
        except RevisionStartError as exc:
            self.registry.mark_failed(
                service.service_id,
                revision.name,
                message=exc.message,
                reason=exc.reason,
                revision_reason=exc.revision_reason,
            )
            logger.warning("revision failed", extra={"revision": revision.name, "error": exc.message})
            self.operations.fail(
                operation,
                FailedPrecondition(
                    f"Revision '{revision.name}' is not ready and cannot serve traffic. {exc.message}"
                ),
            )
            return
        if self.registry.find_revision(service.service_id, revision.name) is None:
            # The service (or the revision) was deleted while the revision started.
            process = self._processes.pop((service.service_id, revision.name), None)
            if process is not None:
                await process.stop()
            self.operations.fail(operation, FailedPrecondition(f"Service '{service.service_id}' was deleted"))
            return
        process = self._processes.get((service.service_id, revision.name))
        if process is not None:
            await self._await_first_scrape(service, process)
        if self.registry.mark_ready(service.service_id, revision.name):
            self._apply_routing(service)
        logger.info("revision ready", extra={"revision": revision.name})
        self.operations.succeed(operation, service_resource(service))

    async def _await_first_scrape(self, service: Service, process: RevisionProcess) -> None:
        """Hold a new revision's traffic until Prometheus has scraped it once, when something
        scrapes this service's revisions (`first_scrape_wait_s`; at most that long).

        Cloud Run takes seconds between a revision's container start and its traffic; Prometheus'
        discovery and first scrape of a new target take about as long (a discovery refresh, two
        5 s reload cycles inside Prometheus, then up to one scrape interval). Waiting for the scrape
        makes each request series' first sample a zero, so a revision failing from its first request
        shows every error to rate(), as one failing later does. A service nothing scrapes (no older
        revision was scraped) is routed at once: there is no scraper to wait for.
        """
        wait = self.config.first_scrape_wait_s
        if wait <= 0:
            return
        others = [
            other
            for (service_id, _), other in self._processes.items()
            if service_id == service.service_id and other is not process and other.ready
        ]
        if not others or not any(await asyncio.gather(*(self._scrapes(other) for other in others))):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            if await self._scrapes(process):
                return
            await asyncio.sleep(FIRST_SCRAPE_POLL_S)
        logger.warning(
            "revision not scraped before taking traffic",
            extra={"revision": process.origin.revision, "waited_s": wait},
        )

    async def _scrapes(self, process: RevisionProcess) -> int:
        """How many times the revision's /metrics was read (0 when it cannot say)."""
        try:
            async with self._control_session.get(
                f"http://{process.address}/_emulator/scrapes", timeout=aiohttp.ClientTimeout(total=1.0)
            ) as response:
                if response.status != 200:
                    return 0
                return int((await response.json()).get("scrapes", 0))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return 0

    async def _start_revision(self, service: Service, revision: Revision) -> RevisionProcess:
        origin = LogOrigin(
            project=self.config.project,
            location=self.config.region,
            service=service.service_id,
            revision=revision.name,
        )
        argv = command_for_image(revision.image, self.config.images)
        if argv is None:
            message = (
                f"Image '{revision.image}' not found. The emulator runs these images: "
                f"{', '.join(sorted(self.config.images))}."
            )
            self.logs.append_system(origin, message, severity="ERROR")
            raise RevisionStartError(message, reason=CommonReason.CONTAINER_MISSING)
        in_use = frozenset(process.port for process in self._processes.values())
        in_use |= frozenset(router.port for router in self._routers.values())
        port = free_port(self.config.bind_host, avoid=in_use)
        process = RevisionProcess(
            origin=origin,
            argv=argv,
            env=self._environment(service, revision, port),
            capacity=effective_capacity(service.scaling, revision.template),
            port=port,
            logs=self.logs,
            session=self._control_session,
            settings=self._settings,
        )
        self._processes[(service.service_id, revision.name)] = process
        try:
            await process.start()
        except BaseException:
            self._processes.pop((service.service_id, revision.name), None)
            await process.stop()
            raise
        return process

    def _environment(self, service: Service, revision: Revision, port: int) -> dict[str, str]:
        base = os.environ if self.config.base_env is None else self.config.base_env
        env = {
            key: value
            for key, value in base.items()
            if key not in _NOT_INHERITED and not key.startswith(_NOT_INHERITED_PREFIXES)
        }
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(revision.env())
        env.update(
            {
                "PORT": str(port),
                "HOST": self.config.bind_host,
                "K_SERVICE": service.service_id,
                "K_REVISION": revision.name,
                "K_CONFIGURATION": service.service_id,
            }
        )
        return env

    def _apply_routing(self, service: Service) -> None:
        router = self._routers.get(service.service_id)
        if router is None:
            return
        routes = []
        for revision_name, percent in service.routing_weights().items():
            process = self._processes.get((service.service_id, revision_name))
            revision = service.revisions.get(revision_name)
            if process is None or revision is None:
                logger.error("routed revision has no process", extra={"revision": revision_name})
                continue
            routes.append(
                Route(
                    revision=revision_name,
                    port=process.port,
                    percent=percent,
                    timeout_s=_seconds(revision.template.get("timeout"), 300.0),
                )
            )
        router.set_routes(routes)
        logger.info("traffic routed", extra={"service": service.service_id, "split": router.split()})

    async def _push_capacity(self, service: Service) -> None:
        pushes = []
        for revision in service.revisions.values():
            process = self._processes.get((service.service_id, revision.name))
            if process is not None:
                pushes.append(process.push_capacity(effective_capacity(service.scaling, revision.template)))
        if pushes:
            await asyncio.gather(*pushes)

    async def _tear_down(self, service: Service, resource: dict[str, Any], operation: Operation) -> None:
        router = self._routers.pop(service.service_id, None)
        if router is not None:
            await router.close()
        processes = [
            self._processes.pop(key)
            for key in [key for key in self._processes if key[0] == service.service_id]
        ]
        await asyncio.gather(*(process.stop() for process in processes), return_exceptions=True)
        self.operations.succeed(operation, resource)
