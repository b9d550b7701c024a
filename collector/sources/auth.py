"""OAuth2 bearer tokens for Google Cloud Managed Service for Prometheus' query API.

Managed Prometheus answers PromQL at
`https://monitoring.googleapis.com/v1/projects/PROJECT/location/global/prometheus/api/v1/...` and, like
every Google API, wants an OAuth2 access token; reading needs the scope
`https://www.googleapis.com/auth/monitoring.read` (and the `monitoring.timeSeries.list` permission,
granted by roles/monitoring.viewer). The tokens come from application default credentials: the
service account of the Cloud Run service Remediator runs as, `GOOGLE_APPLICATION_CREDENTIALS`, or
`gcloud auth application-default login`.

prometheus-api-client talks through `requests`, so the token is attached by a requests auth hook on
the client's session. The hook runs on the thread that sends the query (the source's own pool); a
lock makes one thread refresh while the others wait, and google-auth counts a token as invalid some
minutes before it expires, so a query never leaves with a token about to lapse.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests

from collector.exceptions import SourceFailed

MONITORING_READ_SCOPE = "https://www.googleapis.com/auth/monitoring.read"
MANAGED_PROMETHEUS_HOST = "monitoring.googleapis.com"


class AuthenticationFailed(SourceFailed):
    """No token could be had, or the server refused the one sent."""

    def __init__(self, reason: str) -> None:
        super().__init__("prometheus", f"authentication failed: {reason}"[:300])


def wants_google_auth(url: str, setting: str | None) -> bool:
    """PROMETHEUS_AUTH: `google`, `none`, or unset (google for Managed Prometheus' host only)."""
    if setting is not None:
        return setting == "google"
    return (urlsplit(url).hostname or "").lower() == MANAGED_PROMETHEUS_HOST


def _default_credentials(scopes: list[str]) -> Any:
    import google.auth

    credentials, _project = google.auth.default(scopes=scopes)
    return credentials


class GoogleBearerAuth(requests.auth.AuthBase):
    """Adds `Authorization: Bearer <token>` from application default credentials to each request.

    Credentials are looked up on first use, not at start: a machine without them still starts, and
    every query then reports the missing credentials as an authentication gap.
    """

    def __init__(
        self,
        *,
        scopes: list[str] | None = None,
        timeout: float = 10.0,
        credentials_factory: Callable[[list[str]], Any] = _default_credentials,
    ) -> None:
        self.scopes = scopes or [MONITORING_READ_SCOPE]
        self.timeout = timeout
        self._credentials_factory = credentials_factory
        self._credentials: Any = None
        self._lock = threading.Lock()
        # The token endpoint gets its own session: never the one this hook is attached to.
        self._token_session = requests.Session()

    def token(self) -> str:
        import google.auth.exceptions
        import google.auth.transport.requests

        with self._lock:
            try:
                if self._credentials is None:
                    self._credentials = self._credentials_factory(self.scopes)
                if not self._credentials.valid:
                    request = google.auth.transport.requests.Request(session=self._token_session)
                    self._credentials.refresh(_with_timeout(request, self.timeout))
            except google.auth.exceptions.GoogleAuthError as exc:
                raise AuthenticationFailed(f"{type(exc).__name__}: {exc}") from exc
            except requests.RequestException as exc:
                raise AuthenticationFailed(f"token endpoint unreachable: {type(exc).__name__}") from exc
            token = self._credentials.token
            if not token:
                raise AuthenticationFailed("the credentials gave no access token")
            return str(token)

    def invalidate(self) -> None:
        """The server refused the token: fetch a new one before the next query."""
        with self._lock:
            if self._credentials is not None:
                self._credentials.token = None

    def close(self) -> None:
        self._token_session.close()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        return request


def _with_timeout(request: Any, timeout: float) -> Callable[..., Any]:
    """google-auth's Request with a default timeout for the token call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout)
        return request(*args, **kwargs)

    return call


def google_bearer_auth(url: str, setting: str | None, *, timeout: float) -> GoogleBearerAuth | None:
    return GoogleBearerAuth(timeout=timeout) if wants_google_auth(url, setting) else None
