"""`remediator`: the command line.

    remediator serve [--host 127.0.0.1] [--port 8080] [--no-actuator] [--migrate] [--insecure-no-auth]
    remediator actuator [--host 127.0.0.1] [--port 8081] [--insecure-no-auth]
    remediator db upgrade | db current
    remediator eval DIR [--engine rules|gemini|hybrid] [--json] [--record DIR] [--replay DIR] [--ablate]
    remediator rollback SERVICE --to REVISION [--by NAME] [--no-wait]
    remediator scale SERVICE --min N --max M [--by NAME] [--no-wait]
    remediator release SERVICE [--by NAME] [--force] [--no-wait]
    remediator incident escalate|close ID --reason TEXT [--by NAME]
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
from incidents.runtime import configure_logging

if TYPE_CHECKING:
    from remediator.settings import Settings

# Cloud Run gives a container about 10 s between SIGTERM and SIGKILL. Requests in flight get this
# long to finish; meanwhile the background workers stop and hand their leases back
# (incidents/runtime/shutdown.py), so the process is gone within about 5 s.
SHUTDOWN_TIMEOUT = 4.0


class UsageError(RemediatorError):
    pass


def _settings(args: argparse.Namespace, *, migrate_on_start: bool = False) -> Settings:
    # Imported here, not at the top: `remediator --help` should not pay for the Google clients.
    from remediator.settings import Settings

    settings = Settings.from_env(os.environ, migrate_on_start=migrate_on_start)
    configure_logging(level=settings.log_level, json_format=settings.log_json)
    return settings


def _port(value: str) -> int:
    from remediator.settings import SettingsError, port_number

    try:
        return port_number(value, name="port")
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _incident_id(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 2**63:
        raise argparse.ArgumentTypeError(f"an incident id is a positive integer, got {value!r}")
    return int(value)


def cmd_serve(args: argparse.Namespace) -> int:
    from remediator.server import build_server_app, secure_serve_settings, warn_if_store_is_not_durable

    settings = _settings(args, migrate_on_start=args.migrate)
    host = args.host or settings.listen.host
    settings = secure_serve_settings(settings, host=host, allow_insecure=args.insecure_no_auth)
    warn_if_store_is_not_durable(settings)
    app = build_server_app(settings, with_actuator=not args.no_actuator)
    web.run_app(
        app,
        host=host,
        port=args.port or settings.listen.port,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        access_log=None,
        print=None,
    )
    return 0


def cmd_actuator(args: argparse.Namespace) -> int:
    from remediator.server import (
        actuator_readiness_warnings,
        build_actuator_app,
        warn_if_store_is_not_durable,
    )

    settings = _settings(args)
    host = args.host or settings.listen.host
    warnings = actuator_readiness_warnings(settings, host=host, allow_insecure=args.insecure_no_auth)
    warn_if_store_is_not_durable(settings)
    web.run_app(
        build_actuator_app(settings, readiness_warnings=warnings),
        host=host,
        port=args.port or settings.listen.actuator_port,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        access_log=None,
        print=None,
    )
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from incidents import Store, current_revision, head_revision, redact, upgrade

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
    from analyzer import PayloadInvalid
    from remediator.evaluate import run_evaluation

    try:
        return run_evaluation(args)
    except PayloadInvalid as exc:
        raise UsageError(exc.message) from None


def cmd_manual(args: argparse.Namespace) -> int:
    from remediator.manual import run_manual_command

    settings = _settings(args)
    return asyncio.run(run_manual_command(settings, args))


# What a reason may hold: the API's rule (analyzer/routes.py), one line of at most 1000 characters.
MAX_REASON_CHARS = 1000


def cmd_incident(args: argparse.Namespace) -> int:
    """A human escalates or closes an incident (incidents/handover.py), as the API does."""
    from incidents import IncidentStatus, Store, take_over

    reason, by = args.reason.strip(), args.by.strip()
    for name, value, limit in (("--reason", reason, MAX_REASON_CHARS), ("--by", by, 100)):
        if not value or len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise UsageError(f"{name} must be 1 to {limit} characters, with no control characters")
    target = IncidentStatus.ESCALATED if args.incident_command == "escalate" else IncidentStatus.CLOSED
    settings = _settings(args)

    async def run() -> int:
        store = Store.from_config(settings.store)
        try:
            was = await take_over(store, args.incident_id, to=target, by=by, reason=reason)
        finally:
            await store.dispose()
        print(f"incident {args.incident_id}: {target.value} (was {was.value}): {reason}")
        return 0

    return asyncio.run(run())


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
    parser.add_argument(
        "--metrics",
        choices=["app", "cloud-run"],
        default="app",
        help="app: the demo apps' own metrics (default); cloud-run: Cloud Run's platform metrics",
    )
    parser.add_argument(
        "--metrics-timing",
        choices=["cloud-monitoring", "fast"],
        default="cloud-monitoring",
        help="with --metrics cloud-run: points every 60 s readable 120 s later (default), or 5 s and 10 s",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remediator", description="Auto-remediation control plane for Google Cloud Run."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the analyzer (Alertmanager webhook, API) and the actuator")
    # Unset flags fall back to REMEDIATOR_HOST / REMEDIATOR_PORT, then Cloud Run's PORT
    # (remediator/settings.py).
    serve.add_argument(
        "--host", default=None, help="address to listen on (default: REMEDIATOR_HOST, else 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=_port,
        default=None,
        help="port to listen on (default: REMEDIATOR_PORT, else PORT, else 8080)",
    )
    serve.add_argument("--no-actuator", action="store_true", help="run the analyzer only")
    serve.add_argument("--migrate", action="store_true", help="bring the database schema up to date first")
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="listen beyond loopback without WEBHOOK_TOKEN (else refused); warned at start and in /readyz",
    )
    serve.set_defaults(handler=cmd_serve)

    actuator = commands.add_parser("actuator", help="run the actuator worker alone")
    actuator.add_argument(
        "--host",
        default=None,
        help="address of /healthz, /readyz and /metrics (default: REMEDIATOR_HOST, else 127.0.0.1)",
    )
    actuator.add_argument(
        "--port", type=_port, default=None, help="port of the same (default: ACTUATOR_PORT, else 8081)"
    )
    actuator.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="listen beyond loopback with /metrics open (refused otherwise without REMEDIATOR_READ_TOKEN)",
    )
    actuator.set_defaults(handler=cmd_actuator)

    db = commands.add_parser(
        "db",
        help="database schema",
        description="The incident store's schema (DATABASE_URL; SQLite in .remediator/ when unset).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        "  upgrade   apply every migration the database lacks (safe to repeat), then print its revision\n"
        "  current   print the revision the database is at, and the newest this version knows",
    )
    db.add_argument(
        "db_command", choices=["upgrade", "current"], metavar="{upgrade,current}", help="see below"
    )
    db.set_defaults(handler=cmd_db)

    evaluate = commands.add_parser("eval", help="replay a scenario library through an engine and the policy")
    evaluate.add_argument("directory", type=Path)
    evaluate.add_argument("--engine", choices=["rules", "gemini", "hybrid"], default="rules")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluate.add_argument("--record", type=Path, metavar="DIR", help="save each raw model response here")
    evaluate.add_argument("--replay", type=Path, metavar="DIR", help="score recorded model responses offline")
    evaluate.add_argument(
        "--ablate",
        action="store_true",
        help="replay every scenario once per removable piece of evidence; exit 1 if any removal "
        "makes the final decision more aggressive",
    )
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

    incident = commands.add_parser("incident", help="take an incident out of Remediator's hands")
    incident.add_argument(
        "incident_command",
        choices=["escalate", "close"],
        help="escalate: a human must look (queued and running actions are cancelled); close: it is over",
    )
    incident.add_argument("incident_id", type=_incident_id, metavar="ID")
    incident.add_argument("--reason", required=True, help="why (becomes the incident's status reason)")
    incident.add_argument("--by", default=os.environ.get("USER", "cli"), help="who (for the audit trail)")
    incident.set_defaults(handler=cmd_incident)

    up = commands.add_parser("up", help="start the whole local stack until Ctrl-C")
    demo = commands.add_parser("demo", help="run a scenario end to end and print the MTTR")
    add_stack_arguments(up)
    add_stack_arguments(demo)
    up.set_defaults(handler=cmd_up)
    demo.add_argument(
        "--scenario",
        default="bad-deploy",
        help="bad-deploy (default), canary, latency-deploy, traffic-spike, dependency-outage, startup-blip",
    )
    demo.add_argument(
        "--baseline-seconds", type=float, default=60.0, help="steady traffic before the fault (default 60)"
    )
    demo.add_argument(
        "--mode",
        choices=("auto", "approve"),
        default="auto",
        help="auto (default): Remediator acts alone; approve: every action waits for a click in a local "
        "fake Slack, which the demo makes after --approve-after seconds",
    )
    demo.add_argument(
        "--approve-after", type=float, default=5.0, help="seconds before the demo's on-call clicks Approve"
    )
    demo.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    demo.add_argument(
        "--save-scenario",
        type=Path,
        metavar="DIR",
        help="save the context the engine saw, with the outcome the fault calls for, as a scenario "
        "file in DIR for `remediator eval`",
    )
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
