"""Integration tests use the real Prometheus, Alertmanager and PostgreSQL.

Under CI=true a missing part is a failure, never a skip: a suite that silently skips its integration
tests would pass while proving nothing. On a developer machine without the part it is a skip that
says how to get it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from remediator.binaries import INSTALL_HINTS, find_binary


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_real_part(what: str, hint: str) -> None:
    message = f"{what} is not available: {hint}"
    if running_in_ci():
        pytest.fail(f"{message} (CI=true: a missing real part is a failure)", pytrace=False)
    pytest.skip(message)


def binary_or_missing(name: str) -> Path:
    found = find_binary(name)
    if found is None:
        missing_real_part(name, INSTALL_HINTS.get(name, "install it"))
        raise AssertionError("unreachable")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
