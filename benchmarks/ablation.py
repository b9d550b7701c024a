"""How long `remediator eval DIR --ablate` takes with the rules engine and the default policy.

    .venv/bin/python benchmarks/ablation.py [--directory analyzer/scenarios] [--rounds 5]

Loads the scenarios once, then ablates them `--rounds` times (every removable piece of evidence
removed alone, each ablated context decided and judged by the policy) and prints the scenarios, the
runs per round, the median and worst seconds per round and runs per second, as a table and one JSON
line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyzer.ablation import ablate
from analyzer.engines.rules import RulesEngine
from analyzer.evaluation import load_scenarios
from analyzer.policy import PolicyGuard

LIBRARY = Path(__file__).resolve().parents[1] / "analyzer" / "scenarios"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--directory", type=Path, default=LIBRARY)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    scenarios = load_scenarios(args.directory)
    seconds: list[float] = []
    runs = 0
    for _ in range(args.rounds):
        started = time.perf_counter()
        report = asyncio.run(ablate(scenarios, RulesEngine(), PolicyGuard()))
        seconds.append(time.perf_counter() - started)
        runs = len(report.runs)
    median = statistics.median(seconds)
    figures = {
        "scenarios": len(scenarios),
        "runs_per_round": runs,
        "rounds": args.rounds,
        "median_seconds": round(median, 3),
        "worst_seconds": round(max(seconds), 3),
        "runs_per_second": round(runs / median),
    }
    for name, value in figures.items():
        print(f"{name:16} {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
