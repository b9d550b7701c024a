"""Real Prometheus/Alertmanager processes and small HTTP servers standing in for their peers.

Everything listens on 127.0.0.1 and is stopped by whoever started it: `BackgroundProcess.stop()`
terminates, waits, and kills if it must; `LocalHTTPServer.close()` shuts the server down.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 5.0


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def http_get_json(url: str) -> Any:
    status, body = http_get(url)
    assert status == 200, f"GET {url}: {status} {body[:500]!r}"
    return json.loads(body)


def http_post_json(url: str, document: Any) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        return int(response.status)


def wait_for(what: str, probe: Callable[[], T | None], *, timeout_s: float, interval_s: float = 0.2) -> T:
    """Call `probe` until it returns something other than None; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


class BackgroundProcess:
    """A child process whose output goes to a log file, readable when something goes wrong."""

    def __init__(self, argv: list[str], *, log_path: Path, cwd: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        with log_path.open("wb") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)

    @property
    def exit_code(self) -> int | None:
        return self._process.poll()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_until_ready(self, url: str, *, timeout_s: float) -> bool:
        """True once `url` answers 200; False if the process exits first."""

        def probe() -> bool | None:
            if self.exit_code is not None:
                return False
            try:
                status, _ = http_get(url)
            except OSError:
                return None
            return True if status == 200 else None

        return wait_for(f"{url} ({self.argv[0]})", probe, timeout_s=timeout_s, interval_s=0.1)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=STOP_TIMEOUT_S)


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float

    def json(self) -> Any:
        return json.loads(self.body)


class LocalHTTPServer:
    """Answers GETs from `routes` (path -> () -> (content type, body)) and records every POST."""

    def __init__(self, routes: dict[str, Callable[[], tuple[str, bytes]]] | None = None) -> None:
        self._routes = dict(routes or {})
        self._lock = threading.Lock()
        self._posts: list[ReceivedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def posts(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._posts)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=STOP_TIMEOUT_S)

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._posts.append(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = server._routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                content_type, body = route()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server._record(
                    ReceivedRequest(
                        path=self.path,
                        headers={name.lower(): value for name, value in self.headers.items()},
                        body=body,
                        received_at=time.monotonic(),
                    )
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests assert on what arrived, not on access logs."""

        return Handler
