"""`remediator eval DIR`: the evaluation harness on the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from analyzer.engines.base import DecisionEngine
from analyzer.engines.rules import RulesEngine
from analyzer.evaluation import evaluate, load_scenarios, render_table
from analyzer.policy import PolicyGuard
from incidents import RemediatorError


def _engine(args: argparse.Namespace) -> DecisionEngine:
    if args.engine == "rules":
        if args.record or args.replay:
            raise RemediatorError("--record and --replay apply to --engine gemini or hybrid")
        return RulesEngine()
    raise RemediatorError(f"--engine {args.engine} is not available in this build")


def run_evaluation(args: argparse.Namespace) -> int:
    """Print the table (or one JSON object); exit 1 when any decision is harmful."""
    scenarios = load_scenarios(args.directory)
    engine = _engine(args)
    report = asyncio.run(evaluate(scenarios, engine, PolicyGuard()))
    if args.json:
        print(json.dumps(report.to_json_dict()))
    else:
        print(render_table(report))
    if report.harmful:
        print(f"remediator: {report.harmful} harmful decision(s)", file=sys.stderr)
        return 1
    return 0
