"""The consumer's HTTP endpoint (/metrics, /healthz, /readyz) and the readiness it reports."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest


class Readiness:
    """The member's readiness, owned in one place so /readyz and the ready gauge never disagree.

    Several parts report a problem under their own name (the batch loop, the watchdog thread, recovery,
    start-up); the member is ready when none has one. Thread-safe: the watchdog sets its part while the
    batch loop is blocked inside a call.
    """

    def __init__(self, gauge: Gauge, starting: str = "starting") -> None:
        self._gauge = gauge
        self._lock = threading.Lock()
        self._problems: dict[str, str] = {"start": starting}
        gauge.set(0)

    def set(self, source: str, problem: str | None) -> None:
        """Report (or clear, with None) the problem ``source`` sees."""
        with self._lock:
            if problem is None:
                self._problems.pop(source, None)
            else:
                self._problems[source] = problem
            self._gauge.set(0 if self._problems else 1)

    def problem(self, source: str | None = None) -> str | None:
        """Why the member is not ready (every part's reason, joined), or None when it is."""
        with self._lock:
            if source is not None:
                return self._problems.get(source)
            return "; ".join(self._problems.values()) or None


class HealthServer:
    """Serves in a daemon thread; ``ready()`` is asked on every /readyz."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, ready: Callable[[], str | None]
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._send(200, b'{"status":"ok"}', "application/json")
                elif self.path == "/readyz":
                    problem = outer.ready()
                    if problem is None:
                        self._send(200, b'{"status":"ready"}', "application/json")
                    else:
                        body = orjson.dumps({"status": "not ready", "detail": problem})
                        self._send(503, body, "application/json")
                else:
                    self._send(404, b'{"detail":"try /metrics, /healthz or /readyz"}', "application/json")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.ready = ready
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
