"""Injected Admin API failures: make the next N matching calls fail (429, 500, 503) or hang.

Rules are kept in the order they were added; a call uses up one count of the first rule that matches
its method and path. Only `/v2/projects/...` (the Admin API) is affected, never logging, routers or
service discovery.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from demo_apps.cloudrun.exceptions import ApiError, Internal, InvalidArgument, ResourceExhausted, Unavailable

MAX_HANG_S = 600.0
HTTP_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})


class FailureKind(StrEnum):
    TOO_MANY_REQUESTS = "429"
    INTERNAL = "500"
    UNAVAILABLE = "503"
    HANG = "hang"


_ERRORS: dict[FailureKind, tuple[type[ApiError], str]] = {
    FailureKind.TOO_MANY_REQUESTS: (ResourceExhausted, "Quota exceeded (injected by the emulator)"),
    FailureKind.INTERNAL: (Internal, "Internal error (injected by the emulator)"),
    FailureKind.UNAVAILABLE: (Unavailable, "The service is currently unavailable (injected by the emulator)"),
}


@dataclass(slots=True)
class FailureRule:
    id: int
    kind: FailureKind
    remaining: int
    hang_seconds: float = 0.0
    methods: frozenset[str] | None = None
    paths: tuple[str, ...] | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return self.paths is None or any(fragment in path for fragment in self.paths)

    def error(self) -> ApiError:
        cls, message = _ERRORS[self.kind]
        return cls(message)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": str(self.kind), "remaining": self.remaining}
        if self.kind is FailureKind.HANG:
            out["hang_seconds"] = self.hang_seconds
        if self.methods is not None:
            out["methods"] = sorted(self.methods)
        if self.paths is not None:
            out["paths"] = list(self.paths)
        return out


class FailurePlan:
    def __init__(self) -> None:
        self._rules: list[FailureRule] = []
        self._ids = itertools.count(1)

    def add(self, body: Any) -> FailureRule:
        rule = self._parse(body)
        self._rules.append(rule)
        return rule

    def take(self, method: str, path: str) -> FailureRule | None:
        for rule in self._rules:
            if rule.matches(method, path):
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rules.remove(rule)
                return rule
        return None

    def pending(self) -> list[FailureRule]:
        return list(self._rules)

    def clear(self) -> int:
        cleared = len(self._rules)
        self._rules.clear()
        return cleared

    def _parse(self, body: Any) -> FailureRule:
        if not isinstance(body, Mapping):
            raise InvalidArgument("failures: the body must be a JSON object")
        unknown = set(body) - {"count", "kind", "hang_seconds", "methods", "paths"}
        if unknown:
            raise InvalidArgument(f"failures: unknown fields {sorted(unknown)}")
        count = body.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise InvalidArgument("failures.count: must be a positive integer")
        try:
            kind = FailureKind(str(body.get("kind", "")))
        except ValueError:
            raise InvalidArgument(
                f"failures.kind: must be one of {', '.join(kind.value for kind in FailureKind)}"
            ) from None
        hang_seconds = 0.0
        if kind is FailureKind.HANG:
            value = body.get("hang_seconds")
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= MAX_HANG_S:
                raise InvalidArgument(
                    f"failures.hang_seconds: must be a number in (0, {MAX_HANG_S:g}] for hang"
                )
            hang_seconds = float(value)
        methods = body.get("methods")
        if methods is not None:
            if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
                raise InvalidArgument("failures.methods: must be a non-empty list of HTTP methods")
            methods = frozenset(m.upper() for m in methods)
            if not methods <= HTTP_METHODS:
                raise InvalidArgument(f"failures.methods: unknown methods {sorted(methods - HTTP_METHODS)}")
        paths = body.get("paths")
        if isinstance(paths, str):
            paths = [paths]
        if paths is not None:
            if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
                raise InvalidArgument("failures.paths: must be a non-empty list of path fragments")
            paths = tuple(paths)
        return FailureRule(
            id=next(self._ids),
            kind=kind,
            remaining=count,
            hang_seconds=hang_seconds,
            methods=methods,
            paths=paths,
        )
