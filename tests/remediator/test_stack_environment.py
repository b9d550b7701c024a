"""The local stack passes each child only the environment it needs: a token or a cloud credential in
the shell reaches Remediator when Remediator reads it, and no other child."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from remediator.processes import BASE_ENVIRONMENT, ChildProcess, child_environment
from remediator.stack import REMEDIATOR_ENV_NAMES, REMEDIATOR_ENV_PREFIXES, LocalStack, StackOptions
from tests.compose.stack_files import settings_env_names

SHELL = {
    "PATH": "/usr/bin",
    "HOME": "/home/me",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    # Secrets and settings of other programs that happen to be in the shell.
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "GITHUB_TOKEN": "ghp-secret",
    "PGPASSWORD": "pg-secret",
    "GF_PATHS_DATA": "/elsewhere",
    "GRAFANA_ADMIN_PASSWORD": "grafana-admin-secret",
    "SLACK_WEBHOOK_URL": "https://hooks.example/secret",
    # What Remediator reads.
    "REMEDIATOR_MODE": "approve",
    "REMEDIATOR_READ_TOKEN": "reader",
    "GOOGLE_API_KEY": "gemini-key",
    "GOOGLE_APPLICATION_CREDENTIALS": "/home/me/adc.json",
    "VERIFY_TIMEOUT_SECONDS": "60",
    "ERROR_RATE_THRESHOLD": "0.05",
    "HTTPS_PROXY": "http://proxy:3128",
    "WEBHOOK_TOKEN": "",
}
FOREIGN = {"AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "PGPASSWORD", "GF_PATHS_DATA", "SLACK_WEBHOOK_URL"}


def test_children_get_the_base_environment_and_nothing_else() -> None:
    env = child_environment(environ=SHELL)
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
    }
    assert set(env) <= BASE_ENVIRONMENT | {"LC_ALL"}
    assert child_environment(environ=SHELL, PORT="9")["PORT"] == "9"


def test_remediator_gets_what_it_reads_and_the_stacks_wiring(tmp_path: Path) -> None:
    stack = LocalStack(StackOptions(state_dir=tmp_path, remediator_env={"VERIFY_INTERVAL_SECONDS": "1"}))
    env = stack.remediator_environment(tmp_path / "secrets", environ=SHELL)
    assert not FOREIGN & set(env)
    assert "GRAFANA_ADMIN_PASSWORD" not in env
    for name in (
        "REMEDIATOR_MODE",
        "REMEDIATOR_READ_TOKEN",
        "GOOGLE_API_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        assert env[name] == SHELL[name]
    assert (env["VERIFY_TIMEOUT_SECONDS"], env["ERROR_RATE_THRESHOLD"]) == ("60", "0.05")
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert env["VERIFY_INTERVAL_SECONDS"] == "1"
    assert env["WEBHOOK_TOKEN_FILE"] == str(tmp_path / "secrets" / "webhook-token")
    assert "WEBHOOK_TOKEN" not in env  # the stack's token file wins over an empty shell value
    assert env["DATABASE_URL"] == f"sqlite:///{tmp_path / 'remediator.db'}"


def test_every_setting_remediator_reads_can_reach_it(tmp_path: Path) -> None:
    """The allow-list follows remediator/settings.py: a new setting that did not pass would be
    silently ignored by `remediator up`. The webhook token is the stack's own (its file)."""
    wired = set(LocalStack(StackOptions(state_dir=tmp_path)).remediator_environment(tmp_path, environ={}))
    missing = {
        name
        for name in settings_env_names() - wired - {"WEBHOOK_TOKEN"}
        if name not in REMEDIATOR_ENV_NAMES and not name.startswith(REMEDIATOR_ENV_PREFIXES)
    }
    assert missing == set()


async def test_a_started_child_sees_only_the_environment_it_was_given(tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    child = ChildProcess(
        name="probe",
        argv=[
            sys.executable,
            "-c",
            f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))",
        ],
        log_path=tmp_path / "probe.log",
        env=child_environment(environ={**SHELL, "PATH": f"{Path(sys.executable).parent}:/usr/bin"}),
    )
    await child.start()
    assert child.process is not None
    await child.process.wait()
    seen = json.loads(out.read_text())
    assert not FOREIGN & set(seen)
    assert "REMEDIATOR_READ_TOKEN" not in seen and "GOOGLE_API_KEY" not in seen
