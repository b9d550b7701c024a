"""Finding the external programs the local stack runs (Prometheus, Alertmanager, promtool, ...)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from incidents import RemediatorError

# How to get each program on Debian; `make tools` unpacks the first two into .venv/bin.
INSTALL_HINTS: dict[str, str] = {
    "prometheus": "run `make tools`, or `sudo apt-get install prometheus`",
    "promtool": "run `make tools`, or `sudo apt-get install prometheus`",
    "prometheus-alertmanager": "run `make tools`, or `sudo apt-get install prometheus-alertmanager`",
    "amtool": "run `make tools`, or `sudo apt-get install prometheus-alertmanager`",
    "grafana-server": "install Grafana from https://grafana.com/grafana/download (Debian: the grafana "
    "package from Grafana's apt repository) or use `docker compose up`",
}


class MissingBinary(RemediatorError):
    def __init__(self, name: str) -> None:
        hint = INSTALL_HINTS.get(name, "install it and put it on PATH")
        super().__init__(f"{name} not found on PATH or in {Path(sys.prefix) / 'bin'}: {hint}")
        self.name = name


def find_binary(name: str) -> Path | None:
    """The program on PATH, else in this interpreter's venv `bin/` (where `make tools` puts it)."""
    found = shutil.which(name)
    if found:
        return Path(found)
    candidate = Path(sys.prefix) / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    return None


def require_binary(name: str) -> Path:
    found = find_binary(name)
    if found is None:
        raise MissingBinary(name)
    return found
