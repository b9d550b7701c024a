"""Google OAuth2 tokens on the Prometheus source, offline: a service-account key made here, its
`token_uri` at the Cloud Run emulator's JWT-bearer token endpoint, and queries to the emulator's
Managed-Prometheus-shaped API (which forwards to a fake Prometheus). No token, a refused token or
missing credentials is a named gap, never a healthy answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from analyzer.engines.rules import RulesEngine
from collector import (
    AuthenticationFailed,
    CollectorConfig,
    ContextBuilder,
    GoogleBearerAuth,
    MetricsProfile,
    PrometheusSource,
)
from collector.sources.auth import MONITORING_READ_SCOPE, wants_google_auth
from demo_apps.cloudrun.app import create_app
from demo_apps.cloudrun.config import EmulatorConfig
from demo_apps.cloudrun.keys import TOKENS_KEY
from demo_apps.cloudrun.oauth import TokenIssuer
from incidents import ActionType, AlertInfo
from remediator.localauth import write_service_account

ServerFactory = Callable[..., Awaitable[TestServer]]
VECTOR = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "20"]}]},
}


@dataclass
class Stack:
    url: str  # the Managed-Prometheus-shaped base URL
    tokens: TokenIssuer
    key_file: Path
    queries_seen: list[str]
    grants: list[str]


@pytest.fixture
async def stack(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    async def make(*, token_lifetime_s: int = 3600) -> Stack:
        seen: list[str] = []

        async def query(request: web.Request) -> web.Response:
            seen.append(request.query["query"])
            return web.json_response(VECTOR)

        prometheus_app = web.Application()
        prometheus_app.router.add_get("/api/v1/query", query)
        prometheus = await aiohttp_server(prometheus_app)
        emulator_app = create_app(
            EmulatorConfig(
                prometheus_url=str(prometheus.make_url("")).rstrip("/"), token_lifetime_s=token_lifetime_s
            )
        )
        grants: list[str] = []
        tokens = emulator_app[TOKENS_KEY]
        original_grant = tokens.grant

        def counting_grant(form: dict[str, str], **kwargs: Any) -> dict[str, Any]:
            answer = original_grant(form, **kwargs)
            grants.append(answer["access_token"])
            return answer

        tokens.grant = counting_grant  # type: ignore[method-assign]
        emulator = await aiohttp_server(emulator_app)
        base = str(emulator.make_url("")).rstrip("/")
        key = write_service_account(tmp_path / "sa.json", token_uri=f"{base}/token", project="local")
        return Stack(
            url=f"{base}/v1/projects/local/location/global/prometheus",
            tokens=tokens,
            key_file=key,
            queries_seen=seen,
            grants=grants,
        )

    return make


@pytest.fixture
def credentials_file(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    def use(path: Path) -> None:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
        monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)

    return use


def source_for(url: str, *, auth: str | None = "google", timeout: float = 3.0) -> PrometheusSource:
    config = CollectorConfig(prometheus_url=url, prometheus_auth=auth, query_timeout=timeout)
    return PrometheusSource.for_collector(config)


def test_google_auth_is_on_for_managed_prometheus_by_default_and_settable() -> None:
    gmp = "https://monitoring.googleapis.com/v1/projects/p/location/global/prometheus"
    assert wants_google_auth(gmp, None)
    assert not wants_google_auth("http://127.0.0.1:9090", None)
    assert wants_google_auth("http://127.0.0.1:8090/v1/projects/p/location/global/prometheus", "google")
    assert not wants_google_auth(gmp, "none")
    assert source_for(gmp, auth=None).auth is not None
    assert source_for("http://127.0.0.1:9090", auth=None).auth is None


async def test_queries_carry_a_token_from_the_service_account(
    stack: Callable[..., Awaitable[Stack]], credentials_file: Callable[[Path], None]
) -> None:
    running = await stack()
    credentials_file(running.key_file)
    source = source_for(running.url)
    try:
        result = await source.query("up")
        assert result == VECTOR["data"]["result"]  # type: ignore[index]
        # Several queries at once share one token: one grant, on the source's own thread pool.
        await asyncio.gather(*(source.query(f"q{i}") for i in range(8)))
    finally:
        source.close()
    assert len(running.grants) == 1
    assert running.queries_seen[0] == "up"
    assert source.auth is not None and source.auth.scopes == [MONITORING_READ_SCOPE]


async def test_without_a_token_the_api_refuses_and_the_source_names_the_gap(
    stack: Callable[..., Awaitable[Stack]],
) -> None:
    running = await stack()
    source = source_for(running.url, auth="none")
    try:
        with pytest.raises(AuthenticationFailed) as caught:
            await source.query("up")
    finally:
        source.close()
    assert caught.value.message.startswith("prometheus: authentication failed: HTTP Status Code 401")
    assert running.queries_seen == []  # nothing reached Prometheus


async def test_a_refused_token_is_a_gap_then_a_new_token_is_fetched(
    stack: Callable[..., Awaitable[Stack]], credentials_file: Callable[[Path], None]
) -> None:
    running = await stack()
    credentials_file(running.key_file)
    source = source_for(running.url)
    try:
        await source.query("up")
        running.tokens.revoke_all()  # the server no longer accepts the token the client holds
        with pytest.raises(AuthenticationFailed, match="authentication failed: HTTP Status Code 401"):
            await source.query("up")
        # The refused token is dropped: the next query gets a new one and goes through.
        assert await source.query("up")
    finally:
        source.close()
    assert len(running.grants) == 2


async def test_tokens_are_refreshed_before_they_expire(
    stack: Callable[..., Awaitable[Stack]], credentials_file: Callable[[Path], None]
) -> None:
    # google-auth treats a token as stale 3 min 45 s before its expiry: a 227 s token is good for
    # about 2 s on the client's side, while the server would accept it for 227 s.
    running = await stack(token_lifetime_s=227)
    credentials_file(running.key_file)
    source = source_for(running.url)
    try:
        await source.query("up")
        await source.query("up")
        assert len(running.grants) == 1
        await asyncio.sleep(2.5)
        await source.query("up")
    finally:
        source.close()
    assert len(running.grants) == 2
    # Every query went through: none was sent with a token about to lapse and refused.
    assert running.queries_seen == ["up", "up", "up"]


async def test_missing_credentials_are_an_authentication_gap(
    stack: Callable[..., Awaitable[Stack]], credentials_file: Callable[[Path], None], tmp_path: Path
) -> None:
    running = await stack()
    credentials_file(tmp_path / "no-such-key.json")
    source = source_for(running.url)
    try:
        with pytest.raises(AuthenticationFailed, match="authentication failed: DefaultCredentialsError"):
            await source.query("up")
    finally:
        source.close()
    assert running.grants == []


async def test_a_token_endpoint_that_refuses_the_grant_is_an_authentication_gap(
    aiohttp_server: ServerFactory,
    stack: Callable[..., Awaitable[Stack]],
    credentials_file: Callable[[Path], None],
) -> None:
    running = await stack()

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": "invalid_grant", "error_description": "account disabled"}, status=400
        )

    app = web.Application()
    app.router.add_post("/token", refuse)
    refuser = await aiohttp_server(app)
    key = write_service_account(
        running.key_file.with_name("refused.json"), token_uri=str(refuser.make_url("/token")), project="local"
    )
    credentials_file(key)
    source = source_for(running.url)
    try:
        with pytest.raises(AuthenticationFailed, match=r"RefreshError.*account disabled"):
            await source.query("up")
    finally:
        source.close()


async def test_an_authentication_failure_is_a_named_gap_in_the_context_never_healthy(
    stack: Callable[..., Awaitable[Stack]], credentials_file: Callable[[Path], None], tmp_path: Path
) -> None:
    running = await stack()
    credentials_file(tmp_path / "no-such-key.json")
    config = CollectorConfig(
        prometheus_url=running.url,
        prometheus_auth="google",
        metrics_profile=MetricsProfile.CLOUD_RUN,
        query_timeout=3.0,
    )
    now = datetime.now(UTC)
    alert = AlertInfo(
        name="HighErrorRate",
        status="firing",
        severity="critical",
        starts_at=now - timedelta(seconds=30),
        fingerprint="f",
        labels={"alertname": "HighErrorRate", "service": "shop"},
    )
    source = PrometheusSource.for_collector(config)
    try:
        builder = ContextBuilder(config, prometheus=source, cloud_run=None, logs=None)
        context = await builder.build_context(alert, recent_actions=[], now=now)
    finally:
        source.close()
    assert any(gap.startswith("prometheus: authentication failed:") for gap in context.gaps)
    assert context.metrics.request_rate_rps is None
    assert context.metrics.error_rate is None
    assert RulesEngine().decide_now(context).action is ActionType.INVESTIGATE


def test_invalidate_drops_the_held_token() -> None:
    class Held:
        token: str | None = "t"
        valid = True

    auth = GoogleBearerAuth(credentials_factory=lambda scopes: Held())
    assert auth.token() == "t"
    auth.invalidate()
    assert auth._credentials.token is None
    auth.close()
