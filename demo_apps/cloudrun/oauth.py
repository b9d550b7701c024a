"""A local OAuth2 token endpoint for service accounts, and the bearer-token check of the emulator's
Managed-Prometheus-shaped query API.

google-auth's service account credentials get an access token with the JWT-bearer grant (RFC 7523):
`POST token_uri` with the form fields `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and
`assertion=<a JWT signed with the account's key>` (claims `iss`, `scope`, `aud`, `iat`, `exp`), and
read `{"access_token", "expires_in", "token_type"}` back. A service-account JSON whose `token_uri`
points here makes the real client library do exactly that against the emulator.

The emulator checks the assertion's shape, audience, lifetime and scope, not its signature (it has
no way to know the key). It remembers the tokens it issued, for `lifetime_s`, and accepts no other:
no token, an unknown one, an expired or a revoked one gets 401 from the query API.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Scopes that allow reading metrics (monitoring.read, or broader ones that include it).
READ_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/monitoring.read",
        "https://www.googleapis.com/auth/monitoring",
        "https://www.googleapis.com/auth/cloud-platform",
    }
)
DEFAULT_TOKEN_LIFETIME_S = 3600
# google-auth always addresses the assertion to Google's token endpoint, whatever the key file's
# token_uri says (google/oauth2/service_account.py, `_make_authorization_grant_assertion`).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


class GrantRefused(Exception):
    """An OAuth2 error answer: `error` is one of RFC 6749's codes."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description

    def as_json(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def _claims(assertion: str) -> dict[str, Any]:
    parts = assertion.split(".")
    if len(parts) != 3 or not all(parts):
        raise GrantRefused("invalid_grant", "assertion is not a JWT (header.payload.signature)")
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except ValueError:
        raise GrantRefused("invalid_grant", "assertion payload is not base64url JSON") from None
    if not isinstance(claims, dict):
        raise GrantRefused("invalid_grant", "assertion payload is not a JSON object")
    return claims


@dataclass
class TokenIssuer:
    lifetime_s: int = DEFAULT_TOKEN_LIFETIME_S
    _tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (unix seconds)

    def grant(self, form: dict[str, str], *, token_uri: str, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        if form.get("grant_type") != JWT_BEARER_GRANT:
            raise GrantRefused("unsupported_grant_type", f"grant_type must be {JWT_BEARER_GRANT}")
        claims = _claims(form.get("assertion", ""))
        if not claims.get("iss"):
            raise GrantRefused("invalid_grant", "assertion has no iss (the service account's email)")
        if claims.get("aud") not in (token_uri, GOOGLE_TOKEN_AUDIENCE):
            raise GrantRefused(
                "invalid_grant", f"assertion aud must be {GOOGLE_TOKEN_AUDIENCE} or {token_uri}"
            )
        try:
            expires = float(claims["exp"])
            issued = float(claims["iat"])
        except (KeyError, TypeError, ValueError):
            raise GrantRefused("invalid_grant", "assertion needs numeric iat and exp") from None
        if expires <= now or issued > now + 300:
            raise GrantRefused("invalid_grant", "assertion is expired or not yet valid")
        scopes = set(str(claims.get("scope", "")).split())
        if not scopes & READ_SCOPES:
            raise GrantRefused("invalid_scope", "no scope allows reading metrics (monitoring.read)")
        token = "local." + secrets.token_urlsafe(24)
        self._tokens[token] = now + self.lifetime_s
        self._tokens = {t: expiry for t, expiry in self._tokens.items() if expiry > now}
        return {"access_token": token, "expires_in": self.lifetime_s, "token_type": "Bearer"}

    def accepts(self, authorization: str | None, *, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        expiry = self._tokens.get(token.strip())
        return expiry is not None and expiry > now

    def revoke_all(self) -> int:
        count = len(self._tokens)
        self._tokens.clear()
        return count
