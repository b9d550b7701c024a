"""Runs the Cloud Run emulator in-process for a test and drives it with the real google-cloud-run clients."""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from google.api_core.client_options import ClientOptions
from google.api_core.future import polling
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2

from demo_apps.cloudrun import EmulatorConfig, create_app
from demo_apps.cloudrun.control import ControlPlane
from demo_apps.cloudrun.keys import CONTROL_PLANE_KEY
from tests.support.real_parts import free_port

T = TypeVar("T")

PARENT = "projects/local/locations/local"
# The client's default polling starts at 1 s; the emulator's operations finish in well under that.
FAST_POLLING = polling.DEFAULT_POLLING.with_delay(initial=0.05, multiplier=1.5, maximum=0.25)
OPERATION_TIMEOUT_S = 30.0
# The shop's capacity model, made fast for tests: no cold start, no simulated work.
FAST_SHOP_ENV = {"DEMO_COLD_START_MS": "0", "DEMO_SERVICE_TIME_MS": "0"}
TEST_CONFIG = EmulatorConfig(startup_timeout_s=15.0, stop_timeout_s=3.0)


def shop_template(
    env: Mapping[str, str] | None = None, *, image: str = "demo-app-a", **fields: Any
) -> run_v2.RevisionTemplate:
    """A RevisionTemplate running the shop with `env` on top of FAST_SHOP_ENV."""
    merged = {**FAST_SHOP_ENV, **(env or {})}
    container = run_v2.Container(
        image=image, env=[run_v2.EnvVar(name=name, value=value) for name, value in merged.items()]
    )
    return run_v2.RevisionTemplate(containers=[container], **fields)


def revision_id(name: str) -> str:
    return name.rsplit("/", 1)[-1]


@dataclass
class Emulator:
    base_url: str
    app: web.Application
    services: run_v2.ServicesClient
    revisions: run_v2.RevisionsClient
    http: aiohttp.ClientSession

    @property
    def control(self) -> ControlPlane:
        return self.app[CONTROL_PLANE_KEY]

    @staticmethod
    def name(service_id: str) -> str:
        return f"{PARENT}/services/{service_id}"

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The clients are synchronous: run them off the event loop, as the product does."""
        return await asyncio.to_thread(function, *args, **kwargs)

    async def wait(self, operation: Any) -> Any:
        return await self.call(operation.result, timeout=OPERATION_TIMEOUT_S, polling=FAST_POLLING)

    async def create(
        self, service_id: str, template: run_v2.RevisionTemplate, **fields: Any
    ) -> run_v2.Service:
        service = run_v2.Service(template=template, **fields)
        operation = await self.call(
            self.services.create_service, parent=PARENT, service=service, service_id=service_id
        )
        return await self.wait(operation)

    async def get(self, service_id: str) -> run_v2.Service:
        return await self.call(self.services.get_service, name=self.name(service_id))

    async def deploy_env(self, service_id: str, env: Mapping[str, str]) -> run_v2.Service:
        """Change the template's environment (a new revision), the way a client does: get, edit, update."""
        service = await self.get(service_id)
        container = service.template.containers[0]
        current = {item.name: item.value for item in container.env}
        current.update(env)
        del container.env[:]
        container.env.extend(run_v2.EnvVar(name=name, value=value) for name, value in current.items())
        operation = await self.call(self.services.update_service, service=service)
        return await self.wait(operation)

    async def set_traffic(self, service_id: str, split: Mapping[str, int]) -> run_v2.Service:
        service = await self.get(service_id)
        del service.traffic[:]
        for revision, percent in split.items():
            if revision == "LATEST":
                target = run_v2.TrafficTarget(
                    type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                    percent=percent,
                )
            else:
                target = run_v2.TrafficTarget(
                    type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                    revision=revision,
                    percent=percent,
                )
            service.traffic.append(target)
        operation = await self.call(self.services.update_service, service=service)
        return await self.wait(operation)

    async def list_revisions(self, service_id: str) -> list[run_v2.Revision]:
        return await self.call(lambda: list(self.revisions.list_revisions(parent=self.name(service_id))))

    async def served_by(
        self, uri: str, count: int, *, path: str = "/api/catalog", parallel: int = 16
    ) -> collections.Counter[str]:
        """How many of `count` requests through the router each revision answered (its X-Revision)."""
        counts: collections.Counter[str] = collections.Counter()
        semaphore = asyncio.Semaphore(parallel)

        async def one() -> None:
            async with semaphore, self.http.get(uri + path) as response:
                await response.read()
                counts[f"{response.status} {response.headers.get('X-Revision', '-')}"] += 1

        await asyncio.gather(*(one() for _ in range(count)))
        return counts

    def pids(self) -> list[int]:
        pids = []
        for service in self.control.registry.list():
            for revision in service.revisions:
                process = self.control.process(service.service_id, revision)
                if process is not None and process.pid is not None:
                    pids.append(process.pid)
        return pids


def clients(base_url: str) -> tuple[run_v2.ServicesClient, run_v2.RevisionsClient]:
    options = ClientOptions(api_endpoint=base_url)
    services = run_v2.ServicesClient(
        transport="rest", credentials=AnonymousCredentials(), client_options=options
    )
    revisions = run_v2.RevisionsClient(
        transport="rest", credentials=AnonymousCredentials(), client_options=options
    )
    return services, revisions


@asynccontextmanager
async def running_emulator(config: EmulatorConfig = TEST_CONFIG) -> AsyncIterator[Emulator]:
    port = free_port()
    config = replace(config, port=port)
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        base_url = f"http://127.0.0.1:{port}"
        services, revisions = clients(base_url)
        async with aiohttp.ClientSession() as http:
            yield Emulator(base_url=base_url, app=app, services=services, revisions=revisions, http=http)
        services.transport.close()
        revisions.transport.close()
    finally:
        await runner.cleanup()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def google_status(error: BaseException) -> str:
    """The Google status name (INVALID_ARGUMENT, ALREADY_EXISTS, ...) of a REST error.

    Over REST the client picks the exception class from the HTTP status alone (400 -> BadRequest,
    409 -> Conflict), as it does against Cloud Run itself; the status name is in the body.
    """
    response = getattr(error, "response", None)
    assert response is not None, f"{error!r} carries no HTTP response"
    return str(response.json()["error"]["status"])
