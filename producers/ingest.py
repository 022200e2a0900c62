"""HTTP ingest for game servers that cannot speak Kafka: validate, publish, answer after Kafka's ack.

It lives in the API process as a mounted router (no extra service to run); it shares nothing with the
read path but the event loop. Errors are RFC 9457 ``application/problem+json``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Final

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from leaderboard import problems
from leaderboard.settings import Settings
from producers.publisher import DeliveryReport, InvalidEvent, Publisher, prepare
from schemas.model import Invalid, MatchWon, Reason, check_bytes

MAX_BATCH: Final = 500
MAX_BODY: Final = 2 * 1024 * 1024
PROBLEM: Final = problems.MEDIA_TYPE


def _schema() -> dict[str, Any]:
    text = resources.files("schemas").joinpath("match_won.v1.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    schema.pop("$schema", None)
    schema["required"] = [f for f in schema["required"] if f != "event_id"]
    return schema


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem document, built as the read API's are; its kind is the title in kebab-case."""
    body = problems.document(status, "-".join(title.lower().split()), title, detail, **extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


class IngestRouter(APIRouter):
    """The router plus ``close()``: flushes the publisher it made, if any (call it at shutdown)."""

    publisher: Publisher | None = None

    def close(self, timeout: float = 10.0) -> None:
        if self.publisher is not None:
            publisher, self.publisher = self.publisher, None
            publisher.close(timeout)


def make_router(
    publisher_factory: Callable[[], Publisher],
    *,
    token: str,
    ack_timeout: float = 5.0,
    max_future_skew_s: float = Settings.max_future_skew_s,
) -> IngestRouter:
    """``POST /v1/scores`` and ``POST /v1/scores:batch``, to mount with ``app.include_router``.

    publisher_factory: makes the Publisher (``poll_thread=True``, the default) on the first accepted
        request - so an API without ingest never connects a producer. ``router.close()`` closes it.
    token: the bearer token clients must send (``Settings.ingest_token``); empty = ingest disabled (503).
    ack_timeout: seconds to wait for Kafka's acknowledgement before answering 503 (the client retries
        with the same event_id; duplicates count once).
    max_future_skew_s: events dated further ahead of this server's clock get 422 (reason ``future``),
        as the consumer would dead-letter them against the broker's append time
        (``Settings.max_future_skew_s``).
    """
    router = IngestRouter(tags=["ingest"])
    event_schema = _schema()

    def check_auth(request: Request) -> JSONResponse | None:
        if not token:
            return problem(503, "Ingest disabled", "no LEADERBOARD_INGEST_TOKEN is configured on this server")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return problem(401, "Unauthorized", "send 'Authorization: Bearer <ingest token>'")
        return None

    async def read_json(request: Request) -> Any:
        body = await request.body()
        if len(body) > MAX_BODY:
            raise _Problem(problem(413, "Body too large", f"at most {MAX_BODY} bytes"))
        # The byte checks the consumer makes (UTF-8, nesting depth) come first: msgspec's generic decoder
        # raises UnicodeDecodeError or RecursionError for such bodies, which would answer 500.
        bad = check_bytes(body)
        if bad is None:
            try:
                return msgspec.json.decode(body)
            except msgspec.ValidationError as exc:  # JSON, but a number no type can hold (1e400)
                bad = Invalid(Reason.SCHEMA_VIOLATION, str(exc))
            except msgspec.DecodeError as exc:
                bad = Invalid(Reason.UNDECODABLE, str(exc))
        if bad.reason is Reason.UNDECODABLE:
            raise _Problem(problem(400, "Malformed JSON", bad.detail, reason=str(bad.reason)))
        error = {"index": None, "reason": str(bad.reason), "detail": bad.detail}
        raise _Problem(problem(422, "Invalid event", bad.detail, errors=[error]))

    def publisher() -> Publisher:
        if router.publisher is None:
            router.publisher = publisher_factory()
        return router.publisher

    def send(events: list[Any]) -> tuple[list[Future[DeliveryReport]], list[str]]:
        """Validate all, then publish all: a batch with one bad event publishes nothing."""
        valid: list[MatchWon] = []
        errors: list[dict[str, Any]] = []
        latest = datetime.now(UTC) + timedelta(seconds=max_future_skew_s)
        for index, item in enumerate(events):
            if not isinstance(item, dict):
                errors.append(
                    {"index": index, "reason": str(Reason.SCHEMA_VIOLATION), "detail": "expected an object"}
                )
                continue
            try:
                event = prepare(item)
            except InvalidEvent as exc:
                errors.append({"index": index, "reason": str(exc.reason), "detail": exc.detail})
                continue
            if event.occurred_at > latest:
                detail = f"occurred_at is more than {max_future_skew_s:g} s ahead of the server's clock"
                errors.append({"index": index, "reason": str(Reason.FUTURE), "detail": detail})
                continue
            valid.append(event)
        if errors:
            detail = "; ".join(f"[{e['index']}] {e['reason']}: {e['detail']}" for e in errors[:10])
            raise _Problem(problem(422, "Invalid event", detail, errors=errors))
        try:
            pub = publisher()
        except Exception as exc:  # a bad producer config must read as "unavailable", not a 500
            raise _Problem(
                problem(503, "Ingest unavailable", f"cannot create the Kafka producer: {exc}")
            ) from exc
        return [pub.publish(event) for event in valid], [event.event_id for event in valid]

    async def acknowledged(
        futures: list[Future[DeliveryReport]], event_ids: list[str]
    ) -> JSONResponse | None:
        try:
            async with asyncio.timeout(ack_timeout):
                await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except TimeoutError:
            detail = f"Kafka did not acknowledge within {ack_timeout:g}s; retry with the same event_id"
            return problem(503, "Not acknowledged", detail, event_ids=event_ids)
        except Exception as exc:  # a delivery failure: 503, the client retries
            return problem(503, "Delivery failed", str(exc), event_ids=event_ids)
        return None

    @router.post(
        "/v1/scores",
        status_code=202,
        summary="Record one win (event_id optional: the server makes a UUIDv7)",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": event_schema}}}
        },
        responses={202: {"description": "Kafka acknowledged the event"}},
    )
    async def post_score(request: Request) -> JSONResponse:
        if (denied := check_auth(request)) is not None:
            return denied
        try:
            payload = await read_json(request)
            futures, event_ids = send([payload])
        except _Problem as exc:
            return exc.response
        if (failed := await acknowledged(futures, event_ids)) is not None:
            return failed
        return JSONResponse({"event_id": event_ids[0]}, status_code=202)

    # Same route shape as /v1/scores on purpose: one event or a batch, each documented in OpenAPI.
    batch_schema = {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": event_schema}

    @router.post(
        "/v1/scores:batch",
        status_code=202,
        summary=f"Record up to {MAX_BATCH} wins; all are validated before any is published",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": batch_schema}}}
        },
        responses={202: {"description": "Kafka acknowledged every event"}},
    )
    async def post_scores(request: Request) -> JSONResponse:
        if (denied := check_auth(request)) is not None:
            return denied
        try:
            payload = await read_json(request)
            if not isinstance(payload, list) or not 1 <= len(payload) <= MAX_BATCH:
                return problem(422, "Invalid batch", f"expected a JSON array of 1 to {MAX_BATCH} events")
            futures, event_ids = send(payload)
        except _Problem as exc:
            return exc.response
        if (failed := await acknowledged(futures, event_ids)) is not None:
            return failed
        return JSONResponse({"event_ids": event_ids}, status_code=202)

    return router


class _Problem(Exception):  # carries a ready response out of helpers
    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response
