"""Pub/Sub push deliveries: the envelope, and the OIDC token that proves Pub/Sub sent it.

What a push subscription POSTs (https://cloud.google.com/pubsub/docs/push, "Receive messages"): a JSON
body `{"message": {"data": <base64>, "attributes": {...}, "messageId": ..., "publishTime": ...},
"subscription": "projects/P/subscriptions/S"}` (with `message_id`/`publish_time` spelled both ways).
Pub/Sub counts 102, 200, 201, 202 and 204 as an acknowledgement; any other answer is a negative one
and the message is delivered again, with backoff, until it expires or a dead-letter topic takes it.

Authentication (https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions): with a service
account on the subscription, every push carries `Authorization: Bearer <JWT>`, a Google-signed OpenID
Connect ID token whose `aud` is the subscription's audience (the push endpoint's URL unless set), `iss`
is `https://accounts.google.com` (or `accounts.google.com`), and `email` is the service account with
`email_verified` true. The token is checked with google-auth's `id_token.verify_token` (signature against
Google's published keys, `exp`, `iat`, `aud`); issuer, email and email_verified are checked here.

Google's keys are fetched with aiohttp and kept for their `Cache-Control: max-age` (bounded), not by
google-auth's synchronous transport: that would block the event loop and fetch them on every push. A
token signed by a key the cache does not know makes one early refresh (Google rotates keys), at most
every `REFRESH_FLOOR_SECONDS`, so forged key ids cannot make Remediator hammer Google.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp import web
from google.auth import exceptions as google_exceptions
from google.auth import transport
from google.oauth2 import id_token
from pydantic import BaseModel, ConfigDict, ValidationError

from analyzer import keys
from analyzer.exceptions import DependencyUnavailable, Forbidden, PayloadInvalid, Unauthorized

log = logging.getLogger(__name__)

# Where Google publishes the keys of the ID tokens it signs, as {key id: PEM certificate}.
GOOGLE_OAUTH2_CERTS_URL: Final = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS: Final = frozenset({"accounts.google.com", "https://accounts.google.com"})
# Tolerated clock difference between Google and this host for `iat` and `exp`.
CLOCK_SKEW_SECONDS: Final = 10
# How long fetched keys are kept when the answer names no max-age, and the longest ever.
DEFAULT_CERTS_TTL_SECONDS: Final = 3600.0
MAX_CERTS_TTL_SECONDS: Final = 24 * 3600.0
# The keys are fetched at most this often, whatever the key ids, failures or max-age.
REFRESH_FLOOR_SECONDS: Final = 30.0
CERTS_TIMEOUT_SECONDS: Final = 5.0
_MAX_AGE = re.compile(r"max-age=(\d+)")


@dataclass(frozen=True, kw_only=True)
class PushAuthConfig:
    """Who may push: tokens for `audience`, from `service_account` (CLOUD_MONITORING_PUBSUB_*)."""

    audience: str
    service_account: str
    certs_url: str = GOOGLE_OAUTH2_CERTS_URL


@dataclass(frozen=True, kw_only=True)
class PushMessage:
    """One pushed message. `data` is None when the message carried only attributes."""

    data: bytes | None
    message_id: str | None
    publish_time: str | None
    attributes: dict[str, str]
    subscription: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    data: str | None = None
    attributes: dict[str, str] | None = None
    messageId: str | None = None  # Pub/Sub's field names
    message_id: str | None = None
    publishTime: str | None = None
    publish_time: str | None = None


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    message: _Message
    subscription: str


def parse_push(body: bytes) -> PushMessage:
    """The message of a push delivery; `PayloadInvalid` naming the field when the body is not one.

    Pub/Sub itself always sends this shape with standard, padded base64: anything else did not come
    from a push subscription (or the subscription unwraps payloads, which this endpoint does not take).
    """
    try:
        envelope = _Envelope.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "json_invalid":
            raise PayloadInvalid(f"malformed JSON: {error['msg']}", field="body") from None
        if error["type"] == "model_type" and not error["loc"]:
            raise PayloadInvalid("body must be a JSON object", field="body") from None
        location = ".".join(str(part) for part in error["loc"])
        problem = f"{location}: {error['msg']}"
        if location == "message" and error["type"] == "missing" and b'"incident"' in body:
            problem += (
                " (this looks like an unwrapped Cloud Monitoring notification: turn payload unwrapping "
                "off on the push subscription, or post it to /api/v1/cloud-monitoring)"
            )
        raise PayloadInvalid(problem, field=location) from None
    message = envelope.message
    data = None
    if message.data is not None:
        try:
            data = binascii.a2b_base64(message.data, strict_mode=True)
        except ValueError as exc:  # binascii.Error, or a character outside ASCII
            raise PayloadInvalid(
                f"message.data is not standard base64 ({exc})", field="message.data"
            ) from None
    return PushMessage(
        data=data,
        message_id=message.messageId or message.message_id,
        publish_time=message.publishTime or message.publish_time,
        attributes=message.attributes or {},
        subscription=envelope.subscription,
    )


class _CertsResponse(transport.Response):
    def __init__(self, body: bytes) -> None:
        self._body = body

    @property
    def status(self) -> int:
        return 200

    @property
    def headers(self) -> Mapping[str, str]:
        return {"content-type": "application/json"}

    @property
    def data(self) -> bytes:
        return self._body


class _FetchedCerts(transport.Request):
    """google-auth's transport, answering its certificate request with the keys already fetched."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __call__(
        self,
        url: Any,
        method: Any = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> Any:
        return _CertsResponse(self._body)


@dataclass
class _Certs:
    body: bytes
    key_ids: frozenset[str]
    expires_at: float


