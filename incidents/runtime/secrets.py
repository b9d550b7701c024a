"""Secrets (tokens) that must never reach a log line, a repr or an error message."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value:
            raise ValueError("a secret cannot be empty")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def matches(self, candidate: str) -> bool:
        """Constant-time comparison, so response timing leaks nothing about the token."""
        return hmac.compare_digest(self._value.encode(), candidate.encode())

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and self.matches(other._value)

    def __hash__(self) -> int:
        return hash(Secret)


def read_secret(environ: Mapping[str, str], name: str) -> Secret | None:
    """`NAME`, or the contents of the file named by `NAME_FILE` (trailing newline stripped)."""
    value = environ.get(name)
    path = environ.get(f"{name}_FILE")
    if value and path:
        raise ValueError(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"{name}_FILE={path} cannot be read: {exc.strerror}") from None
        if not value:
            raise ValueError(f"{name}_FILE={path} is empty")
    return Secret(value) if value else None
