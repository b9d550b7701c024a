"""`remediator eval DIR`: the evaluation harness on the command line.

`--engine gemini|hybrid` asks Gemini about every scenario (credentials from the environment, as for
`serve`). `--record DIR` saves each raw model answer, one file per scenario id; `--replay DIR` scores
those answers again offline, through the same validation, fallback and policy, with no credentials.

`--ablate` checks that less evidence never means more action (`analyzer/ablation.py`): every scenario
is decided again once per piece of evidence removed, with the rules engine and the policy. A model
engine would be asked once per removal, and a recording only answers the full context, so `--ablate`
takes `--engine rules` only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from analyzer import (
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT_SECONDS,
    EvaluationReport,
    GeminiConfig,
    GenAIClient,
    PolicyGuard,
    RecordingClient,
    ReplayClient,
    RulesEngine,
    build_engine,
    evaluate_scenario,
    load_scenarios,
    open_genai_client,
    render_table,
)
from analyzer.ablation import ablate, render_ablation_table
from incidents import RemediatorError, Scenario
from remediator.settings import gemini_config_from_env, require_gemini


def _check_arguments(args: argparse.Namespace) -> None:
    if args.ablate and args.engine != "rules":
        raise RemediatorError("--ablate runs the rules engine only (a model would be asked once per removal)")
    if args.engine == "rules" and (args.record or args.replay):
        raise RemediatorError("--record and --replay apply to --engine gemini or hybrid")
    if args.record and args.replay:
        raise RemediatorError("--record and --replay exclude each other")


@asynccontextmanager
async def _model_client(args: argparse.Namespace) -> AsyncIterator[tuple[GeminiConfig, GenAIClient]]:
    if args.replay:
        # Offline, with no credentials: the model and timeout are the recorded run's.
        replay = ReplayClient(Path(args.replay))
        model, timeout = replay.recorded_run()
        offline = GeminiConfig(
            model=model or DEFAULT_MODEL,
            timeout=timeout or DEFAULT_TIMEOUT_SECONDS,
            retry_delay=0.0,  # nobody to give a breather to
        )
        yield offline, replay
        return
    config = require_gemini(gemini_config_from_env(os.environ), asked_by=f"--engine {args.engine}")
    async with open_genai_client(config) as client:
        yield config, (RecordingClient(client, Path(args.record)) if args.record else client)


async def _evaluate(args: argparse.Namespace, scenarios: Sequence[Scenario]) -> EvaluationReport:
    policy = PolicyGuard()
    if args.engine == "rules":
        rules = build_engine("rules")
        return EvaluationReport(results=[await evaluate_scenario(s, rules, policy) for s in scenarios])
    async with _model_client(args) as (config, client):
        engine = build_engine(args.engine, client=client, gemini=config)
        results = []
        for scenario in scenarios:
            if isinstance(client, RecordingClient | ReplayClient):
                client.use(scenario.id)
            results.append(await evaluate_scenario(scenario, engine, policy))
        if isinstance(client, ReplayClient) and client.stale:
            stale = ", ".join(client.stale)
            print(f"remediator: recorded from a prompt that has changed since: {stale}", file=sys.stderr)
    return EvaluationReport(results=results)


def run_ablation(scenarios: Sequence[Scenario], *, as_json: bool) -> int:
    """Print the table per piece (or one JSON object); exit 1 when any removal was more aggressive."""
    report = asyncio.run(ablate(scenarios, RulesEngine(), PolicyGuard()))
    print(json.dumps(report.to_json_dict()) if as_json else render_ablation_table(report))
    if report.offending:
        print(
            f"remediator: {len(report.offending)} removal(s) of evidence made the decision more aggressive",
            file=sys.stderr,
        )
        return 1
    return 0


def run_evaluation(args: argparse.Namespace) -> int:
    """Print the table (or one JSON object); exit 1 when any decision is harmful."""
    _check_arguments(args)
    scenarios = load_scenarios(args.directory)
    if args.ablate:
        return run_ablation(scenarios, as_json=args.json)
    report = asyncio.run(_evaluate(args, scenarios))
    if args.json:
        print(json.dumps(report.to_json_dict()))
    else:
        print(render_table(report))
    if report.harmful:
        print(f"remediator: {report.harmful} harmful decision(s)", file=sys.stderr)
        return 1
    return 0
