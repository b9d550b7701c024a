"""The Dockerfile of the Python services and its build context (.dockerignore), read as text."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.compose.stack_files import (
    DOCKERFILE,
    REPO_ROOT,
    copy_sources_and_targets,
    dockerfile_instructions,
    in_build_context,
)


def copies() -> list[tuple[list[str], str]]:
    return [copy_sources_and_targets(i) for i in dockerfile_instructions() if i.keyword == "COPY"]


def test_base_image_is_python_311_slim() -> None:
    bases = [i.arguments for i in dockerfile_instructions() if i.keyword == "FROM"]
    assert bases == ["python:3.11-slim"]


def test_processes_run_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    users = [index for index, i in enumerate(instructions) if i.keyword == "USER"]
    assert users, "the image runs as root"
    final = instructions[users[-1]].arguments.split(":")[0]
    assert final not in ("root", "0"), final
    # Nothing after the switch needs root, and nothing switches back.
    assert all(i.keyword != "RUN" for i in instructions[users[-1] :])
    created = [i.arguments for i in instructions if i.keyword == "RUN" and "useradd" in i.arguments]
    assert created and re.search(rf"--uid {re.escape(final)}\b", created[0]), "USER names the created account"


def test_the_project_is_installed_with_pip_install_dot_and_no_extras() -> None:
    runs = " ".join(i.arguments for i in dockerfile_instructions() if i.keyword == "RUN")
    assert re.search(r"\bpip install \.(\s|$)", runs), "the project is installed with `pip install .`"
    assert not re.search(r"pip install [^&;]*\.\[", runs), "no optional extras (test, gcp) in the image"
    assert not re.search(r"pip install [^&;]*(-e|--editable)\b", runs)


def test_the_early_dependency_layer_installs_exactly_pyprojects_dependencies(tmp_path: Path) -> None:
    # Run the Dockerfile's own shell command next to a copy of pyproject.toml, as the build does.
    run = next(
        i.arguments for i in dockerfile_instructions() if i.keyword == "RUN" and "tomllib" in i.arguments
    )
    writer, _, installer = run.partition("&&")
    assert "requirements.txt" in writer and installer.split() == ["pip", "install", "-r", "requirements.txt"]
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    python = Path(sys.executable).parent
    subprocess.run(
        ["sh", "-c", writer], cwd=tmp_path, check=True, env={"PATH": f"{python}:/usr/bin:/bin"}, timeout=30
    )
    written = (tmp_path / "requirements.txt").read_text().splitlines()
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert written == dependencies


def test_copy_sources_exist_and_reach_the_build_context() -> None:
    for sources, _ in copies():
        for source in sources:
            path = REPO_ROOT / source
            assert path.exists(), f"COPY {source}: no such file in the repository"
            assert in_build_context(source), f"COPY {source}: .dockerignore keeps it out of the context"
            if path.is_dir():
                # Package data too (migrations' script.py.mako, analyzer/openapi.yaml, ...).
                for child in path.rglob("*"):
                    relative = child.relative_to(REPO_ROOT).as_posix()
                    if child.is_file() and "__pycache__" not in relative:
                        assert in_build_context(relative), f"{relative} is left out of the build context"


def test_every_package_pyproject_installs_is_copied() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in patterns}
    copied = {source.rstrip("/") for sources, _ in copies() for source in sources}
    missing = packages - copied
    assert not missing, f"`pip install .` in the image would leave out {sorted(missing)}"
    assert pyproject["project"]["readme"] in copied, "setuptools reads the readme the metadata names"
    assert "pyproject.toml" in copied


def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    for path in (
        "compose/secrets/webhook-token",
        "compose/secrets/api-token",
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        "incidents/__pycache__/db.cpython-311.pyc",
        "remediator.egg-info/PKG-INFO",
    ):
        assert not in_build_context(path), f"{path} would be sent to the image build"


def test_dockerfile_sets_no_secret() -> None:
    for instruction in dockerfile_instructions():
        if instruction.keyword in ("ENV", "ARG"):
            assert not re.search(r"PASSWORD|TOKEN|SECRET|KEY", instruction.arguments, re.IGNORECASE), (
                f"{instruction.keyword} {instruction.arguments}"
            )
    assert "DATABASE_URL" not in DOCKERFILE.read_text()
