"""Errors of the collector.

RemediatorError (incidents.exceptions)
└── CollectorError
    └── SourceFailed      one evidence source failed; becomes a `gaps` entry, never a crash
"""

from __future__ import annotations

from incidents import RemediatorError


class CollectorError(RemediatorError):
    pass


class SourceFailed(CollectorError):
    def __init__(self, source: str, reason: str, *, service: str | None = None) -> None:
        super().__init__(f"{source}: {reason}", service=service)
        self.source = source
        self.reason = reason
