"""The local stack (`remediator up`): every part of the loop as a child process on 127.0.0.1.

    Cloud Run emulator (+ a demo service with two healthy revisions)
    Prometheus and Alertmanager (Debian binaries, foreground, temporary storage)
    Remediator (`remediator serve`: analyzer + actuator)
    a steady load generator against the demo service
    Grafana, when a Grafana server binary is installed

Each is awaited until ready before the next starts; on Ctrl-C or SIGTERM every child is stopped in
reverse order. Ports are options; a taken port or a missing binary stops the start with a message
that says what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from google.cloud import run_v2

from actuator.cloudrun import OPERATION_POLLING
from collector import CloudRunClients, short_name
from remediator.binaries import require_binary
from remediator.grafana import GrafanaSetupError, grafana_binary, missing_grafana_message, prepare_grafana
from remediator.processes import (
    ChildProcess,
    StackError,
    child_environment,
    ensure_port_free,
    python_module,
)
from remediator.stackconfig import write_alertmanager_config, write_prometheus_config

PROJECT = "local"
REGION = "local"
READY_TIMEOUT = 60.0
# Debian's Alertmanager loads its notification templates from this fixed path.
ALERTMANAGER_TEMPLATES = Path("/usr/share/prometheus/alertmanager/default.tmpl")


@dataclass(frozen=True, kw_only=True)
class DemoProfile:
    """The demo service's capacity model. The default (up to 4 instances of 10 concurrent requests at
    50 ms) has room for the steady load and for slow revisions; the traffic-spike scenario uses one
    instance of 4 x 100 ms (40 req/s), which 3x the steady 20 req/s saturates and a second instance
    relieves."""

    concurrency: int = 10
    service_time_ms: int = 50
    min_instances: int = 1
    max_instances: int = 4
    cold_start_ms: int = 300

    def env(self) -> dict[str, str]:
        return {
            "DEMO_SERVICE_TIME_MS": str(self.service_time_ms),
            "DEMO_COLD_START_MS": str(self.cold_start_ms),
        }


@dataclass(frozen=True, kw_only=True)
class StackOptions:
    emulator_port: int = 8090
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    remediator_port: int = 8080
    grafana_port: int = 3000
    loadgen_port: int = 8089
    service: str = "demo-app-a"
    rate: float = 20.0
    state_dir: Path | None = None
    database_url: str | None = None
    # Extra environment for `remediator serve` (tests shorten verification with it).
    remediator_env: dict[str, str] = field(default_factory=dict)
    grafana: bool = True
    profile: DemoProfile = field(default_factory=DemoProfile)

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: dict[str, str]) -> StackOptions:
        return cls(
            emulator_port=args.emulator_port,
            prometheus_port=args.prometheus_port,
            alertmanager_port=args.alertmanager_port,
            remediator_port=args.remediator_port,
            grafana_port=args.grafana_port,
            loadgen_port=args.loadgen_port,
            service=args.service,
            rate=args.rate,
            state_dir=args.state_dir,
            database_url=environ.get("DATABASE_URL") or None,
            grafana=not args.no_grafana,
        )


@dataclass(frozen=True, kw_only=True)
class DemoService:
    name: str
    uri: str
    revisions: list[str]  # newest first


class LocalStack:
    def __init__(self, options: StackOptions, *, say: Callable[[str], None] = print) -> None:
        self.options = options
        self.say = say
        self.children: list[ChildProcess] = []
        self._owns_state = options.state_dir is None
        self.state = (
            Path(tempfile.mkdtemp(prefix="remediator-stack-"))
            if options.state_dir is None
            else options.state_dir
        )
        self.webhook_token = secrets.token_urlsafe(24)
        self.api_token = secrets.token_urlsafe(24)
        self.http: aiohttp.ClientSession | None = None
        self.clients: CloudRunClients | None = None
        self.service: DemoService | None = None
        self.loadgen: ChildProcess | None = None
        self.grafana_url: str | None = None

    # addresses

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.options.emulator_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.options.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.options.alertmanager_port}"

    @property
    def remediator_url(self) -> str:
        return f"http://127.0.0.1:{self.options.remediator_port}"

    @property
    def loadgen_url(self) -> str:
        return f"http://127.0.0.1:{self.options.loadgen_port}"

    @property
    def database_url(self) -> str:
        return self.options.database_url or f"sqlite:///{self.state / 'remediator.db'}"

    # lifecycle

    async def __aenter__(self) -> LocalStack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def preflight(self) -> dict[str, Path]:
        """Everything that can be checked before a process starts: binaries and free ports."""
        binaries = {name: require_binary(name) for name in ("prometheus", "prometheus-alertmanager")}
        if not ALERTMANAGER_TEMPLATES.exists():
            raise StackError(
                f"Alertmanager's templates are missing at {ALERTMANAGER_TEMPLATES.parent}: run `make tools` "
                "(as root) or `sudo apt-get install prometheus-alertmanager`"
            )
        o = self.options
        for port, what, option in (
            (o.emulator_port, "the Cloud Run emulator", "--emulator-port"),
            (o.prometheus_port, "Prometheus", "--prometheus-port"),
            (o.alertmanager_port, "Alertmanager", "--alertmanager-port"),
            (o.remediator_port, "Remediator", "--remediator-port"),
            (o.loadgen_port, "the load generator", "--loadgen-port"),
        ):
            ensure_port_free(port, what=what, option=option)
        return binaries

    async def start(self) -> None:
        binaries = self.preflight()
        self.state.mkdir(parents=True, exist_ok=True)
        self.http = aiohttp.ClientSession()
        logs = self.state / "logs"
        secrets_dir = self.state / "secrets"
        secrets_dir.mkdir(exist_ok=True)
        for name, value in (("webhook-token", self.webhook_token), ("api-token", self.api_token)):
            path = secrets_dir / name
            path.write_text(value + "\n")
            path.chmod(0o600)

        await self._launch(
            "emulator",
            python_module(
                "demo_apps.cloudrun",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.options.emulator_port),
                "--project",
                PROJECT,
                "--region",
                REGION,
            ),
            f"{self.emulator_url}/healthz",
            logs,
        )
        self.clients = CloudRunClients.create(project=PROJECT, region=REGION, endpoint=self.emulator_url)
        self.service = await self.deploy_demo_service(self.options.service, self.options.profile)
        self.say(f"demo service {self.service.name}: revisions {', '.join(reversed(self.service.revisions))}")

        prometheus_dir = self.state / "prometheus"
        config = write_prometheus_config(
            prometheus_dir,
            sd_url=f"{self.emulator_url}/sd/targets",
            remediator_target=f"127.0.0.1:{self.options.remediator_port}",
            alertmanager_target=f"127.0.0.1:{self.options.alertmanager_port}",
        )
        await self._launch(
            "prometheus",
            [
                str(binaries["prometheus"]),
                f"--config.file={config}",
                f"--storage.tsdb.path={prometheus_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.options.prometheus_port}",
                "--storage.tsdb.retention.time=1d",
            ],
            f"{self.prometheus_url}/-/ready",
            logs,
        )
        alertmanager_dir = self.state / "alertmanager"
        am_config = write_alertmanager_config(
            alertmanager_dir, webhook_url=f"{self.remediator_url}/api/v1/alerts", token=self.webhook_token
        )
        await self._launch(
            "alertmanager",
            [
                str(binaries["prometheus-alertmanager"]),
                f"--config.file={am_config}",
                f"--storage.path={alertmanager_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.options.alertmanager_port}",
                "--cluster.listen-address=",  # no gossip port: a single local Alertmanager
            ],
            f"{self.alertmanager_url}/-/ready",
            logs,
        )
        remediator_env = child_environment(
            DATABASE_URL=self.database_url,
            WEBHOOK_TOKEN_FILE=str(secrets_dir / "webhook-token"),
            REMEDIATOR_API_TOKEN_FILE=str(secrets_dir / "api-token"),
            PROMETHEUS_URL=self.prometheus_url,
            CLOUD_RUN_ENDPOINT=self.emulator_url,
            CLOUD_RUN_PROJECT=PROJECT,
            CLOUD_RUN_REGION=REGION,
            REMEDIATOR_LOG_FORMAT="json",
            **self.options.remediator_env,
        )
        # A value set to "" by the user would shadow the *_FILE variant; the stack's files win.
        for name in ("WEBHOOK_TOKEN", "REMEDIATOR_API_TOKEN"):
            remediator_env.pop(name, None)
        await self._launch(
            "remediator",
            python_module(
                "remediator.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.options.remediator_port),
                "--migrate",
            ),
            f"{self.remediator_url}/readyz",
            logs,
            env=remediator_env,
        )
        self.loadgen = await self.start_loadgen(
            self.service.uri, self.options.rate, self.options.loadgen_port
        )
        if self.options.grafana:
            await self._maybe_start_grafana(logs)

    async def stop(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                await child.stop()
        self.children.clear()
        if self.clients is not None:
            self.clients.close()
            self.clients = None
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self._owns_state:
            shutil.rmtree(self.state, ignore_errors=True)

    async def _launch(
        self, name: str, argv: list[str], ready_url: str, logs: Path, *, env: dict[str, str] | None = None
    ) -> ChildProcess:
        assert self.http is not None
        child = ChildProcess(
            name=name, argv=argv, log_path=logs / f"{name}.log", env=env or child_environment()
        )
        self.children.append(child)
        await child.start()
        await child.wait_ready(ready_url, within=READY_TIMEOUT, session=self.http)
        return child

    async def _maybe_start_grafana(self, logs: Path) -> None:
        binary = grafana_binary()
        if binary is None:
            self.say(f"Grafana: not started: {missing_grafana_message()}")
            return
        ensure_port_free(self.options.grafana_port, what="Grafana", option="--grafana-port")
        try:
            launch = prepare_grafana(
                binary,
                state_dir=self.state / "grafana",
                port=self.options.grafana_port,
                prometheus_url=self.prometheus_url,
                database_url=self.database_url,
                remediator_url=self.remediator_url,
            )
        except GrafanaSetupError as exc:  # Grafana is optional: the loop runs without it
            self.say(f"Grafana: not started: {exc.message}")
            return
        await self._launch("grafana", launch.argv, launch.health_url, logs, env=launch.env)
        self.grafana_url = f"http://127.0.0.1:{self.options.grafana_port}"

    # the demo service and its load

    async def deploy_demo_service(self, name: str, profile: DemoProfile) -> DemoService:
        """Create `name` with a first revision, then a second healthy one taking all traffic."""
        assert self.clients is not None
        services = self.clients.services
        env = [run_v2.EnvVar(name=k, value=v) for k, v in profile.env().items()]
        template = run_v2.RevisionTemplate(
            containers=[run_v2.Container(image="demo-app-a", env=env)],
            max_instance_request_concurrency=profile.concurrency,
        )
        service = run_v2.Service(
            template=template,
            scaling=run_v2.ServiceScaling(
                min_instance_count=profile.min_instances, max_instance_count=profile.max_instances
            ),
        )
        parent = f"projects/{PROJECT}/locations/{REGION}"
        await self._cloud_run(services.create_service, parent=parent, service=service, service_id=name)
        await self.deploy(name, {"DEMO_RELEASE": "2"})
        current = await self._cloud_run(services.get_service, name=self.clients.service_name(name))
        revisions = await self._cloud_run(
            lambda: [short_name(r.name) for r in self.clients.revisions.list_revisions(parent=current.name)]  # type: ignore[union-attr]
        )
        return DemoService(name=name, uri=current.uri, revisions=revisions)

    async def deploy(
        self, name: str, env: dict[str, str], *, traffic: list[run_v2.TrafficTarget] | None = None
    ) -> str:
        """A new revision with `env` added to the template; returns its name. `traffic` None keeps the
        service's traffic targets as they are (LATEST moves to the new revision)."""
        assert self.clients is not None
        services = self.clients.services
        current = await self._cloud_run(services.get_service, name=self.clients.service_name(name))
        container = current.template.containers[0]
        merged = {item.name: item.value for item in container.env} | env
        del container.env[:]
        container.env.extend(run_v2.EnvVar(name=k, value=v) for k, v in merged.items())
        if traffic is not None:
            del current.traffic[:]
            current.traffic.extend(traffic)
        updated = await self._cloud_run(services.update_service, service=current)
        return short_name(updated.latest_created_revision)

    async def _cloud_run(self, call: Callable[..., Any], **kwargs: Any) -> Any:
        def run() -> Any:
            result = call(**kwargs)
            if hasattr(result, "result") and hasattr(result, "operation"):
                return result.result(timeout=60, polling=OPERATION_POLLING)
            return result

        return await asyncio.to_thread(run)

    async def start_loadgen(self, target: str, rate: float, port: int) -> ChildProcess:
        return await self._launch(
            f"loadgen-{port}",
            python_module(
                "demo_apps.loadgen",
                "--target",
                target,
                "--rate",
                f"{rate:g}",
                "--control-host",
                "127.0.0.1",
                "--control-port",
                str(port),
            ),
            f"http://127.0.0.1:{port}/healthz",
            self.state / "logs",
        )

    def describe(self) -> list[str]:
        lines = [
            f"Cloud Run emulator   {self.emulator_url}  (Admin API v2, /sd/targets, /v2/entries:list)",
            f"demo service         {self.service.uri if self.service else '-'}  ({self.options.service})",
            f"Prometheus           {self.prometheus_url}",
            f"Alertmanager         {self.alertmanager_url}",
            f"Remediator           {self.remediator_url}  (/api/v1/incidents, /api/v1/openapi.json)",
            f"load generator       {self.loadgen_url}  (/stats, PUT /rate)  {self.options.rate:g} req/s",
            f"Grafana              {self.grafana_url or 'not running'}",
            f"state and logs       {self.state}" + (" (removed on exit)" if self._owns_state else ""),
            f"API token            {self.state / 'secrets' / 'api-token'}",
        ]
        return lines


async def _run_until_signalled(options: StackOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with LocalStack(options, say=lambda line: print(line, flush=True)) as stack:
        print("remediator: local stack is up", flush=True)
        for line in stack.describe():
            print(f"  {line}", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        await stop.wait()
        print("remediator: stopping the stack", flush=True)


def run_up(args: argparse.Namespace) -> int:
    import os

    options = StackOptions.from_args(args, dict(os.environ))
    try:
        asyncio.run(_run_until_signalled(options))
    except StackError as exc:
        print(f"remediator: error: {exc.message}", file=sys.stderr)
        return 1
    return 0
