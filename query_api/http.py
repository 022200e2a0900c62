"""orjson responses with Cache-Control and a weak ETag (304 on a matching If-None-Match)."""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

LIVE_CACHE = "public, max-age=1"
SNAPSHOT_CACHE = "public, max-age=86400"
"""Closed periods never change; a day keeps caches small without pinning a mistake forever."""


def etag_of(payload: bytes) -> str:
    return 'W/"' + blake2b(payload, digest_size=12).hexdigest() + '"'


def matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    opaque = etag[2:]
    return any(tag.strip().removeprefix("W/") == opaque for tag in header.split(","))


def json(request: Request, doc: Any, *, snapshot: bool = False, cache: str | None = None) -> Response:
    """200 with the body (or 304 when the client already has it)."""
    payload = orjson.dumps(doc)
    etag = etag_of(payload)
    headers = {"ETag": etag, "Cache-Control": cache or (SNAPSHOT_CACHE if snapshot else LIVE_CACHE)}
    inm = request.headers.get("if-none-match")
    if inm is not None and matches(inm, etag):
        return Response(status_code=304, headers=headers)
    return Response(payload, media_type="application/json", headers=headers)


def plain_json(doc: Any, status: int = 200, cache: str = "no-store") -> Response:
    return Response(
        orjson.dumps(doc), status_code=status, media_type="application/json", headers={"Cache-Control": cache}
    )
