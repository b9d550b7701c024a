"""One router per service: a reverse proxy on its own 127.0.0.1 port that splits requests by traffic.

The split is a table of 100 slots, one per percent, each naming the revision that percent goes to;
a request picks a slot with one call to `random()`. A new split replaces the whole table at once, so
a request already routed finishes on its revision and the next one uses the new split. Requests and
responses keep method, path, query, status and headers (minus hop-by-hop headers); small bodies are
passed whole, large or unsized ones are streamed.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

logger = logging.getLogger(__name__)

SLOTS = 100
# Bodies up to this size are read whole: cheaper than streaming, and the usual case.
WHOLE_BODY_LIMIT = 256 * 1024
STREAM_CHUNK = 64 * 1024
SHUTDOWN_TIMEOUT_S = 5.0

_HOP_BY_HOP = frozenset(
    istr(name)
    for name in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
    )
)
_CONTENT_LENGTH = istr("Content-Length")
_X_FORWARDED_FOR = istr("X-Forwarded-For")
_X_FORWARDED_PROTO = istr("X-Forwarded-Proto")


@dataclass(frozen=True, slots=True)
class Route:
    """`percent` of the service's requests go to `revision`, listening on `port`."""

    revision: str
    port: int
    percent: int
    # Cloud Run's request timeout for the revision (template.timeout).
    timeout_s: float = 300.0


@dataclass(frozen=True, slots=True)
class _Upstream:
    revision: str
    base: str
    timeout: aiohttp.ClientTimeout


def _error(status: int, message: str, google_status: str) -> web.Response:
    body = json.dumps({"error": {"code": status, "message": message, "status": google_status}})
    return web.Response(status=status, text=body, content_type="application/json")


def _forward_headers(headers: CIMultiDictProxy[str], remote: str | None) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    connection_tokens: frozenset[str] = frozenset()
    for name, value in headers.items():
        if name in _HOP_BY_HOP:
            if name == "Connection":
                connection_tokens = frozenset(istr(token.strip()) for token in value.split(","))
            continue
        out.add(name, value)
    for token in connection_tokens:
        out.popall(token, None)
    if remote:
        previous = out.get(_X_FORWARDED_FOR)
        out[_X_FORWARDED_FOR] = f"{previous}, {remote}" if previous else remote
        out.setdefault(_X_FORWARDED_PROTO, "http")
    return out


def _response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name in _HOP_BY_HOP or name == _CONTENT_LENGTH:
            continue
        out.add(name, value)
    return out


# Called once per request a revision answered: (revision, HTTP status, seconds it took).
RequestObserver = Callable[[str, int, float], None]


class ServiceRouter:
    def __init__(
        self,
        *,
        service: str,
        host: str,
        session: aiohttp.ClientSession,
        on_request: RequestObserver | None = None,
    ) -> None:
        self.service = service
        self.host = host
        self._session = session
        # Cloud Run's front end sees every request: the platform metrics count them here.
        self._on_request = on_request
        self._table: tuple[_Upstream, ...] = ()
        self._runner: web.ServerRunner | None = None
        self.port = 0

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, 0))
            self.port = int(sock.getsockname()[1])
            server = web.Server(self._handle, access_log=None)
            self._runner = web.ServerRunner(
                server, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
            )
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()
        except BaseException:
            sock.close()
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            raise
        logger.info("router started", extra={"service": self.service, "uri": self.uri})

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def set_routes(self, routes: Sequence[Route]) -> None:
        """Replace the split. Percents are shares (normally summing to 100); none: every request gets 503."""
        live = [route for route in routes if route.percent > 0]
        if not live:
            self._table = ()
            return
        total = sum(route.percent for route in live)
        # Largest remainder: each route gets its share of the 100 slots, rounding fairly.
        exact = [route.percent * SLOTS / total for route in live]
        slots = [int(share) for share in exact]
        by_remainder = sorted(range(len(live)), key=lambda i: exact[i] - slots[i], reverse=True)
        for i in by_remainder[: SLOTS - sum(slots)]:
            slots[i] += 1
        table: list[_Upstream] = []
        for route, count in zip(live, slots, strict=True):
            upstream = _Upstream(
                revision=route.revision,
                base=f"http://{self.host}:{route.port}",
                timeout=aiohttp.ClientTimeout(total=route.timeout_s, sock_connect=5.0),
            )
            table.extend([upstream] * count)
        # Interleave so that a short burst of requests already follows the split.
        random.Random(0).shuffle(table)
        self._table = tuple(table)

    def split(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for upstream in self._table:
            counts[upstream.revision] = counts.get(upstream.revision, 0) + 1
        return counts

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        table = self._table
        if not table:
            # Never reaches a revision: Cloud Run's request_count leaves such requests out too.
            return _error(
                503, f"Service '{self.service}' has no ready revision to serve the request", "UNAVAILABLE"
            )
        upstream = table[int(random.random() * SLOTS)]
        started = time.monotonic()
        response = await self._forward(request, upstream)
        if self._on_request is not None:
            self._on_request(upstream.revision, response.status, time.monotonic() - started)
        return response

    async def _forward(self, request: web.BaseRequest, upstream: _Upstream) -> web.StreamResponse:
        headers = _forward_headers(request.headers, request.remote)
        length = request.content_length
        data: bytes | aiohttp.StreamReader | None
        if not request.body_exists:
            data = None
        elif length is not None and length <= WHOLE_BODY_LIMIT:
            data = await request.read()
        else:
            data = request.content
        url = URL(upstream.base + request.raw_path, encoded=True)
        try:
            async with self._session.request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=upstream.timeout,
            ) as response:
                out_headers = _response_headers(response.headers)
                size = response.content_length
                if size is not None and size <= WHOLE_BODY_LIMIT:
                    body = await response.read()
                    return web.Response(
                        status=response.status, reason=response.reason, headers=out_headers, body=body
                    )
                stream = web.StreamResponse(
                    status=response.status, reason=response.reason, headers=out_headers
                )
                if size is not None:
                    stream.content_length = size
                await stream.prepare(request)
                try:
                    async for chunk in response.content.iter_chunked(STREAM_CHUNK):
                        await stream.write(chunk)
                    await stream.write_eof()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    # The status line is gone already: all that is left is to cut the response short.
                    logger.warning(
                        "upstream response broke off",
                        extra={"service": self.service, "revision": upstream.revision, "error": repr(exc)},
                    )
                    if request.transport is not None:
                        request.transport.close()
                return stream
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            logger.warning(
                "upstream request failed",
                extra={"service": self.service, "revision": upstream.revision, "error": repr(exc)},
            )
            return _error(
                503,
                f"Revision '{upstream.revision}' of service '{self.service}' did not answer",
                "UNAVAILABLE",
            )
