"""Onset to alert, onset to traffic switched, and MTTR, per metrics profile, from real demo runs.

Each run is a whole `remediator demo --json` (a fresh local stack on free ports): the true onset is
the moment the bad revision took traffic, and the demo's last line gives the alert time, the moment
the traffic change was applied (`time_to_mitigate_seconds`) and the MTTR (verified recovery), all
from that onset. Configurations:

    app             the demo apps' own metrics, 5 s scrapes
    cloud-run       Cloud Run's platform metrics as Cloud Monitoring serves them: a point every 60 s,
                    readable 120 s later (the emulator's default timing)
    cloud-run-fast  the same shape twelve times faster (5 s points, 10 s delay)

The configurations run side by side (each its own sequence of runs); numbers depend on the machine's
load, so read the medians. A run that did not end as expected is counted and left out of the medians.

    .venv/bin/python benchmarks/metrics_profiles.py [--runs 5] [--scenarios bad-deploy,canary]
        [--configs app,cloud-run,cloud-run-fast] [--json] [--log-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.real_parts import free_port  # noqa: E402

CONFIGS: dict[str, list[str]] = {
    "app": ["--metrics", "app"],
    "cloud-run": ["--metrics", "cloud-run", "--metrics-timing", "cloud-monitoring"],
    "cloud-run-fast": ["--metrics", "cloud-run", "--metrics-timing", "fast"],
}
FIGURES = ("time_to_alert_seconds", "time_to_mitigate_seconds", "mttr_seconds")
RUN_TIMEOUT_S = 1800.0


async def one_run(
    config: str, scenario: str, number: int, verbose: bool, log_dir: Path | None
) -> dict[str, Any]:
    ports = [free_port() for _ in range(5)]
    argv = [
        str(ROOT / ".venv" / "bin" / "remediator"),
        "demo",
        "--scenario",
        scenario,
        "--json",
        "--no-grafana",
        *CONFIGS[config],
        "--emulator-port",
        str(ports[0]),
        "--prometheus-port",
        str(ports[1]),
        "--alertmanager-port",
        str(ports[2]),
        "--remediator-port",
        str(ports[3]),
        "--loadgen-port",
        str(ports[4]),
    ]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        return {
            "config": config,
            "scenario": scenario,
            "run": number,
            "as_expected": False,
            "error": "timeout",
        }
    text = output.decode(errors="replace")
    if log_dir is not None:
        await asyncio.to_thread((log_dir / f"{config}-{scenario}-{number}.log").write_text, text)
    lines = text.strip().splitlines()
    try:
        summary: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        summary = {"as_expected": False, "error": f"exit {process.returncode}: {' | '.join(lines[-3:])}"}
    summary.update(config=config, scenario=scenario, run=number)
    if verbose:
        figures = ", ".join(f"{key.split('_seconds')[0]} {summary.get(key)}" for key in FIGURES)
        error = f" ({summary['error']})" if summary.get("error") else ""
        print(
            f"{config} {scenario} #{number}: as_expected={summary.get('as_expected')} {figures}{error}",
            flush=True,
        )
    return summary


async def sequence(
    config: str, scenarios: list[str], runs: int, verbose: bool, log_dir: Path | None
) -> list[dict[str, Any]]:
    results = []
    for number in range(1, runs + 1):
        for scenario in scenarios:
            results.append(await one_run(config, scenario, number, verbose, log_dir))
    return results


def medians(results: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in results if r.get("as_expected")]
    table: dict[str, Any] = {"runs": len(results), "as_expected": len(good)}
    for key in FIGURES:
        values = [float(r[key]) for r in good if r.get(key) is not None]
        table[key] = round(statistics.median(values), 1) if values else None
        table[f"{key}_range"] = [round(min(values), 1), round(max(values), 1)] if values else None
    return table


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configs = [c for c in args.configs.split(",") if c]
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s): {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    sequences = await asyncio.gather(
        *(sequence(c, scenarios, args.runs, not args.json, args.log_dir) for c in configs)
    )
    report: dict[str, Any] = {"runs_per_scenario": args.runs, "results": {}}
    for config, results in zip(configs, sequences, strict=True):
        for scenario in scenarios:
            report["results"][f"{config}/{scenario}"] = medians(
                [r for r in results if r["scenario"] == scenario]
            )
    return report


def print_table(report: dict[str, Any]) -> None:
    print()
    print(f"medians over {report['runs_per_scenario']} runs each (seconds from the true onset)")
    print(f"{'configuration/scenario':34} {'ok':>5} {'alert':>8} {'switched':>9} {'MTTR':>8}")
    for name, row in report["results"].items():
        cells = [f"{row[key]:.1f}" if row[key] is not None else "n/a" for key in FIGURES]
        ok = f"{row['as_expected']}/{row['runs']}"
        print(f"{name:34} {ok:>5} {cells[0]:>8} {cells[1]:>9} {cells[2]:>8}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenarios", default="bad-deploy,canary")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep each demo's whole output here")
    arguments = parser.parse_args()
    if arguments.log_dir is not None:
        arguments.log_dir.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps(result))
    else:
        print_table(result)
