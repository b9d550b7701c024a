"""Errors of the demo shop, and how each one becomes an HTTP answer.

    ShopError                        every error the shop raises on purpose
    ├── ConfigError                  a bad environment variable at start (names the variable)
    ├── TelemetryError               metrics export could not be set up (e.g. a missing extra)
    ├── BadRequest                   400: a bad parameter or body (names the parameter)
    │   ├── FaultParameterError      a bad /fault/enable query
    │   └── ScalingParameterError    a bad /_emulator/scaling body
    ├── NotFound                     404: an unknown catalog item or cart
    ├── CapacityRejected             no slot on any simulated instance
    │   ├── NoAvailableInstance      429: at max instances and the queue is full or too slow
    │   └── InstanceStartTimeout     503: still scaling out, but the request waited too long
    └── InjectedFault                an answer the fault injection asked for
        ├── InjectedServerError      500
        ├── InjectedTimeout          504
        └── WarmingUp                503: a revision that fails its first seconds (DEMO_WARMUP_ERRORS_S)

The error middleware turns each class into a JSON response through one table
(`middlewares.ERROR_STATUS`), so a handler only raises.
"""

from __future__ import annotations


class ShopError(Exception):
    """Root of every error the shop raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def payload(self) -> dict[str, object]:
        """The JSON body this error answers with."""
        return {"error": self.message}


class ConfigError(ShopError):
    """An environment variable has a value the shop cannot use."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class TelemetryError(ShopError):
    """A metrics exporter could not be set up."""


class BadRequest(ShopError):
    """A request parameter or body field is missing, unknown or out of range."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter

    def payload(self) -> dict[str, object]:
        return {"error": self.message, "parameter": self.parameter}


class FaultParameterError(BadRequest):
    """A /fault/enable query parameter is missing, unknown or out of range."""


class ScalingParameterError(BadRequest):
    """A /_emulator/scaling field is missing, unknown or out of range."""


class NotFound(ShopError):
    """The thing a request names does not exist."""


class CapacityRejected(ShopError):
    """No simulated instance could take the request in time."""

    def __init__(self, message: str, *, queued_for_s: float) -> None:
        super().__init__(message)
        self.queued_for_s = queued_for_s

    def payload(self) -> dict[str, object]:
        return {"error": self.message, "queued_ms": round(self.queued_for_s * 1000.0, 1)}


class NoAvailableInstance(CapacityRejected):
    """Every instance the bounds allow is busy and the request could not wait (Cloud Run's 429)."""


class InstanceStartTimeout(CapacityRejected):
    """New instances were still starting when the request ran out of queue time (Cloud Run's 503)."""


class InjectedFault(ShopError):
    """An error answer chosen by a runtime or baked-in fault."""

    def __init__(self, message: str, *, source: str) -> None:
        super().__init__(message)
        self.source = source

    def payload(self) -> dict[str, object]:
        return {"error": self.message}


class InjectedServerError(InjectedFault):
    """A 500 the fault injection asked for."""


class InjectedTimeout(InjectedFault):
    """A 504 after the request hung for the fault's latency."""


class WarmingUp(InjectedFault):
    """A 503 while a new revision warms up: caches cold, connections not yet open."""
