"""The command line: help, eval, db, and how errors surface."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.ablation import PIECES
from analyzer.engines.base import EngineResult
from incidents import ActionType, Decision, IncidentContext
from incidents.migrate import head_revision
from remediator.cli import main
from tests.analyzer.test_evaluation import KNOWN_HARMFUL
from tests.support.scenarios import copy_library

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "remediator.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        check=False,
    )


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in (
        "serve",
        "actuator",
        "db",
        "eval",
        "rollback",
        "scale",
        "release",
        "incident",
        "up",
        "demo",
    ):
        assert command in result.stdout


def test_eval_of_the_library_is_harmless_apart_from_known_bugs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    library = copy_library(tmp_path / "library", leave_out=KNOWN_HARMFUL)
    assert main(["eval", str(library), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] >= 70
    assert report["harmful"] == 0
    assert set(report) >= {"total", "correct", "harmful", "accuracy", "by_category", "results"}
    assert "startup_blip" in report["by_category"]
    assert main(["eval", str(library)]) == 0
    out = capsys.readouterr().out
    assert "0 harmful" in out
    assert out.splitlines()[-1].split() == ["rules", str(report["total"]), str(report["correct"]), "0"]


def test_eval_of_the_whole_library_reports_the_known_harmful_decisions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["eval", str(REPO / "analyzer" / "scenarios"), "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    harmful = {r["id"] for r in report["results"] if r["harmful"]}
    assert harmful == set(KNOWN_HARMFUL)
    assert code == (1 if harmful else 0)
    assert (f"{len(harmful)} harmful decision(s)" in captured.err) is bool(harmful)


def test_eval_exits_1_on_a_harmful_decision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = json.loads((REPO / "analyzer" / "scenarios" / "bad-deploy-full-traffic-5xx.json").read_text())
    source["id"] = "mislabelled"
    source["expect"] = {"action": "NONE", "acceptable": [], "forbidden": ["ROLLBACK"]}
    (tmp_path / "mislabelled.json").write_text(json.dumps(source))
    assert main(["eval", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "HARMFUL" in captured.out
    assert "1 harmful" in captured.err


def test_eval_of_bad_input_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert main(["eval", str(tmp_path)]) == 2
    assert "broken.json" in capsys.readouterr().err


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    upgraded = run("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"schema at {head_revision()} (newest {head_revision()})" in upgraded.stdout
    current = run("db", "current", env=env)
    assert (
        current.stdout.split("schema at ")[1].split()[0] == upgraded.stdout.split("schema at ")[1].split()[0]
    )


def test_bad_configuration_is_exit_2_with_the_variable_named() -> None:
    result = run("db", "current", env={"REMEDIATOR_MODE": "sometimes"})
    assert result.returncode == 2
    assert "REMEDIATOR_MODE must be one of" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("arguments", "env", "message"),
    [
        (("serve",), {"REMEDIATOR_PORT": "eighty"}, "REMEDIATOR_PORT must be a port number, got 'eighty'"),
        (("actuator",), {"ACTUATOR_PORT": "99999"}, "ACTUATOR_PORT must be between 1 and 65535"),
        (("serve",), {"REMEDIATOR_HOST": "http://0.0.0.0"}, "REMEDIATOR_HOST must be a host name or an IP"),
        (("serve", "--port", "99999"), {}, "argument --port: port must be between 1 and 65535"),
    ],
)
def test_a_bad_listen_address_is_exit_2_naming_the_variable(
    arguments: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run(*arguments, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_entry_point_is_installed() -> None:
    assert shutil.which("remediator", path=str(Path(sys.executable).parent))


class _RollsBackWithoutLogs:
    """Investigates while log lines are there and rolls back to the previous revision without them."""

    name = "careless"

    async def decide(self, context: IncidentContext) -> EngineResult:
        if context.logs:
            return EngineResult(decision=Decision(action=ActionType.INVESTIGATE, confidence=0.9))
        target = context.revisions[1].name
        return EngineResult(
            decision=Decision(action=ActionType.ROLLBACK, target_revision=target, confidence=0.95)
        )


def write_without_logs(path: Path) -> None:
    document = json.loads((REPO / "analyzer" / "scenarios" / "bad-deploy-canary-latency.json").read_text())
    del document["context"]["logs"]
    path.write_text(json.dumps(document))


def test_eval_ablate_prints_every_piece_and_exits_1_when_a_removal_is_more_aggressive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Any directory of scenarios: here two library files, one with log lines and one without.
    shutil.copyfile(
        REPO / "analyzer" / "scenarios" / "bad-deploy-full-traffic-5xx.json", tmp_path / "with-logs.json"
    )
    write_without_logs(tmp_path / "without-logs.json")
    monkeypatch.setattr("remediator.evaluate.RulesEngine", _RollsBackWithoutLogs)

    assert main(["eval", str(tmp_path), "--ablate"]) == 1
    captured = capsys.readouterr()
    rows = {line.split()[0]: line.split() for line in captured.out.splitlines()[2:-2]}
    assert list(rows) == list(PIECES)
    assert rows["logs"][1:] == ["1", "1", "bad-deploy-full-traffic-5xx"]
    assert rows["revisions[].history"][1:] == ["3", "0", "-"]
    assert "1 removal(s) of evidence made the decision more aggressive" in captured.err

    assert main(["eval", str(tmp_path), "--ablate", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["scenarios"], report["more_aggressive"]) == (2, 1)
    assert report["offending"][0]["id"] == "bad-deploy-full-traffic-5xx"


def test_eval_ablate_exits_0_when_no_removal_is_more_aggressive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_without_logs(tmp_path / "without-logs.json")
    monkeypatch.setattr("remediator.evaluate.RulesEngine", _RollsBackWithoutLogs)
    assert main(["eval", str(tmp_path), "--ablate"]) == 0
    captured = capsys.readouterr()
    assert " 0 more aggressive than the full context (in 0 scenarios)" in captured.out
    assert captured.err == ""


def test_eval_ablate_runs_the_rules_engine_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(REPO / "analyzer" / "scenarios"), "--ablate", "--engine", "hybrid"]) == 1
    assert "--ablate runs the rules engine only" in capsys.readouterr().err


def test_serve_listens_on_cloud_runs_port_unless_remediator_port_says_otherwise() -> None:
    from remediator.cli import build_parser
    from remediator.settings import Settings

    assert Settings.from_env({"PORT": "9123"}).listen.port == 9123
    assert Settings.from_env({"PORT": "9123", "REMEDIATOR_PORT": "9124"}).listen.port == 9124
    assert Settings.from_env({}).listen.port == 8080
    # The flag wins over both; unset, it leaves the choice to the settings.
    assert build_parser().parse_args(["serve", "--port", "9125"]).port == 9125
    assert build_parser().parse_args(["serve"]).port is None


def test_up_and_demo_take_a_metrics_profile_and_timing() -> None:
    from remediator.cli import build_parser

    args = build_parser().parse_args(["demo", "--metrics", "cloud-run", "--metrics-timing", "fast"])
    assert (args.metrics, args.metrics_timing) == ("cloud-run", "fast")
    args = build_parser().parse_args(["up"])
    assert (args.metrics, args.metrics_timing) == ("app", "cloud-monitoring")
