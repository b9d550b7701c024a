"""`python -m demo_apps.cloudrun`: run the Cloud Run emulator until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import shlex
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from demo_apps.cloudrun.app import create_app
from demo_apps.cloudrun.config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_PROJECT,
    DEFAULT_REGION,
    DEFAULT_STARTUP_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    EmulatorConfig,
)
from demo_apps.cloudrun.exceptions import PortInUseError
from demo_apps.cloudrun.images import DEFAULT_IMAGES
from demo_apps.cloudrun.jsonlog import configure_logging
from demo_apps.cloudrun.oauth import DEFAULT_TOKEN_LIFETIME_S
from demo_apps.cloudrun.platform_metrics import FAST_TIMING, PlatformMetricsConfig

PLATFORM_TIMINGS = {"cloud-monitoring": PlatformMetricsConfig(), "fast": FAST_TIMING}

logger = logging.getLogger("demo_apps.cloudrun")

# The Admin API answers quickly; a hanging injected failure is cut short at shutdown.
API_SHUTDOWN_TIMEOUT_S = 3.0


def _image(text: str) -> tuple[str, tuple[str, ...]]:
    name, sep, command = text.partition("=")
    argv = tuple(shlex.split(command))
    if not sep or not name.strip() or not argv:
        raise argparse.ArgumentTypeError(f"expected NAME=COMMAND, got {text!r}")
    return name.strip(), argv


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demo_apps.cloudrun",
        description="Local Cloud Run emulator: Admin API v2 subset, revision processes, traffic routers.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address of the API (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port of the API (default %(default)s)"
    )
    parser.add_argument("--project", default=DEFAULT_PROJECT, help="project served (default %(default)s)")
    parser.add_argument("--region", default=DEFAULT_REGION, help="location served (default %(default)s)")
    parser.add_argument(
        "--image",
        action="append",
        type=_image,
        default=[],
        metavar="NAME=COMMAND",
        help="add or replace an image: NAME=COMMAND runs COMMAND for images named NAME (repeatable)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=DEFAULT_STARTUP_TIMEOUT_S,
        help="seconds a revision has to answer GET /healthz (default %(default)s)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT_S,
        help="seconds between SIGTERM and SIGKILL for a revision process (default %(default)s)",
    )
    parser.add_argument("--echo-revision-logs", action="store_true", help="copy revision log lines to stderr")
    metrics = parser.add_argument_group("Cloud Run platform metrics (GET /metrics)")
    metrics.add_argument(
        "--metrics-timing",
        choices=sorted(PLATFORM_TIMINGS),
        default="cloud-monitoring",
        help="cloud-monitoring: a point every 60 s, readable 120 s later (default); fast: 5 s and 10 s",
    )
    metrics.add_argument("--metrics-sample-period", type=float, default=None, help="seconds between points")
    metrics.add_argument(
        "--metrics-delay", type=float, default=None, help="seconds from a point's time until it is readable"
    )
    parser.add_argument(
        "--prometheus-url",
        default=None,
        help="Prometheus behind /v1/projects/PROJECT/location/global/prometheus/api/v1/... (default: none)",
    )
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=DEFAULT_TOKEN_LIFETIME_S,
        help="seconds an access token from POST /token stays valid (default %(default)s)",
    )
    parser.add_argument(
        "--await-first-scrape",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="hold a new revision's traffic until Prometheus has scraped it, at most this long, when the "
        "service's revisions are being scraped (default 0: route at once)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> EmulatorConfig:
    images = dict(DEFAULT_IMAGES)
    images.update(dict(args.image))
    timing = PLATFORM_TIMINGS[args.metrics_timing]
    platform = PlatformMetricsConfig(
        sample_period_s=args.metrics_sample_period or timing.sample_period_s,
        visibility_delay_s=timing.visibility_delay_s if args.metrics_delay is None else args.metrics_delay,
        probe_interval_s=timing.probe_interval_s,
    )
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        project=args.project,
        region=args.region,
        images=images,
        startup_timeout_s=args.startup_timeout,
        stop_timeout_s=args.stop_timeout,
        echo_revision_logs=args.echo_revision_logs,
        platform_metrics=platform,
        prometheus_url=args.prometheus_url,
        token_lifetime_s=args.token_lifetime,
        first_scrape_wait_s=args.await_first_scrape,
    )


async def serve(config: EmulatorConfig) -> None:
    """Serve until SIGTERM/SIGINT, then stop every revision process and router."""
    runner = web.AppRunner(
        create_app(config), handle_signals=False, access_log=None, shutdown_timeout=API_SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(config.host, config.port) from exc
            raise
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        logger.info(
            "emulator listening",
            extra={
                "address": f"http://{config.host}:{config.port}",
                "project": config.project,
                "region": config.region,
            },
        )
        await stop.wait()
        logger.info("shutting down")
    finally:
        await runner.cleanup()
    logger.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    try:
        asyncio.run(serve(build_config(args)))
    except PortInUseError as exc:
        logger.error("cannot listen", extra={"error": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
