"""The Prometheus source: what a failed request says, and requests a young revision served before its
first sample."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from collector import PrometheusSource, SourceFailed
from tests.support.real_parts import free_port


async def test_a_refused_connection_names_the_server_not_the_encoded_query() -> None:
    source = PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    try:
        with pytest.raises(SourceFailed) as failed:
            await source.query('sum(rate(http_server_request_duration_seconds_count{service="a"}[30s]))')
    finally:
        source.close()
    message = failed.value.message
    assert message.startswith("prometheus: cannot connect to http://127.0.0.1:")
    assert message.endswith("connection refused")
    assert "%28" not in message and "query=" not in message


async def test_a_silent_server_is_a_timeout_in_words() -> None:
    release = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await release.wait()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    source = PrometheusSource(f"http://127.0.0.1:{port}", timeout=0.3)
    try:
        with pytest.raises(SourceFailed, match=r"http://127.0.0.1:\d+ did not answer within 0.3s$"):
            await source.query("up")
    finally:
        source.close()
        release.set()
        for writer in held:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()


def _vector(value: float, revision: str | None = None) -> list[dict[str, Any]]:
    labels = {"revision": revision} if revision else {}
    return [{"metric": labels, "value": [0, str(value)]}]


async def test_the_serving_revisions_figures_count_requests_before_their_first_sample() -> None:
    """rate() saw 6 of the 60 s window's requests; the counters (which started at zero when the
    revision did) say 600 were served, 60 of them failed."""
    source = PrometheusSource("http://127.0.0.1:1", timeout=1.0)

    async def query(promql: str, *, at: datetime | None = None) -> list[dict[str, Any]]:
        if "offset" in promql:  # exact counts from the counters
            return _vector(60.0 if "5.." in promql else 600.0, "svc-00002-new")
        if promql.startswith("histogram_quantile"):
            return _vector(0.08)
        return _vector(0.01 if "5.." in promql else 0.1)

    source.query = query  # type: ignore[method-assign]
    try:
        figures = await source.revisions_window("svc", ["svc-00002-new"], at=datetime.now(UTC), window=60)
    finally:
        source.close()
    assert figures.request_rate_rps == 10.0
    assert figures.error_rate == pytest.approx(0.1)
