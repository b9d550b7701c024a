"""google.longrunning operations: what create, update and delete answer, and what clients poll."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from demo_apps.cloudrun.codec import as_any
from demo_apps.cloudrun.exceptions import ApiError, NotFound, operation_error

# Finished operations are forgotten oldest first beyond this many.
MAX_OPERATIONS = 1000


@dataclass(slots=True)
class Operation:
    name: str
    type_url: str
    metadata: dict[str, Any]
    done: bool = False
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "metadata": as_any(self.metadata, self.type_url),
            "done": self.done,
        }
        if self.response is not None:
            out["response"] = as_any(self.response, self.type_url)
        if self.error is not None:
            out["error"] = self.error
        return out


class OperationStore:
    def __init__(self, *, project: str, location: str) -> None:
        self._prefix = f"projects/{project}/locations/{location}/operations/"
        self._operations: OrderedDict[str, Operation] = OrderedDict()

    def start(self, *, type_url: str, metadata: Mapping[str, Any]) -> Operation:
        operation = Operation(
            name=self._prefix + str(uuid.uuid4()), type_url=type_url, metadata=dict(metadata)
        )
        self._operations[operation.name] = operation
        self._forget_old()
        return operation

    def succeed(self, operation: Operation, response: Mapping[str, Any]) -> None:
        operation.response = dict(response)
        operation.metadata = dict(response)
        self._finish(operation)

    def fail(self, operation: Operation, error: ApiError) -> None:
        operation.error = operation_error(error)
        self._finish(operation)

    def _finish(self, operation: Operation) -> None:
        operation.done = True
        operation.finished.set()

    def get(self, name: str) -> Operation:
        operation = self._operations.get(name)
        if operation is None:
            raise NotFound(f"Operation '{name}' was not found")
        return operation

    def list(self) -> list[Operation]:
        return list(self._operations.values())

    def delete(self, name: str) -> None:
        self.get(name)
        del self._operations[name]

    async def wait(self, name: str, timeout_s: float) -> Operation:
        operation = self.get(name)
        if not operation.done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(operation.finished.wait(), timeout_s)
        return operation

    def _forget_old(self) -> None:
        if len(self._operations) <= MAX_OPERATIONS:
            return
        for name in [name for name, op in self._operations.items() if op.done]:
            if len(self._operations) <= MAX_OPERATIONS:
                break
            del self._operations[name]
