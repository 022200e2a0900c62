"""Prometheus metrics of the API and the ASGI middleware that records them (and catches real bugs).

Labels use the route template (``/v1/leaderboards/{board}/entries``), never the raw path, so cardinality
stays bounded. With several uvicorn workers, ``server.run`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
temporary directory before the workers start, and /metrics aggregates every worker's files.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from query_api import problems

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "leaderboard_api_requests_total",
    "HTTP requests answered, by route template.",
    ["route", "method", "status"],
)
DURATION = Histogram(
    "leaderboard_api_request_duration_seconds",
    "Time to answer an HTTP request, by route template (SSE streams excluded).",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
SSE_CLIENTS = Gauge(
    "leaderboard_api_sse_clients", "Server-sent-event streams open now.", multiprocess_mode="livesum"
)
SSE_EVENTS = Counter("leaderboard_api_sse_events_total", "Server-sent events sent (updates, not heartbeats).")
SSE_POLLERS = Gauge(
    "leaderboard_api_sse_pollers",
    "Shared Redis pollers (one per board, period and limit).",
    multiprocess_mode="livesum",
)
REFUSED = Counter(
    "leaderboard_api_refused_total",
    "Requests or connections refused by a limit (reason: total, client, header_bytes, header_timeout,"
    " body_bytes).",
    ["reason"],
)
SNAPSHOT_LOOKUPS = Counter(
    "leaderboard_api_snapshot_lookups_total",
    "Closed-period look-ups of ended periods absent from Redis (result: hit, miss, cached_miss).",
    ["result"],
)
UNMATCHED = "unmatched"


def exposition() -> tuple[bytes, str]:
    """The /metrics body: every worker's metrics in multiprocess mode, else this process's registry."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class Observe:
    """Pure ASGI (no BaseHTTPMiddleware overhead): metrics per route template, and a catch-all.

    An exception that escapes a handler is a bug: it is logged with its traceback and the client gets a
    problem 500 (if nothing was sent yet) instead of a bare connection reset.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], Any] = {}
        self._durations: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error", extra={"path": scope.get("path"), "method": scope.get("method")})
            status = 500
            if not started:
                payload = problems.internal_error_body(scope.get("path", ""))
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", problems.MEDIA_TYPE.encode()),
                            (b"content-length", str(len(payload)).encode()),
                            (b"cache-control", b"no-store"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": payload})
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            key = (template, scope.get("method", ""), status)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = REQUESTS.labels(template, key[1], str(status))
            child.inc()
            if not template.endswith("/stream"):
                hist = self._durations.get(template)
                if hist is None:
                    hist = self._durations[template] = DURATION.labels(template)
                hist.observe(time.perf_counter() - start)
