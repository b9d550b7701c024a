"""`remediator eval DIR`: the evaluation harness on the command line.

`--engine gemini|hybrid` asks Gemini about every scenario (credentials from the environment, as for
`serve`). `--record DIR` saves each raw model answer, one file per scenario id; `--replay DIR` scores
those answers again offline, through the same validation, fallback and policy, with no credentials.
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

from analyzer.engines.base import DecisionEngine
from analyzer.engines.gemini import (
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT_SECONDS,
    GeminiConfig,
    GeminiEngine,
    GenAIClient,
)
from analyzer.engines.genai_client import open_genai_client
from analyzer.engines.hybrid import HybridEngine
from analyzer.engines.recording import RecordingClient, ReplayClient
from analyzer.engines.rules import RulesEngine
from analyzer.evaluation import EvaluationReport, evaluate_scenario, load_scenarios, render_table
from analyzer.policy import PolicyGuard
from incidents import RemediatorError, Scenario
from remediator.settings import GEMINI_CREDENTIALS_HINT, SettingsError, gemini_config_from_env


def _check_arguments(args: argparse.Namespace) -> None:
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
    config = gemini_config_from_env(os.environ)
    if config is None:
        raise SettingsError(f"--engine {args.engine} needs Gemini credentials: {GEMINI_CREDENTIALS_HINT}")
    async with open_genai_client(config) as client:
        yield config, (RecordingClient(client, Path(args.record)) if args.record else client)


async def _evaluate(args: argparse.Namespace, scenarios: Sequence[Scenario]) -> EvaluationReport:
    policy = PolicyGuard()
    if args.engine == "rules":
        rules = RulesEngine()
        return EvaluationReport(results=[await evaluate_scenario(s, rules, policy) for s in scenarios])
    async with _model_client(args) as (config, client):
        gemini = GeminiEngine(client=client, config=config)
        engine: DecisionEngine = HybridEngine(gemini=gemini) if args.engine == "hybrid" else gemini
        results = []
        for scenario in scenarios:
            if isinstance(client, RecordingClient | ReplayClient):
                client.use(scenario.id)
            results.append(await evaluate_scenario(scenario, engine, policy))
        if isinstance(client, ReplayClient) and client.stale:
            stale = ", ".join(client.stale)
            print(f"remediator: recorded from a prompt that has changed since: {stale}", file=sys.stderr)
    return EvaluationReport(results=results)


def run_evaluation(args: argparse.Namespace) -> int:
    """Print the table (or one JSON object); exit 1 when any decision is harmful."""
    _check_arguments(args)
    scenarios = load_scenarios(args.directory)
    report = asyncio.run(_evaluate(args, scenarios))
    if args.json:
        print(json.dumps(report.to_json_dict()))
    else:
        print(render_table(report))
    if report.harmful:
        print(f"remediator: {report.harmful} harmful decision(s)", file=sys.stderr)
        return 1
    return 0
