"""Bounds on what one HTTP client can make the API server hold: header bytes and time, body, connections.

uvicorn's httptools protocol has no header-size limit (a 96 MB header was parsed in full, stalling every other
request), no deadline for a request's headers (slow-header connections stayed open for ever) and no limit per
client; its ``limit_concurrency`` answers ``text/plain``. :class:`LimitedHttpToolsProtocol` adds those at the
connection level, answering with problem documents; :class:`BodyLimit` (ASGI) refuses bodies over the limit
without buffering them. Idle keep-alive connections are uvicorn's own ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import http
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from leaderboard.settings import Settings
from query_api import metrics, problems

LINGER_S = 1.0
"""A refused connection stays half-closed this long (reads paused) so the client can read the answer."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int
    max_body_bytes: int
    header_timeout_s: float
    max_connections: int
    max_connections_per_client: int

    @classmethod
    def of(cls, config: Settings) -> Limits:
        return cls(
            max_header_bytes=config.api_max_header_bytes,
            max_body_bytes=config.api_max_body_bytes,
            header_timeout_s=float(config.api_header_timeout_s),
            max_connections=config.api_max_connections,
            max_connections_per_client=config.api_max_connections_per_client,
        )


def raw_problem(status: int, kind: str, detail: str, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 response (problem document, ``connection: close``) for the transport."""
    body = problems.body(status, kind, detail)
    head = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        f"content-type: {problems.MEDIA_TYPE}",
        f"content-length: {len(body)}",
        "cache-control: no-store",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


class _Open:
    """Accepted (not refused) connections of this process: one server per worker process."""

    total: ClassVar[int] = 0
    per_client: ClassVar[Counter[str]] = Counter()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header size/time limits and connection limits (total, per client)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: Limits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._client_key: str | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else ""
        if _Open.total >= self.limits.max_connections:
            detail = f"the server holds its limit of {self.limits.max_connections} connections; retry shortly"
            self._refuse(503, "too-many-connections", detail, "total", retry_after=1)
            return
        if _Open.per_client[host] >= self.limits.max_connections_per_client:
            detail = f"at most {self.limits.max_connections_per_client} open connections per client"
            self._refuse(429, "too-many-connections", detail, "client", retry_after=1)
            return
        _Open.total += 1
        _Open.per_client[host] += 1
        self._client_key = host
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if self._client_key is not None:
            _Open.total -= 1
            _Open.per_client[self._client_key] -= 1
            if _Open.per_client[self._client_key] <= 0:
                del _Open.per_client[self._client_key]
            self._client_key = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_headers:
            self._header_bytes += len(data)
            if self._header_timer is None:
                self._arm_header_timer()
        super().data_received(data)
        # Checked after parsing: a chunk that completes the headers (and carries body bytes) is fine.
        if self._awaiting_headers and self._header_bytes > self.limits.max_header_bytes:
            detail = f"request line and headers exceed {self.limits.max_header_bytes} bytes"
            self._refuse(431, "headers-too-large", detail, "header_bytes")

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers = True
        self._header_bytes = 0

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._refused:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            metrics.REFUSED.labels("header_timeout").inc()
            self.transport.close()  # a response is under way: no room for another one
            return
        detail = f"request headers not received within {self.limits.header_timeout_s:g} s"
        self._refuse(408, "request-timeout", detail, "header_timeout")

    def _refuse(
        self, status: int, kind: str, detail: str, reason: str, retry_after: int | None = None
    ) -> None:
        """Answer, stop reading, half-close; close for good after LINGER_S (the client reads the answer)."""
        self._refused = True
        self._disarm_header_timer()
        transport = self.transport
        if transport.is_closing():  # e.g. uvicorn already answered a malformed request with its 400
            return
        metrics.REFUSED.labels(reason).inc()
        transport.write(raw_problem(status, kind, detail, retry_after))
        transport.pause_reading()
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(LINGER_S, transport.close)


class BodyLimit:
    """413 problem for a body over ``max_bytes``: at once from Content-Length, else when the count passes it.

    The app then sees a disconnect, and whatever it answers is dropped; nothing beyond the limit is buffered.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, chunked = _body_headers(scope)
        if declared is None and not chunked:  # no body (most reads): nothing to count
            await self.app(scope, receive, send)
            return
        if declared is not None and declared > self.max_bytes:
            await self._too_large(scope, send)
            return
        counted = _Counted(receive, send, self.max_bytes, lambda: self._too_large(scope, send))
        try:
            await self.app(scope, counted.receive, counted.send)
        except Exception:
            if not counted.refused:
                raise  # a real error: Observe logs it and answers 500

    async def _too_large(self, scope: Scope, send: Send) -> None:
        metrics.REFUSED.labels("body_bytes").inc()
        body = problems.body(
            413, "body-too-large", f"request body exceeds {self.max_bytes} bytes", scope["path"]
        )
        headers = [
            (b"content-type", problems.MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _Counted:
    """The app's receive and send for one request with a body: counts it, refuses once past the limit."""

    def __init__(
        self, receive: Receive, send: Send, max_bytes: int, refuse: Callable[[], Awaitable[None]]
    ) -> None:
        self._receive = receive
        self._send = send
        self._max_bytes = max_bytes
        self._refuse = refuse
        self._seen = 0
        self._started = False
        self.refused = False

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if self._seen > self._max_bytes:
                self.refused = True
                if not self._started:
                    await self._refuse()
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self._started = True
        await self._send(message)


def _body_headers(scope: Scope) -> tuple[int | None, bool]:
    """(Content-Length if any, whether Transfer-Encoding is present): a request has a body only with one."""
    declared: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            declared = int(text) if text.isdigit() else None
            chunked = chunked or declared is None  # unreadable: count what arrives
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked
