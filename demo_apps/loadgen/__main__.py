"""`python -m demo_apps.loadgen --target URL --rate 20 [--control-port P] [--paths ...]`

Sends steady open-loop load to URL until SIGTERM/SIGINT (or `--duration`), prints one JSON line per
`--report-interval` seconds with what it saw, and a last one when it stops. With `--control-port`
it also serves the control API (control.py) on `--control-host` (127.0.0.1); port 0 picks a free
port, and the first output line says which.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Sequence

from aiohttp import web

from demo_apps.loadgen.control import create_control_app
from demo_apps.loadgen.generator import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_TIMEOUT_S,
    Arrivals,
    InvalidLoadSetting,
    LoadGenerator,
    parse_plan,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo_apps.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="base URL, e.g. a Cloud Run service's router URL")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    parser.add_argument(
        "--arrivals",
        choices=[arrival.value for arrival in Arrivals],
        default=Arrivals.POISSON.value,
        help="poisson: random gaps, as independent users make (default); uniform: evenly spaced",
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        metavar="[METHOD:]PATH",
        help="request these paths, equally often, instead of the shop's route mix",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        help=f"requests outstanding at once; later arrivals are dropped (default {DEFAULT_MAX_IN_FLIGHT})",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="per-request timeout, s")
    parser.add_argument("--seed", type=int, default=None, help="seed arrivals and path choice")
    parser.add_argument(
        "--control-host", default="127.0.0.1", help="address of the control API (default 127.0.0.1)"
    )
    parser.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="serve the control API (/stats, PUT /rate, /healthz) on this port (default: no control API)",
    )
    parser.add_argument(
        "--report-interval", type=float, default=5.0, help="seconds between stats lines; 0: none"
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    return parser


def emit(message: str, **fields: object) -> None:
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "message": message, **fields}
    print(json.dumps(entry, separators=(",", ":")), flush=True)


async def run(options: argparse.Namespace) -> int:
    try:
        plans = [parse_plan(spec) for spec in options.paths] if options.paths else None
        generator = LoadGenerator(
            target=options.target,
            rate=options.rate,
            plans=plans,
            arrivals=options.arrivals,
            max_in_flight=options.max_in_flight,
            timeout_s=options.timeout,
            seed=options.seed,
        )
    except InvalidLoadSetting as error:
        emit(f"invalid setting: {error.message}", parameter=error.parameter)
        return 2

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    runner: web.AppRunner | None = None
    control_url = None
    if options.control_port is not None:
        runner = web.AppRunner(create_control_app(generator), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, options.control_host, options.control_port).start()
        except OSError as error:
            await runner.cleanup()
            emit(f"cannot listen on {options.control_host}:{options.control_port}: {error}")
            return 1
        host, port = runner.addresses[0][:2]
        control_url = f"http://{host}:{port}"

    await generator.start()
    emit("load generator running", target=generator.target, rate=generator.rate, control=control_url)
    reporter = asyncio.create_task(report_periodically(generator, options.report_interval))
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), options.duration)
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        await generator.stop()
        if runner is not None:
            await runner.cleanup()
    emit("load generator stopped", stats=await generator.stats())
    return 0


async def report_periodically(generator: LoadGenerator, interval_s: float) -> None:
    if interval_s <= 0:
        return
    while True:
        await asyncio.sleep(interval_s)
        emit("load generator stats", stats=await generator.stats())


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
