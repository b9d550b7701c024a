"""The command line: help, eval, db, and how errors surface."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from remediator.cli import main

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
    for command in ("serve", "actuator", "db", "eval", "rollback", "scale", "release", "up", "demo"):
        assert command in result.stdout


def test_eval_of_the_library_is_harmless(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(REPO / "analyzer" / "scenarios"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] >= 30
    assert report["harmful"] == 0
    assert set(report) >= {"total", "correct", "harmful", "accuracy", "results"}
    assert main(["eval", str(REPO / "analyzer" / "scenarios")]) == 0
    assert "0 harmful" in capsys.readouterr().out


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
    assert "schema at 0002" in upgraded.stdout or "schema at 0001" in upgraded.stdout
    current = run("db", "current", env=env)
    assert (
        current.stdout.split("schema at ")[1].split()[0] == upgraded.stdout.split("schema at ")[1].split()[0]
    )


def test_bad_configuration_is_exit_2_with_the_variable_named() -> None:
    result = run("db", "current", env={"REMEDIATOR_MODE": "sometimes"})
    assert result.returncode == 2
    assert "REMEDIATOR_MODE must be one of" in result.stderr
    assert "Traceback" not in result.stderr


def test_entry_point_is_installed() -> None:
    assert shutil.which("remediator", path=str(Path(sys.executable).parent))