class GoogleCerts:
    """Google's token-signing keys, fetched asynchronously and cached."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.session = session
        self.clock = clock
        self._certs: _Certs | None = None
        # When the last fetch was tried: at most one try per REFRESH_FLOOR_SECONDS, so neither forged
        # key ids nor an outage at Google make every push wait on a fetch.
        self._tried_at: float | None = None
        self._lock = asyncio.Lock()

    async def get(self, key_id: str | None) -> bytes:
        """The keys as google-auth reads them; refreshed when expired or missing `key_id`.

        While fetching fails, keys already held keep serving (Google rotates them slowly, so they
        still verify most tokens); with none held, `DependencyUnavailable` (503: Pub/Sub retries).
        """
        async with self._lock:
            certs, now = self._certs, self.clock()
            tried_recently = self._tried_at is not None and now - self._tried_at < REFRESH_FLOOR_SECONDS
            if certs is not None:
                current = now < certs.expires_at and (key_id is None or key_id in certs.key_ids)
                if current or tried_recently:
                    return certs.body
            elif tried_recently:
                raise DependencyUnavailable("Google's token keys could not be fetched; retry later")
            self._tried_at = now
            try:
                self._certs = await self._fetch(now)
            except DependencyUnavailable:
                if certs is None:
                    raise
                log.warning("using cached token keys: fetching new ones failed", extra={"url": self.url})
                return certs.body
            return self._certs.body

    async def _fetch(self, now: float) -> _Certs:
        try:
            async with self.session.get(
                self.url, timeout=aiohttp.ClientTimeout(total=CERTS_TIMEOUT_SECONDS)
            ) as response:
                body = await response.read()
                status = response.status
                cache_control = response.headers.get("Cache-Control", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "fetching Google's token keys failed",
                extra={"url": self.url, "error": f"{type(exc).__name__}: {exc}"[:300]},
            )
            raise DependencyUnavailable("Google's token keys could not be fetched; retry later") from None
        if status != 200:
            log.warning("fetching Google's token keys failed", extra={"url": self.url, "status": status})
            raise DependencyUnavailable(
                f"Google's token keys could not be fetched (HTTP {status}); retry later"
            )
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        # The v1 form, {key id: PEM certificate}; google-auth's JWK branch needs PyJWT, not installed.
        if (
            not isinstance(document, dict)
            or not document
            or not all(isinstance(key, str) and isinstance(value, str) for key, value in document.items())
        ):
            log.warning("Google's token keys are not a {key id: certificate} object", extra={"url": self.url})
            raise DependencyUnavailable("Google's token keys were not understood; retry later")
        match = _MAX_AGE.search(cache_control)
        ttl = float(match[1]) if match else DEFAULT_CERTS_TTL_SECONDS
        ttl = min(max(ttl, REFRESH_FLOOR_SECONDS), MAX_CERTS_TTL_SECONDS)
        return _Certs(body=body, key_ids=frozenset(document), expires_at=now + ttl)


def _key_id(token: str) -> str | None:
    """The `kid` of a JWT's header, read unverified (it only picks the key to verify with)."""
    header = token.split(".", 1)[0]
    try:
        parsed = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, binascii.Error):
        raise Unauthorized("the bearer token is not a JWT") from None
    if not isinstance(parsed, dict):
        raise Unauthorized("the bearer token is not a JWT")
    kid = parsed.get("kid")
    return kid if isinstance(kid, str) else None


def _token_problem(message: str) -> str:
    """What to tell the sender about a token google-auth refused, without echoing our settings."""
    lowered = message.lower()
    if "expired" in lowered:
        return "the OIDC token has expired"
    if "audience" in lowered:
        return "the OIDC token's audience is not this endpoint's (CLOUD_MONITORING_PUBSUB_AUDIENCE)"
    if "too early" in lowered or "used too early" in lowered:
        return "the OIDC token is not valid yet (iat in the future)"
    return "the OIDC token's signature or form is invalid"


class PushTokenVerifier:
    """Checks the OIDC token of a push delivery against `PushAuthConfig`."""

    def __init__(self, config: PushAuthConfig, certs: GoogleCerts) -> None:
        self.config = config
        self.certs = certs

    async def verify(self, token: str | None) -> Mapping[str, Any]:
        """The token's claims; `Unauthorized` (401) or `Forbidden` (403) naming what is wrong."""
        if not token:
            raise Unauthorized("Pub/Sub pushes need an OIDC token: set a service account on the subscription")
        if token.count(".") != 2:
            raise Unauthorized("the bearer token is not a JWT")
        body = await self.certs.get(_key_id(token))
        try:
            claims = id_token.verify_token(
                token,
                _FetchedCerts(body),
                audience=self.config.audience,
                certs_url=self.config.certs_url,
                clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
            )
        # TypeError: a claim of the wrong type (`exp` as a string) in a token google-auth decoded.
        except (google_exceptions.GoogleAuthError, ValueError, TypeError) as exc:
            log.warning("Pub/Sub push token refused", extra={"error": str(exc)[:300]})
            raise Unauthorized(_token_problem(str(exc))) from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise Unauthorized("the OIDC token was not issued by Google (iss)")
        if claims.get("email_verified") is not True:
            raise Forbidden("the OIDC token's email is not verified (email_verified)")
        if claims.get("email") != self.config.service_account:
            raise Forbidden(
                "the OIDC token is not the configured push service account's "
                "(CLOUD_MONITORING_PUBSUB_SERVICE_ACCOUNT)"
            )
        return claims


def push_verifier_context(config: PushAuthConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx owning the HTTP session that fetches Google's keys."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[keys.PUSH_VERIFIER] = PushTokenVerifier(config, GoogleCerts(config.certs_url, session))
            yield

    return run
