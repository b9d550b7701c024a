"""Grafana annotations for action started and incident resolved/escalated (`POST /api/annotations`).

Best effort by design: a Grafana outage must never slow or block a remediation, so every failure is
logged and counted, never raised. aiohttp is used directly (not grafana-client, whose niquests
dependency replaces urllib3 process-wide under the Google clients).
"""

from __future__ import annotations

import logging
from datetime import datetime

import aiohttp

from actuator.config import GrafanaConfig
from actuator.metrics import ActuatorMetrics

log = logging.getLogger(__name__)


class GrafanaAnnotations:
    def __init__(
        self, session: aiohttp.ClientSession, config: GrafanaConfig, metrics: ActuatorMetrics
    ) -> None:
        self.session = session
        self.config = config
        self.metrics = metrics

    async def post(self, *, text: str, tags: list[str], at: datetime, incident_id: int | None = None) -> bool:
        headers = {"Content-Type": "application/json"}
        if self.config.token is not None:
            headers["Authorization"] = f"Bearer {self.config.token.reveal()}"
        body = {"time": int(at.timestamp() * 1000), "tags": ["remediator", *tags], "text": text}
        try:
            async with self.session.post(
                f"{self.config.url.rstrip('/')}/api/annotations",
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            ) as response:
                if response.status >= 300:
                    detail = (await response.text())[:200]
                    raise RuntimeError(f"HTTP {response.status}: {detail}")
        except Exception as exc:
            self.metrics.annotations.labels("error").inc()
            log.warning(
                "Grafana annotation failed; remediation continues",
                extra={"incident_id": incident_id, "error": f"{type(exc).__name__}: {exc}"[:300]},
            )
            return False
        self.metrics.annotations.labels("ok").inc()
        return True
