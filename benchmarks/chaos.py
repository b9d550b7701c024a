"""Chaos: Remediator's invariants under faults of its own dependencies, on the real local stack.

Each fault runs on a fresh stack (Cloud Run emulator, demo service under load, Prometheus,
Alertmanager, `remediator serve` with the default settings) backed by a private PostgreSQL server
that the harness may restart; see tests/support/chaos_faults.py for what each fault does and when.
One table, one row per fault:

    did            the incidents' final statuses and their actions
    stuck          incidents left where only Remediator can move them (open..verifying)   must be 0
    changes/dec.   UpdateService calls the emulator carried out, per decision             must be 1
    lost           alerts delivered (2xx) or held by Alertmanager but not recorded        must be 0
    recover        fault to every incident at rest (resolved, escalated, ...), seconds

    .venv/bin/python benchmarks/chaos.py [--only FAULT[,FAULT...]] [--json] [--verbose]

Exit status 1 when any invariant is broken. Timings depend on the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.chaos import FaultReport
from tests.support.chaos_faults import FAULTS, FaultSettings, run_fault_on_fresh_stack

COLUMNS = (("fault", 26), ("stuck", 5), ("changes/dec.", 12), ("lost", 10), ("recover", 8), ("did", 0))


def row(report: FaultReport) -> list[str]:
    per_decision = ",".join(str(n) for n in report.changes_per_decision) or "-"
    return [
        report.fault,
        str(report.stuck),
        f"{per_decision} ({report.changes}/{report.decisions})",
        f"{report.alerts_lost}/{report.alerts_delivered}",
        "never" if report.recover_seconds is None else f"{report.recover_seconds:g}s",
        report.did,
    ]


def print_table(reports: list[FaultReport]) -> None:
    header = "  ".join(name.ljust(width) for name, width in COLUMNS)
    print(header)
    print("-" * len(header))
    for report in reports:
        cells = row(report)
        print("  ".join(cell.ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True)))
    print()
    for report in reports:
        verdict = "OK" if not report.violations() else "BROKEN"
        print(f"{report.fault}: {verdict} ({report.elapsed_seconds:.0f}s) - {report.description}")
        for violation in report.violations():
            print(f"    violated: {violation}")
        for note in report.notes:
            print(f"    note: {note}")


async def main(args: argparse.Namespace) -> list[FaultReport]:
    names = [name for part in args.only for name in part.split(",") if name] if args.only else list(FAULTS)
    unknown = [name for name in names if name not in FAULTS]
    if unknown:
        raise SystemExit(f"unknown fault(s) {', '.join(unknown)}; one of {', '.join(FAULTS)}")
    settings = FaultSettings(storm_alerts=args.storm_alerts)
    reports = []

    def say(text: str) -> None:
        if args.verbose:
            print(f"  {text}", file=sys.stderr, flush=True)

    for name in names:
        fault = FAULTS[name]
        print(f"chaos: {name}: {fault.description}", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            report = await run_fault_on_fresh_stack(fault, settings, say=say)
        except Exception as exc:  # a fault that could not run is a row that says so, not a crash
            traceback.print_exc(file=sys.stderr)
            report = FaultReport(fault=name, description=fault.description, did=f"harness error: {exc}")
            report.stuck_detail.append("harness error")
            report.stuck = -1
            report.elapsed_seconds = time.monotonic() - started
        print(
            f"chaos: {name}: {'BROKEN' if report.violations() else 'OK'} in {report.elapsed_seconds:.0f}s",
            file=sys.stderr,
            flush=True,
        )
        reports.append(report)
    return reports


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", help=f"run only these faults: {', '.join(FAULTS)}")
    parser.add_argument("--storm-alerts", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    parser.add_argument("--verbose", action="store_true")
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments))
    document: dict[str, Any] = {"faults": [report.as_dict() for report in results]}
    if arguments.json:
        print(json.dumps(document, default=str))
    else:
        print_table(results)
    sys.exit(1 if any(report.violations() for report in results) else 0)
