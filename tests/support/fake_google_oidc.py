"""A stand-in for Google's ID-token issuer: a local RSA key signs tokens shaped like the ones Pub/Sub
attaches to pushes, and a local aiohttp server publishes its certificate the way
https://www.googleapis.com/oauth2/v1/certs does ({key id: PEM certificate}, with Cache-Control)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from tests.support.real_parts import free_port

PUSH_SERVICE_ACCOUNT = "pubsub-push@test-project.iam.gserviceaccount.com"
PUSH_AUDIENCE = "https://remediator.example/api/v1/cloud-monitoring/pubsub"
GOOGLE_ISSUER = "https://accounts.google.com"


@functools.cache
def _private_key(key_id: str) -> rsa.RSAPrivateKey:
    # One key per id for the whole run: generating RSA keys is the slow part of these tests.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class SigningKey:
    key_id: str

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        return _private_key(self.key_id)

    @functools.cached_property
    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @functools.cached_property
    def certificate_pem(self) -> str:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-google-oidc")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(self.private_key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class FakeGoogleOidc:
    """Publishes `published` keys' certificates; signs with any key it is given."""

    keys: dict[str, SigningKey] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    max_age: int | None = 3600
    fail_status: int | None = None
    requests: int = 0
    certs_url: str = ""

    def __post_init__(self) -> None:
        if not self.keys:
            self.add_key("key-1")

    def add_key(self, key_id: str, *, publish: bool = True) -> SigningKey:
        key = SigningKey(key_id)
        self.keys[key_id] = key
        if publish:
            self.published.append(key_id)
        return key

    def token(
        self,
        *,
        audience: str = PUSH_AUDIENCE,
        email: str = PUSH_SERVICE_ACCOUNT,
        email_verified: Any = True,
        issuer: str = GOOGLE_ISSUER,
        issued_at: float | None = None,
        lifetime: float = 3600,
        key_id: str = "key-1",
        **claims: Any,
    ) -> str:
        """An ID token as Pub/Sub sends it (https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions)."""
        iat = int(issued_at if issued_at is not None else time.time())
        payload = {
            "aud": audience,
            "azp": "1234567890",
            "email": email,
            "email_verified": email_verified,
            "exp": iat + int(lifetime),
            "iat": iat,
            "iss": issuer,
            "sub": "1234567890",
            **claims,
        }
        signer = crypt.RSASigner.from_string(self.keys[key_id].private_pem, key_id=key_id)
        return jwt.encode(signer, payload).decode()

    async def handle_certs(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="unavailable")
        document = {key_id: self.keys[key_id].certificate_pem for key_id in self.published}
        headers = {"Cache-Control": f"public, max-age={self.max_age}"} if self.max_age is not None else {}
        return web.Response(text=json.dumps(document), content_type="application/json", headers=headers)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/oauth2/v1/certs", self.handle_certs)
        return app


@contextlib.asynccontextmanager
async def serve_fake_google_oidc(fake: FakeGoogleOidc | None = None) -> AsyncIterator[FakeGoogleOidc]:
    """The issuer's certificates on 127.0.0.1, on the running loop."""
    fake = fake or FakeGoogleOidc()
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.certs_url = f"http://127.0.0.1:{port}/oauth2/v1/certs"
    try:
        yield fake
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def fake_google_oidc_in_thread() -> Iterator[FakeGoogleOidc]:
    """The same, on a loop of its own, for tests that are not async (a subprocess's certificates)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-google-oidc", daemon=True)
    thread.start()
    context = serve_fake_google_oidc()
    try:
        fake = asyncio.run_coroutine_threadsafe(context.__aenter__(), loop).result(10)
        try:
            yield fake
        finally:
            asyncio.run_coroutine_threadsafe(context.__aexit__(None, None, None), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
