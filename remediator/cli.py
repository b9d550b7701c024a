"""`remediator`: the command line.

    remediator serve [--host 127.0.0.1] [--port 8080] [--no-actuator] [--migrate]
    remediator actuator [--host 127.0.0.1] [--port 8081]
    remediator db upgrade | db current
    remediator eval DIR [--engine rules|gemini|hybrid] [--json] [--record DIR] [--replay DIR]
    remediator rollback SERVICE --to REVISION [--by NAME] [--no-wait]
    remediator scale SERVICE --min N --max M [--by NAME] [--no-wait]
    remediator release SERVICE [--by NAME] [--force] [--no-wait]
    remediator up [...]        the whole local stack until Ctrl-C
    remediator demo [...]      the closed loop, live, with the MTTR at the end

Settings come from the environment (see the README); a bad value stops the command with a message
naming the variable. Exit codes: 0 success, 1 the operation failed or was refused, 2 bad usage or
configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from incidents import RemediatorError
from incidents.jsonlog import configure_logging

if TYPE_CHECKING:
    from remediator.settings import Settings

SHUTDOWN_TIMEOUT = 8.0  # Cloud Run gives a container about 10 s between SIGTERM and SIGKILL


class UsageError(RemediatorError):
    pass


def _settings(args: argparse.Namespace, *, migrate_on_start: bool = False) -> Settings:
    # Imported here, not at the top: `remediator --help` should not pay for the Google clients.
    from remediator.settings import Settings

    settings = Settings.from_env(os.environ, migrate_on_start=migrate_on_start)
    configure_logging(level=settings.log_level, json_format=settings.log_json)
    return settings


def _port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {value}")
    return port


def cmd_serve(args: argparse.Namespace) -> int:
    from remediator.server import build_server_app

    settings = _settings(args, migrate_on_start=args.migrate)
    app = build_server_app(settings, with_actuator=not args.no_actuator)
    web.run_app(
        app, host=args.host, port=args.port, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None, print=None
    )
    return 0


def cmd_actuator(args: argparse.Namespace) -> int:
    from remediator.server import build_actuator_app

    settings = _settings(args)
    web.run_app(
        build_actuator_app(settings),
        host=args.host,
        port=args.port,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        access_log=None,
        print=None,
    )
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from incidents.db import Store, redact
    from incidents.migrate import current_revision, head_revision, upgrade

    settings = _settings(args)

    async def run() -> int:
        store = Store.from_config(settings.store)
        try:
            if args.db_command == "upgrade":
                await upgrade(store)
            revision = await current_revision(store)
        finally:
            await store.dispose()
        print(f"{redact(store.url)}: schema at {revision or 'none'} (newest {head_revision()})")
        return 0

    return asyncio.run(run())


def cmd_eval(args: argparse.Namespace) -> int:
    from analyzer.exceptions import PayloadInvalid
    from remediator.evaluate import run_evaluation

    try:
        return run_evaluation(args)
    except PayloadInvalid as exc:
        raise UsageError(exc.message) from None


def cmd_manual(args: argparse.Namespace) -> int:
    from remediator.manual import run_manual_command

    settings = _settings(args)
    return asyncio.run(run_manual_command(settings, args))


def cmd_up(args: argparse.Namespace) -> int:
    from remediator.stack import run_up

    return run_up(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from remediator.demo import run_demo

    return run_demo(args)


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """Ports and knobs of the local stack (`up` and `demo`). Everything listens on 127.0.0.1."""
    ports = parser.add_argument_group("ports (127.0.0.1)")
    ports.add_argument("--emulator-port", type=_port, default=8090, help="Cloud Run emulator (default 8090)")
    ports.add_argument("--prometheus-port", type=_port, default=9090, help="Prometheus (default 9090)")
    ports.add_argument("--alertmanager-port", type=_port, default=9093, help="Alertmanager (default 9093)")
    ports.add_argument("--remediator-port", type=_port, default=8080, help="Remediator (default 8080)")
    ports.add_argument(
        "--grafana-port", type=_port, default=3000, help="Grafana, when installed (default 3000)"
    )
    ports.add_argument(
        "--loadgen-port", type=_port, default=8089, help="load generator control API (default 8089)"
    )
    parser.add_argument("--service", default="demo-app-a", help="demo service name (default demo-app-a)")
    parser.add_argument("--rate", type=float, default=20.0, help="steady load in requests/s (default 20)")
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="where configs, data and logs go (default: a temp dir)"
    )
    parser.add_argument("--no-grafana", action="store_true", help="do not start Grafana even when installed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remediator", description="Auto-remediation control plane for Google Cloud Run."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the analyzer (Alertmanager webhook, API) and the actuator")
    serve.add_argument("--host", default=os.environ.get("REMEDIATOR_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=_port, default=int(os.environ.get("REMEDIATOR_PORT", "8080")))
    serve.add_argument("--no-actuator", action="store_true", help="run the analyzer only")
    serve.add_argument("--migrate", action="store_true", help="bring the database schema up to date first")
    serve.set_defaults(handler=cmd_serve)

    actuator = commands.add_parser("actuator", help="run the actuator worker alone")
    actuator.add_argument("--host", default=os.environ.get("REMEDIATOR_HOST", "127.0.0.1"))
    actuator.add_argument("--port", type=_port, default=int(os.environ.get("ACTUATOR_PORT", "8081")))
    actuator.set_defaults(handler=cmd_actuator)

    db = commands.add_parser("db", help="database schema")
    db.add_argument("db_command", choices=["upgrade", "current"])
    db.set_defaults(handler=cmd_db)

    evaluate = commands.add_parser("eval", help="replay a scenario library through an engine and the policy")
    evaluate.add_argument("directory", type=Path)
    evaluate.add_argument("--engine", choices=["rules", "gemini", "hybrid"], default="rules")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluate.add_argument("--record", type=Path, metavar="DIR", help="save each raw model response here")
    evaluate.add_argument("--replay", type=Path, metavar="DIR", help="score recorded model responses offline")
    evaluate.set_defaults(handler=cmd_eval)

    for name, help_text in (
        ("rollback", "send all traffic to a revision (pinned)"),
        ("scale", "set service-level min/max instances"),
        ("release", "send traffic back to the latest ready revision once a fix is deployed"),
    ):
        manual = commands.add_parser(name, help=help_text)
        manual.add_argument("service")
        if name == "rollback":
            manual.add_argument("--to", dest="revision", required=True, metavar="REVISION")
        if name == "scale":
            manual.add_argument("--min", dest="min_instances", type=int, required=True)
            manual.add_argument("--max", dest="max_instances", type=int, required=True)
        if name == "release":
            manual.add_argument(
                "--force", action="store_true", help="release even to a revision a recent rollback left"
            )
        manual.add_argument(
            "--by", default=os.environ.get("USER", "cli"), help="who asks (for the audit trail)"
        )
        manual.add_argument("--reason", default=None, help="why (recorded in the timeline)")
        manual.add_argument("--no-wait", action="store_true", help="queue the action and return")
        manual.set_defaults(handler=cmd_manual, manual=name)

    up = commands.add_parser("up", help="start the whole local stack until Ctrl-C")
    demo = commands.add_parser("demo", help="run a scenario end to end and print the MTTR")
    add_stack_arguments(up)
    add_stack_arguments(demo)
    up.set_defaults(handler=cmd_up)
    demo.add_argument(
        "--scenario",
        default="bad-deploy",
        help="bad-deploy (default), canary, latency-deploy, traffic-spike, dependency-outage",
    )
    demo.add_argument(
        "--baseline-seconds", type=float, default=60.0, help="steady traffic before the fault (default 60)"
    )
    demo.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except UsageError as exc:
        print(f"remediator: error: {exc.message}", file=sys.stderr)
        return 2
    except RemediatorError as exc:
        from remediator.settings import SettingsError

        print(f"remediator: error: {exc.message}", file=sys.stderr)
        return 2 if isinstance(exc, SettingsError) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
