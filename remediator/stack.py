"""The local stack (`remediator up`): every part of the loop as a child process on 127.0.0.1.

    Cloud Run emulator (+ a demo service with two healthy revisions)
    Prometheus and Alertmanager (Debian binaries, foreground, temporary storage)

Two metrics profiles (`--metrics`): `app` scrapes the demo apps' own OpenTelemetry metrics and
alerts on them; `cloud-run` instruments nothing: Prometheus scrapes the request and container
metrics the emulator records as Cloud Run's front end (sampled and delayed like Cloud Monitoring's,
`--metrics-timing`), alerts on them with the rules in prometheus/cloud-run/, and Remediator queries
them through the emulator's Managed-Prometheus-shaped API with OAuth2 tokens from a service-account
key made for the stack.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from google.cloud import run_v2

from actuator import OPERATION_POLLING
from collector import CloudRunClients, short_name
from remediator.binaries import require_binary
from remediator.grafana import GrafanaSetupError, grafana_binary, missing_grafana_message, prepare_grafana
from remediator.localauth import write_service_account
from remediator.processes import (
    NETWORK_ENVIRONMENT,
    ChildProcess,
    StackError,
    child_environment,
    ensure_port_free,
    python_module,
    tail,
)
from remediator.stackconfig import PlatformScrape, write_alertmanager_config, write_prometheus_config

PROJECT = "local"
REGION = "local"
READY_TIMEOUT = 60.0
# How long the emulator holds a new revision's traffic for Prometheus' first scrape of it: discovery
# (1 s) plus Prometheus' two 5 s reload cycles plus one 5 s scrape interval, and some slack.
FIRST_SCRAPE_WAIT_S = 20
# `remediator up` restarts these children when they die (by name prefix); any other stops the stack.
RESTARTABLE = ("remediator", "loadgen")
MAX_RESTARTS = 3
RESTART_WINDOW_S = 300.0
# Debian's Alertmanager loads its notification templates from this fixed path.
ALERTMANAGER_TEMPLATES = Path("/usr/share/prometheus/alertmanager/default.tmpl")
# What `remediator serve` may take from the shell: every variable remediator/settings.py reads
# (tests/remediator/test_stack_environment.py holds the two together), Google's credentials and
# project (application default credentials, gcloud's configuration) and the network's proxies.
# The other children get the base environment only.
REMEDIATOR_ENV_PREFIXES = (
    "REMEDIATOR_",
    "COLLECTOR_",
    "VERIFY_",
    "ACTUATOR_",
    "CLOUD_RUN_",
    "CLOUD_LOGGING_",
    "GEMINI_",
    "GOOGLE_",
    "METRICS_",
    "NOTIFY_",
    "EVENT_WEBHOOK",
    "PAGERDUTY_",
    "CLOUD_MONITORING_",
)
REMEDIATOR_ENV_NAMES = (
    frozenset(
        {
            "DATABASE_URL",
            "PROMETHEUS_URL",
            "PROMETHEUS_AUTH",
            "APPROVAL_PAGE_AFTER_SECONDS",
            # Slack's variables by name: SLACK_WEBHOOK_URL and the like belong to other tools.
            "SLACK_BOT_TOKEN",
            "SLACK_BOT_TOKEN_FILE",
            "SLACK_SIGNING_SECRET",
            "SLACK_SIGNING_SECRET_FILE",
            "SLACK_CHANNEL",
            "SLACK_CHANNELS_BY_SERVICE",
            "SLACK_APPROVERS",
            "SLACK_API_URL",
            "SLACK_EVENTS",
            "SLACK_MIN_SEVERITY",
            "ERROR_RATE_THRESHOLD",
            "LATENCY_P95_THRESHOLD_MS",
            "MIN_REQUEST_RATE",
            "GRAFANA_URL",
            "GRAFANA_TOKEN",
            "GRAFANA_TOKEN_FILE",
            "CLOUDSDK_CONFIG",
        }
    )
    | NETWORK_ENVIRONMENT
)

METRICS_PROFILES = ("app", "cloud-run")


@dataclass(frozen=True, kw_only=True)
class PlatformTiming:
    """How the emulator samples Cloud Run's platform metrics and how late they become readable."""

    name: str
    sample_period_s: int
    visibility_delay_s: int


# As Cloud Monitoring: a point a minute, readable two minutes after its time; and the same shape
# twelve times faster, for tests and quick demos.
PLATFORM_TIMINGS = {
    "cloud-monitoring": PlatformTiming(name="cloud-monitoring", sample_period_s=60, visibility_delay_s=120),
    "fast": PlatformTiming(name="fast", sample_period_s=5, visibility_delay_s=10),
}


