"""MTTR of the closed loop, measured from the true fault onset, over several bad deploys.

Starts one local stack (every real process), then runs `--runs` bad deploys on separate demo services,
`--parallel` at a time (each with its own load generator at 20 req/s), and prints the MTTR median and
spread with its parts, plus the signals figures: fault onset to webhook delivered (detection) and
build_context wall time against the stack.

    .venv/bin/python benchmarks/mttr.py [--runs 6] [--parallel 3] [--error-rate 15] [--json]
                                        [--store sqlite|postgresql]

`--store postgresql` runs Remediator on a scratch database on TEST_DATABASE_URL's server
(127.0.0.1:5432 by default), dropped at the end; the default is the stack's SQLite file.

Numbers depend on the machine's load; read medians and spreads, not single runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector import CollectorConfig, ContextBuilder
from incidents import AlertInfo, utcnow
from remediator.demo import (
    SCENARIOS,
    DemoScenario,
    DemoTarget,
    Outcome,
    Timeline,
    deploy_bad_revision,
    run_scenario,
)
from remediator.stack import LocalStack, StackOptions
from tests.support.databases import create_scratch_postgres_database, drop_scratch_postgres_database
from tests.support.real_parts import free_port


class Quiet(Timeline):
    def __init__(self, prefix: str, verbose: bool) -> None:
        super().__init__(tty=False)
        self.prefix = prefix
        self.verbose = verbose

    def line(self, text: str) -> None:
        if self.verbose:
            super().line(f"{self.prefix}: {text}")


def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def inside_parts(outcome: Outcome) -> dict[str, float | None]:
    """Where the time inside Remediator went: webhook to decision committed, decision to the action
    claimed by the actuator, claimed to the change applied (traffic switched)."""
    stamps = (outcome.incident or {}).get("timestamps") or {}

    def between(start: str, end: str) -> float | None:
        if not stamps.get(start) or not stamps.get(end):
            return None
        started = datetime.fromisoformat(stamps[start].replace("Z", "+00:00"))
        ended = datetime.fromisoformat(stamps[end].replace("Z", "+00:00"))
        return round((ended - started).total_seconds(), 3)

    return {
        "decide": between("detected_at", "decided_at"),
        "claim": between("decided_at", "action_started_at"),
        "apply": between("action_started_at", "mitigated_at"),
    }


async def measure_build_context(stack: LocalStack, service: str, repeats: int) -> dict[str, float | None]:
    config = CollectorConfig(
        prometheus_url=stack.prometheus_url,
        cloud_run_endpoint=stack.emulator_url,
        logging_endpoint=stack.emulator_url,
    )
    alert = AlertInfo(
        name="HighErrorRate",
        status="firing",
        starts_at=utcnow(),
        fingerprint="benchmark",
        labels={"alertname": "HighErrorRate", "service": service},
    )
    timings = []
    async with ContextBuilder.open(config) as builder:
        await builder.build_context(alert, recent_actions=[], now=utcnow())  # warm the connections
        for _ in range(repeats):
            started = time.perf_counter()
            context = await builder.build_context(alert, recent_actions=[], now=utcnow())
            timings.append((time.perf_counter() - started) * 1000)
            assert not context.gaps, context.gaps
    result = spread(timings)
    result["p95"] = round(sorted(timings)[int(0.95 * (len(timings) - 1))], 2)
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    database_url = await create_scratch_postgres_database() if args.store == "postgresql" else None
    try:
        return await measure(args, database_url)
    finally:
        if database_url is not None:
            await drop_scratch_postgres_database(database_url)


async def measure(args: argparse.Namespace, database_url: str | None) -> dict[str, Any]:
    options = StackOptions(
        emulator_port=free_port(),
        prometheus_port=free_port(),
        alertmanager_port=free_port(),
        remediator_port=free_port(),
        loadgen_port=free_port(),
        rate=5.0,
        grafana=False,
        database_url=database_url,
    )
    base = SCENARIOS["bad-deploy"]

    async def inject(target: DemoTarget, http: Any) -> Any:
        return await deploy_bad_revision(target, {"DEMO_ERROR_RATE": str(args.error_rate)})

    scenario = DemoScenario(base.name, base.expected_action, base.summary, inject, base.profile)
    outcomes: list[Outcome] = []
    async with LocalStack(options, say=lambda _: None) as stack:
        context_timing = await measure_build_context(stack, options.service, args.context_repeats)
        for start in range(0, args.runs, args.parallel):

            async def one(number: int) -> Outcome:
                service = await stack.deploy_demo_service(f"bench-{number}", scenario.profile)
                port = free_port()
                await stack.start_loadgen(service.uri, 20.0, port)
                target = DemoTarget(
                    stack=stack, service=service, loadgen_url=f"http://127.0.0.1:{port}", rate=20.0
                )
                return await run_scenario(
                    target,
                    scenario,
                    baseline_seconds=args.baseline_seconds,
                    timeline=Quiet(f"run {number}", args.verbose),
                )

            batch = range(start, min(start + args.parallel, args.runs))
            outcomes.extend(await asyncio.gather(*(one(n) for n in batch)))
            for outcome in outcomes[-len(batch) :]:
                s = outcome.summary()
                parts = inside_parts(outcome)
                print(
                    f"run: {s['status']:<9} MTTR {s['mttr_seconds']}s  alert {s['time_to_alert_seconds']}s  "
                    f"detect {s['time_to_detect_seconds']}s  mitigate {s['time_to_mitigate_seconds']}s  "
                    f"inside {s['inside_remediator_seconds']}s (decide {parts['decide']}s, "
                    f"claim {parts['claim']}s, apply {parts['apply']}s)",
                    file=sys.stderr,
                    flush=True,
                )
    summaries = [o.summary() for o in outcomes]
    ok = [s for s in summaries if s["as_expected"]]

    def column(key: str) -> list[float]:
        return [float(s[key]) for s in ok if s[key] is not None]

    verify_stage = [
        float(s["mttr_seconds"]) - float(s["time_to_mitigate_seconds"])
        for s in ok
        if s["mttr_seconds"] is not None and s["time_to_mitigate_seconds"] is not None
    ]
    return {
        "store": args.store,
        "runs": len(summaries),
        "as_expected": len(ok),
        "error_rate_percent": args.error_rate,
        "mttr_seconds": spread(column("mttr_seconds")),
        "time_to_alert_seconds": spread(column("time_to_alert_seconds")),
        "time_to_detect_seconds (onset to webhook delivered)": spread(column("time_to_detect_seconds")),
        "time_to_mitigate_seconds": spread(column("time_to_mitigate_seconds")),
        "inside_remediator_seconds (webhook to traffic switched)": spread(
            column("inside_remediator_seconds")
        ),
        "verify_stage_seconds (traffic switched to verified)": spread(verify_stage),
        "remediator_estimated_mttr_seconds": spread(column("remediator_mttr_seconds")),
        "build_context_ms": context_timing,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--error-rate", type=int, default=15, help="percent of 500s in the bad revision")
    parser.add_argument("--baseline-seconds", type=float, default=60)
    parser.add_argument("--context-repeats", type=int, default=20)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    report = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:<58} {value}")
