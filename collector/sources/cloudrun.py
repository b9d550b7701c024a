"""Cloud Run service and revision state through the Admin API v2 (google-cloud-run, REST transport).

The same code talks to real Cloud Run (application default credentials) and to the local emulator
(`CLOUD_RUN_ENDPOINT=http://127.0.0.1:8090`, anonymous). The client is synchronous; calls run in
threads. Clients are built once per process (`CloudRunClients.for_collector`) and shared with the actuator.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.api_core import exceptions as google_exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import run_v2

from collector.config import CollectorConfig
from collector.exceptions import SourceFailed

SOURCE = "cloud_run"
READY = "Ready"
DEFAULT_MAX_INSTANCES = 100  # Cloud Run's default when neither service nor revision sets one


@dataclass(frozen=True)
class CloudRunClients:
    services: run_v2.ServicesClient
    revisions: run_v2.RevisionsClient
    project: str
    region: str

    @classmethod
    def create(
        cls, *, project: str, region: str, endpoint: str | None = None, credentials: Credentials | None = None
    ) -> CloudRunClients:
        """Clients for real Cloud Run (endpoint None) or an emulator at `endpoint` (anonymous)."""
        options = ClientOptions(api_endpoint=endpoint) if endpoint else None
        if credentials is None and endpoint and endpoint.startswith("http://"):
            credentials = AnonymousCredentials()
        return cls(
            services=run_v2.ServicesClient(transport="rest", client_options=options, credentials=credentials),
            revisions=run_v2.RevisionsClient(
                transport="rest", client_options=options, credentials=credentials
            ),
            project=project,
            region=region,
        )

    @classmethod
    def for_collector(cls, config: CollectorConfig) -> CloudRunClients:
        """The clients as the collector's settings describe them (project, region, endpoint)."""
        return cls.create(project=config.project, region=config.region, endpoint=config.cloud_run_endpoint)

    def service_name(self, service: str) -> str:
        return f"projects/{self.project}/locations/{self.region}/services/{service}"

    def revision_name(self, service: str, revision: str) -> str:
        return f"{self.service_name(service)}/revisions/{revision}"

    def close(self) -> None:
        self.services.transport.close()
        self.revisions.transport.close()


def short_name(resource: str) -> str:
    return resource.rsplit("/", 1)[-1]


def is_ready(resource: Any) -> bool:
    """A Service or Revision is ready when its Ready condition succeeded."""
    for condition in resource.conditions:
        if condition.type_ == READY:
            return bool(condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED)
    terminal = getattr(resource, "terminal_condition", None)
    return bool(
        terminal and terminal.type_ == READY and terminal.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    )


@dataclass(frozen=True, kw_only=True)
class RevisionState:
    name: str
    created_at: datetime | None
    ready: bool
    traffic_percent: int
    latest: bool
    concurrency: int | None
    max_instances: int | None
    min_instances: int | None
    cpu: str | None
    memory: str | None


@dataclass(frozen=True, kw_only=True)
class ServiceState:
    name: str
    uri: str
    revisions: list[RevisionState]  # newest first
    min_instances: int | None
    max_instances: int | None
    traffic: list[dict[str, Any]] = field(default_factory=list)
    # Service.generation (grows with every change of the desired state) and Service.etag (the
    # fingerprint an update may carry to be refused if the service changed since it was read).
    generation: int | None = None
    etag: str | None = None


def traffic_by_revision(service: run_v2.Service) -> dict[str, int]:
    """Resolved traffic percent per revision (LATEST resolved to its revision by Cloud Run)."""
    shares: dict[str, int] = {}
    for status in service.traffic_statuses:
        revision = (
            short_name(status.revision) if status.revision else short_name(service.latest_ready_revision)
        )
        if revision:
            shares[revision] = shares.get(revision, 0) + int(status.percent)
    return shares


def _limits(template: Any) -> tuple[str | None, str | None]:
    containers = list(template.containers) if template is not None else []
    if not containers:
        return None, None
    limits = dict(containers[0].resources.limits)
    return limits.get("cpu"), limits.get("memory")


def _datetime(value: Any) -> datetime | None:
    # proto-plus hands Timestamps over as DatetimeWithNanoseconds (a datetime subclass), or None.
    return value if isinstance(value, datetime) and value.year > 1970 else None


class CloudRunSource:
    def __init__(self, clients: CloudRunClients, *, timeout: float) -> None:
        self.clients = clients
        self.timeout = timeout

    async def read(self, service: str) -> ServiceState:
        try:
            svc, revisions = await asyncio.gather(
                asyncio.to_thread(
                    self.clients.services.get_service,
                    name=self.clients.service_name(service),
                    timeout=self.timeout,
                    retry=None,
                ),
                asyncio.to_thread(self._list_revisions, service),
            )
        except google_exceptions.NotFound as exc:
            raise SourceFailed(SOURCE, f"service {service} not found", service=service) from exc
        except google_exceptions.GoogleAPICallError as exc:
            raise SourceFailed(SOURCE, f"{exc.code} {exc.message}"[:200], service=service) from exc
        shares = traffic_by_revision(svc)
        latest = short_name(svc.latest_created_revision)
        states = []
        for revision in sorted(
            revisions, key=lambda r: _datetime(r.create_time) or datetime.min, reverse=True
        ):
            name = short_name(revision.name)
            cpu, memory = _limits(revision)
            scaling = revision.scaling
            states.append(
                RevisionState(
                    name=name,
                    created_at=_datetime(revision.create_time),
                    ready=is_ready(revision),
                    traffic_percent=shares.get(name, 0),
                    latest=name == latest,
                    concurrency=revision.max_instance_request_concurrency or None,
                    max_instances=scaling.max_instance_count or None,
                    min_instances=scaling.min_instance_count or None,
                    cpu=cpu,
                    memory=memory,
                )
            )
        return ServiceState(
            name=service,
            uri=svc.uri,
            revisions=states,
            min_instances=svc.scaling.min_instance_count if svc.scaling else None,
            max_instances=(svc.scaling.max_instance_count or None) if svc.scaling else None,
            generation=int(svc.generation) or None,
            etag=svc.etag or None,
        )

    async def traffic(self, service: str) -> dict[str, int]:
        """Percent of traffic per revision now (one GetService call): revisions with none are absent."""
        try:
            svc = await asyncio.to_thread(
                self.clients.services.get_service,
                name=self.clients.service_name(service),
                timeout=self.timeout,
                retry=None,
            )
        except google_exceptions.NotFound as exc:
            raise SourceFailed(SOURCE, f"service {service} not found", service=service) from exc
        except google_exceptions.GoogleAPICallError as exc:
            raise SourceFailed(SOURCE, f"{exc.code} {exc.message}"[:200], service=service) from exc
        return {name: share for name, share in traffic_by_revision(svc).items() if share > 0}

    def _list_revisions(self, service: str) -> list[run_v2.Revision]:
        pager = self.clients.revisions.list_revisions(
            parent=self.clients.service_name(service), timeout=self.timeout, retry=None
        )
        return list(pager)