@dataclass(frozen=True, kw_only=True)
class DemoProfile:
    """The demo service's capacity model. The default (up to 4 instances of 10 concurrent requests at
    50 ms) has room for the steady load and for slow revisions; the traffic-spike scenario uses two
    instances of 4 x 200 ms (40 req/s in all), which 3x the steady 20 req/s saturates (requests queue
    for about a second, then are refused with 429) and a raise to four relieves."""

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
class AlertmanagerPeer:
    """A second Alertmanager, clustered with the first over gossip on 127.0.0.1: an HA pair.

    Prometheus sends every alert to both; the pair deduplicates notifications between them."""

    port: int
    cluster_port: int  # this member's gossip port
    first_cluster_port: int  # the first Alertmanager's gossip port


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
    # `app` (the demo apps' own metrics) or `cloud-run` (Cloud Run's platform metrics).
    metrics: str = "app"
    platform_timing: PlatformTiming = PLATFORM_TIMINGS["cloud-monitoring"]

    @property
    def cloud_run_metrics(self) -> bool:
        return self.metrics == "cloud-run"

    # More `remediator serve` replicas on the same database (the chaos harness runs two); every
    # Alertmanager sends each notification to every replica.
    remediator_replica_ports: tuple[int, ...] = ()
    alertmanager_peer: AlertmanagerPeer | None = None

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
            metrics=args.metrics,
            platform_timing=PLATFORM_TIMINGS[args.metrics_timing],
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
        # `remediator serve` processes by port (the main one and any replicas), and their environment.
        self.remediators: dict[int, ChildProcess] = {}
        self._remediator_env: dict[str, str] = {}

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
    def managed_prometheus_url(self) -> str:
        """The emulator's Managed-Prometheus-shaped query API (PROMETHEUS_URL for `cloud-run`)."""
        return f"{self.emulator_url}/v1/projects/{PROJECT}/location/global/prometheus"

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
        for port in o.remediator_replica_ports:
            ensure_port_free(port, what="a Remediator replica", option="remediator_replica_ports")
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

        timing = self.options.platform_timing
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
                "--prometheus-url",
                self.prometheus_url,
                "--metrics-sample-period",
                str(timing.sample_period_s),
                "--metrics-delay",
                str(timing.visibility_delay_s),
                # With the apps' own metrics, a new revision takes traffic once Prometheus has scraped
                # it: its series start at zero and its first failed request is counted.
                "--await-first-scrape",
                "0" if self.options.cloud_run_metrics else str(FIRST_SCRAPE_WAIT_S),
            ),
            f"{self.emulator_url}/healthz",
            logs,
        )
        self.clients = CloudRunClients.create(project=PROJECT, region=REGION, endpoint=self.emulator_url)
        self.service = await self.deploy_demo_service(self.options.service, self.options.profile)
        self.say(f"demo service {self.service.name}: revisions {', '.join(reversed(self.service.revisions))}")

        prometheus_dir = self.state / "prometheus"
        peer = self.options.alertmanager_peer
        config = write_prometheus_config(
            prometheus_dir,
            sd_url=f"{self.emulator_url}/sd/targets",
            remediator_target=f"127.0.0.1:{self.options.remediator_port}",
            alertmanager_target=f"127.0.0.1:{self.options.alertmanager_port}",
            platform=(
                PlatformScrape(
                    target=f"127.0.0.1:{self.options.emulator_port}", sample_period_s=timing.sample_period_s
                )
                if self.options.cloud_run_metrics
                else None
            ),
            extra_alertmanager_targets=[f"127.0.0.1:{peer.port}"] if peer is not None else [],
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
            alertmanager_dir,
            webhook_url=f"{self.remediator_url}/api/v1/alerts",
            token=self.webhook_token,
            extra_webhook_urls=[
                f"http://127.0.0.1:{port}/api/v1/alerts" for port in self.options.remediator_replica_ports
            ],
        )
        # no gossip port for a single local Alertmanager
        cluster = ["--cluster.listen-address="]
        if peer is not None:
            cluster = _cluster_flags(peer.first_cluster_port, peer.cluster_port)
        await self._launch(
            "alertmanager",
            [
                str(binaries["prometheus-alertmanager"]),
                f"--config.file={am_config}",
                f"--storage.path={alertmanager_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.options.alertmanager_port}",
                *cluster,
            ],
            f"{self.alertmanager_url}/-/ready",
            logs,
        )
        if peer is not None:
            await self._launch(
                "alertmanager-peer",
                [
                    str(binaries["prometheus-alertmanager"]),
                    f"--config.file={am_config}",
                    f"--storage.path={alertmanager_dir / 'peer-data'}",
                    f"--web.listen-address=127.0.0.1:{peer.port}",
                    *_cluster_flags(peer.cluster_port, peer.first_cluster_port),
                ],
                f"http://127.0.0.1:{peer.port}/-/ready",
                logs,
            )
        self._remediator_env = self.remediator_environment(secrets_dir)
        # One at a time: the first migrates the database, the replicas find it up to date.
        for port in (self.options.remediator_port, *self.options.remediator_replica_ports):
            await self.start_remediator(port)
        self.loadgen = await self.start_loadgen(
            self.service.uri, self.options.rate, self.options.loadgen_port
        )
        if self.options.grafana:
            await self._maybe_start_grafana(logs)

    def remediator_environment(
        self, secrets_dir: Path, environ: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """`remediator serve`'s environment: what it reads from the shell, and the stack's own wiring."""
        env = child_environment(names=REMEDIATOR_ENV_NAMES, prefixes=REMEDIATOR_ENV_PREFIXES, environ=environ)
        env.update(
            DATABASE_URL=self.database_url,
            WEBHOOK_TOKEN_FILE=str(secrets_dir / "webhook-token"),
            REMEDIATOR_API_TOKEN_FILE=str(secrets_dir / "api-token"),
            PROMETHEUS_URL=self.prometheus_url,
            CLOUD_RUN_ENDPOINT=self.emulator_url,
            CLOUD_RUN_PROJECT=PROJECT,
            CLOUD_RUN_REGION=REGION,
        )
        # JSON lines in the log file unless the shell asked for text (REMEDIATOR_LOG_FORMAT=text).
        env.setdefault("REMEDIATOR_LOG_FORMAT", "json")
        env.update(self._metrics_environment(secrets_dir))
        env.update(self.options.remediator_env)
        # A value set to "" by the user would shadow the *_FILE variant; the stack's files win.
        for name in ("WEBHOOK_TOKEN", "REMEDIATOR_API_TOKEN"):
            env.pop(name, None)
        return env

    def _metrics_environment(self, secrets_dir: Path) -> dict[str, str]:
        """For `cloud-run`: Remediator reads the platform metrics through the Managed-Prometheus-shaped
        API, as it would on Google Cloud, with tokens for a service-account key made for this stack."""
        if not self.options.cloud_run_metrics:
            return {"REMEDIATOR_METRICS": "app"}
        timing = self.options.platform_timing
        key = write_service_account(
            secrets_dir / "remediator-service-account.json",
            token_uri=f"{self.emulator_url}/token",
            project=PROJECT,
        )
        return {
            "REMEDIATOR_METRICS": "cloud-run",
            "PROMETHEUS_URL": self.managed_prometheus_url,
            "PROMETHEUS_AUTH": "google",
            "GOOGLE_APPLICATION_CREDENTIALS": str(key),
            "METRICS_SAMPLE_PERIOD_SECONDS": str(timing.sample_period_s),
            "METRICS_VISIBILITY_DELAY_SECONDS": str(timing.visibility_delay_s),
        }

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

    async def start_remediator(self, port: int) -> ChildProcess:
        """`remediator serve` on `port` with the stack's settings; also restarts one that died."""
        name = "remediator" if port == self.options.remediator_port else f"remediator-{port}"
        child = await self._launch(
            name,
            python_module("remediator.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--migrate"),
            f"http://127.0.0.1:{port}/readyz",
            self.state / "logs",
            env=self._remediator_env,
        )
        self.remediators[port] = child
        return child

    async def _launch(
        self, name: str, argv: list[str], ready_url: str, logs: Path, *, env: dict[str, str] | None = None
    ) -> ChildProcess:
        assert self.http is not None
        child = ChildProcess(
            name=name,
            argv=argv,
            log_path=logs / f"{name}.log",
            env=env or child_environment(),
            ready_url=ready_url,
        )
        self.children.append(child)
        await child.start()
        await child.wait_ready(ready_url, within=READY_TIMEOUT, session=self.http)
        return child

    # supervision (`remediator up`)

    async def supervise(self, stop: asyncio.Event) -> int:
        """Watch every child until `stop` is set. A child that exits is reported at once, naming its
        log: Remediator and load generators are restarted (at most `MAX_RESTARTS` each within
        `RESTART_WINDOW_S`), anything else (the emulator, Prometheus, Alertmanager, Grafana) stops
        the stack. Returns the exit code: 0 when stopped by `stop`, 1 when a child could not go on."""
        restarts: dict[str, list[float]] = {}
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            exits = {asyncio.create_task(child.wait()): child for child in self.children if child.running}
            stopped = asyncio.create_task(stop.wait())
            done, pending = await asyncio.wait({*exits, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if stopped in done:
                return 0
            for task in done:
                child = exits[task]
                self.say(
                    f"remediator: {child.name} exited (code {child.returncode}); its log is {child.log_path}"
                )
                recent = [t for t in restarts.get(child.name, []) if loop.time() - t < RESTART_WINDOW_S]
                if not child.name.startswith(RESTARTABLE) or len(recent) >= MAX_RESTARTS:
                    why = (
                        f"it restarted {len(recent)} times in {RESTART_WINDOW_S:g}s"
                        if child.name.startswith(RESTARTABLE)
                        else "the stack cannot run without it"
                    )
                    self.say(f"remediator: stopping the stack: {why}. The log ends:\n{tail(child.log_path)}")
                    return 1
                restarts[child.name] = [*recent, loop.time()]
                try:
                    await self._restart(child)
                except StackError as exc:
                    self.say(f"remediator: stopping the stack: {exc.message}")
                    return 1
                self.say(f"remediator: {child.name} restarted")
        return 0

    async def _restart(self, child: ChildProcess) -> None:
        assert self.http is not None
        assert child.ready_url is not None
        await child.start()
        await child.wait_ready(child.ready_url, within=READY_TIMEOUT, session=self.http)

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
            f"Cloud Run emulator   {self.emulator_url}  "
            "(Admin API v2, /sd/targets, /v2/entries:list, /metrics, /token)",
            f"demo service         {self.service.uri if self.service else '-'}  ({self.options.service})",
            f"Prometheus           {self.prometheus_url}",
            f"metrics              {self._metrics_description()}",
            f"Alertmanager         {self.alertmanager_url}",
            f"Remediator           {self.remediator_url}  (/api/v1/incidents, /api/v1/openapi.json)",
            f"load generator       {self.loadgen_url}  (/stats, PUT /rate)  {self.options.rate:g} req/s",
            f"Grafana              {self.grafana_url or 'not running'}",
            f"state and logs       {self.state}" + (" (removed on exit)" if self._owns_state else ""),
            f"API token            {self.state / 'secrets' / 'api-token'}",
            "manual commands      (rollback, scale, release, db) reach this stack with:",
            "  " + " ".join(f"{name}={value}" for name, value in self.manual_environment().items()),
        ]
        return lines

    def manual_environment(self) -> dict[str, str]:
        """What `remediator rollback|scale|release|db` need in their environment to act on this stack:
        the same store, the emulator as Cloud Run, and the same metrics."""
        env = {
            "DATABASE_URL": self.database_url,
            "CLOUD_RUN_ENDPOINT": self.emulator_url,
            "PROMETHEUS_URL": self.prometheus_url,
        }
        if self.options.cloud_run_metrics:  # the platform metrics, as Remediator reads them here
            for name in (
                "REMEDIATOR_METRICS",
                "PROMETHEUS_URL",
                "PROMETHEUS_AUTH",
                "GOOGLE_APPLICATION_CREDENTIALS",
            ):
                if name in self._remediator_env:
                    env[name] = self._remediator_env[name]
        return env

    def _metrics_description(self) -> str:
        if not self.options.cloud_run_metrics:
            return "app (the demo apps' own OpenTelemetry metrics)"
        timing = self.options.platform_timing
        return (
            f"cloud-run (Cloud Run's platform metrics, a point every {timing.sample_period_s}s readable "
            f"{timing.visibility_delay_s}s later; Managed-Prometheus API {self.managed_prometheus_url})"
        )


def _cluster_flags(listen_port: int, peer_port: int) -> list[str]:
    """Gossip on 127.0.0.1 only, with the other member of the pair as peer."""
    return [
        f"--cluster.listen-address=127.0.0.1:{listen_port}",
        f"--cluster.advertise-address=127.0.0.1:{listen_port}",
        f"--cluster.peer=127.0.0.1:{peer_port}",
    ]


async def _run_until_signalled(options: StackOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with LocalStack(options, say=lambda line: print(line, flush=True)) as stack:
        print("remediator: local stack is up", flush=True)
        for line in stack.describe():
            print(f"  {line}", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        code = await stack.supervise(stop)
        print("remediator: stopping the stack", flush=True)
    return code


def run_up(args: argparse.Namespace) -> int:
    import os

    options = StackOptions.from_args(args, dict(os.environ))
    try:
        return asyncio.run(_run_until_signalled(options))
    except StackError as exc:
        print(f"remediator: error: {exc.message}", file=sys.stderr)
        return 1
