"""compose.yaml, the Dockerfile and the files they name, loaded as data for the tests."""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
SETTINGS_SOURCE = REPO_ROOT / "remediator" / "settings.py"
COMPOSE_DIR = REPO_ROOT / "compose"
SECRETS_DIR = COMPOSE_DIR / "secrets"
INIT_SECRETS = COMPOSE_DIR / "init-secrets.sh"
DEMO_SERVICE_SCRIPT = COMPOSE_DIR / "demo_service.py"
POSTGRES_INIT_DIR = COMPOSE_DIR / "postgres-init"

EMULATOR = "emulator"
# Compose's `$$` is a literal `$` in the container; a single `$` is interpolated by Compose itself.
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
_SECRET_SOURCE_READERS = {"read_secret"}
_ENV_READERS = {"raw", "text", "integer", "number", "choice", "names"}


def load_compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    assert isinstance(document, dict), "compose.yaml must be a mapping"
    return document


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


def argv(service: dict[str, Any]) -> list[str]:
    """The service's command as a list (Compose splits a string command like a shell would)."""
    command = service.get("command")
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def option(arguments: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE`, the last one winning like argparse."""
    value = None
    for index, part in enumerate(arguments):
        if part == name and index + 1 < len(arguments):
            value = arguments[index + 1]
        elif part.startswith(name + "="):
            value = part.split("=", 1)[1]
    return value


def namespace(name: str, every: dict[str, dict[str, Any]]) -> str:
    """Whose network namespace a service runs in: its own, or the one `network_mode` names."""
    mode = every[name].get("network_mode")
    if isinstance(mode, str) and mode.startswith("service:"):
        return mode.split(":", 1)[1]
    return name


def unescape(text: str) -> str:
    """What the container gets for a command string Compose does not interpolate (`$$` -> `$`)."""
    return text.replace("$$", "$")


def interpolations(text: str) -> list[re.Match[str]]:
    return list(_INTERPOLATION.finditer(text.replace("$$", "")))


def interpolate_defaults(text: str) -> str:
    """`text` as Compose resolves it in an empty environment: every `${NAME:-default}` -> default."""

    def replace(match: re.Match[str]) -> str:
        assert match.group("op") in (":-", "-"), f"{match.group(0)} has no default"
        return match.group("arg")

    return _INTERPOLATION.sub(replace, text)


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool
    kind: str  # "bind" or "volume"


def mounts(service: dict[str, Any]) -> list[Mount]:
    found = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            parts = entry.split(":")
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        else:
            source, target = entry["source"], entry["target"]
            read_only = bool(entry.get("read_only", False))
            kind = entry["type"]
        found.append(Mount(source=source, target=target, read_only=read_only, kind=kind))
    return found


def secret_targets(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> top-level secret name, with Compose's default of /run/secrets/NAME."""
    targets = {}
    for entry in service.get("secrets", []):
        if isinstance(entry, str):
            targets[f"/run/secrets/{entry}"] = entry
        else:
            target = entry.get("target", entry["source"])
            path = target if target.startswith("/") else f"/run/secrets/{target}"
            targets[path] = entry["source"]
    return targets


def settings_env_names() -> frozenset[str]:
    """Every environment variable remediator/settings.py reads, found in its source.

    `env.raw|text|integer|number|choice|names("NAME", ...)` reads NAME; `read_secret(environ, "NAME")`
    reads NAME and NAME_FILE.
    """
    tree = ast.parse(SETTINGS_SOURCE.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        literal_args = [
            a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
        ]
        if (
            isinstance(function, ast.Attribute)
            and isinstance(function.value, ast.Name)
            and function.value.id == "env"
            and function.attr in _ENV_READERS
            and literal_args
        ):
            names.add(literal_args[0])
        elif isinstance(function, ast.Name) and function.id in _SECRET_SOURCE_READERS and literal_args:
            names.update({literal_args[0], f"{literal_args[0]}_FILE"})
    return frozenset(names)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_instructions() -> list[Instruction]:
    """The Dockerfile's instructions, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    instructions = []
    for text in logical:
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    return instructions


def copy_sources_and_targets(instruction: Instruction) -> tuple[list[str], str]:
    parts = [part for part in shlex.split(instruction.arguments) if not part.startswith("--")]
    return parts[:-1], parts[-1]


def dockerignore_patterns() -> list[tuple[bool, str]]:
    """(is an exception, pattern) for each rule of .dockerignore, in order."""
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        negated = stripped.startswith("!")
        rules.append((negated, stripped.lstrip("!").strip("/")))
    return rules


def in_build_context(path: str) -> bool:
    """Whether .dockerignore lets `path` (relative to the repository) into the build context.

    Docker's rules: the last rule that matches wins, and a rule that matches a folder matches
    everything under it. `**` matches any number of folders.
    """
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    included = True
    for negated, pattern in dockerignore_patterns():
        if any(_matches(pattern, prefix) for prefix in prefixes):
            included = negated
    return included


def _matches(pattern: str, path: str) -> bool:
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            regex += ".*"
            index += 2
        elif pattern[index] == "*":
            regex += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            regex += "[^/]"
            index += 1
        else:
            regex += re.escape(pattern[index])
            index += 1
    return re.fullmatch(regex, path) is not None
