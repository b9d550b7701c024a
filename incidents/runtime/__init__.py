"""What every Remediator process shares beyond the domain: JSON logging, secrets, the health,
readiness and metrics endpoints, and stopping background work within the shutdown budget.
Imported as `from incidents.runtime import ...`."""

from incidents.runtime.endpoints import liveness, metrics_exposition, readiness
from incidents.runtime.jsonlog import JsonFormatter, configure_logging
from incidents.runtime.secrets import Secret, read_secret
from incidents.runtime.shutdown import EarlyStops

__all__ = [
    "EarlyStops",
    "JsonFormatter",
    "Secret",
    "configure_logging",
    "liveness",
    "metrics_exposition",
    "read_secret",
    "readiness",
]
