"""The producer SDK: validated, idempotent publishing of match-won events with delivery reports.

One ``Publisher`` per process is enough (librdkafka batches and is thread-safe). Two paths:

* ``publish(event)`` validates with ``schemas.model`` and returns a ``Future[DeliveryReport]``
  (``asyncio.wrap_future`` makes it awaitable);
* ``publish_raw(key, value, on_delivery=...)`` sends bytes as they are, with librdkafka's own
  ``(err, msg)`` callback and no per-record allocation: the simulator's hot path, duplicates and
  deliberately malformed records.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import msgspec
import uuid_utils
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from leaderboard.settings import PRODUCER_DEFAULTS, Settings
from schemas import model

DeliveryCallback = Callable[[KafkaError | None, Message], None]
"""librdkafka's delivery callback: ``err`` is None on success; ``msg`` has topic/partition/offset."""

"""Our settings; ``LEADERBOARD_KAFKA_CONFIG`` (TLS/SASL, tuning) and ``extra`` override them."""

_POLL_EVERY: Final = 512


class InvalidEvent(ValueError):
    """The event breaks the contract; nothing was sent."""

    def __init__(self, reason: model.Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PublishError(RuntimeError):
    """Records were not acknowledged by Kafka (delivery failed or still queued at close)."""


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """Where Kafka stored an acknowledged event."""

    event_id: str
    topic: str
    partition: int
    offset: int


def new_event_id() -> str:
    """A UUIDv7: time-ordered, so the event log's unique index stays append-friendly."""
    return str(uuid_utils.uuid7())


def prepare(event: model.MatchWon | Mapping[str, Any]) -> model.MatchWon:
    """Validate (and fill ``event_id`` if absent) exactly as the consumer will; raises InvalidEvent."""
    if isinstance(event, model.MatchWon):
        raw = model.encode(event)
    else:
        if event.get("event_id") is None:
            event = {**event, "event_id": new_event_id()}
        try:
            raw = msgspec.json.encode(event)
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidEvent(model.Reason.UNDECODABLE, str(exc)) from None
    result = model.decode(raw)
    if isinstance(result, model.Invalid):
        raise InvalidEvent(result.reason, result.detail)
    return result


class Publisher:
    """Idempotent Kafka producer for one topic (default: ``config.topic``).

    ``poll_thread=True`` serves delivery callbacks from a daemon thread (needed when the caller
    only waits on futures, e.g. asyncio). ``False`` polls on publish instead: one thread, no GIL
    hand-offs, callbacks run inside ``publish*``/``flush`` calls - the simulator's choice.
    """

    def __init__(
        self,
        config: Settings,
        *,
        topic: str | None = None,
        extra: Mapping[str, str | int] | None = None,
        poll_thread: bool = True,
        on_delivery: DeliveryCallback | None = None,
        report_success: bool = True,
    ) -> None:
        """``on_delivery`` is the default callback of ``publish_raw`` records (one object, no
        per-record cost); ``report_success=False`` makes librdkafka report failures only - the
        counting fast path: ``acked()`` stays exact, ``publish()`` futures are then unavailable.
        """
        conf: dict[str, Any] = {**PRODUCER_DEFAULTS, **config.kafka_common(), **(extra or {})}
        conf["on_delivery"] = self._on_report
        conf["delivery.report.only.error"] = not report_success
        self.config = config
        self.topic = topic or config.topic
        self.report_success = report_success
        self.sent = 0
        self.failed = 0
        self._user_callback = on_delivery
        self._producer = Producer(conf)
        self._produce = self._producer.produce
        self._since_poll = 0
        self._lost: list[str] = []  # failures nobody else was told about
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        if poll_thread:
            self._thread = threading.Thread(target=self._serve, name="publisher-poll", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    def _on_report(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                self.failed += 1
                if self._user_callback is None:
                    self._lost.append(str(err))
        if self._user_callback is not None:
            self._user_callback(err, msg)

    def publish(self, event: model.MatchWon | Mapping[str, Any]) -> Future[DeliveryReport]:
        """Validate, then send with key = player_id; the Future resolves on Kafka's ack.

        Raises InvalidEvent (nothing sent). The Future fails with KafkaException if delivery fails.
        Unknown extra fields of a mapping are dropped: the model's encoding is what is sent.
        """
        if not self.report_success:
            raise RuntimeError("publish() needs success reports: make the Publisher with report_success=True")
        valid = prepare(event)
        future: Future[DeliveryReport] = Future()
        future.set_running_or_notify_cancel()  # an awaiting task's cancel must not race the callback
        callback = functools.partial(self._resolve, future, valid.event_id)
        self._send(valid.player_id.encode(), model.encode(valid), callback)
        return future

    def _resolve(
        self, future: Future[DeliveryReport], event_id: str, err: KafkaError | None, msg: Message
    ) -> None:
        if err is not None:
            with self._lock:
                self.failed += 1
            future.set_exception(KafkaException(err))
        else:
            topic, partition, offset = msg.topic() or self.topic, msg.partition() or 0, msg.offset() or 0
            future.set_result(DeliveryReport(event_id, topic, partition, offset))

    def publish_raw(self, key: bytes | str | None, value: bytes | None) -> None:
        """Send bytes as they are (no validation); reports go to the Publisher's ``on_delivery``.

        Blocks only while librdkafka's local queue is full. (The body repeats ``_send`` without the
        callback argument: this is the simulator's hot path.)
        """
        try:
            self._produce(self.topic, value, key)
        except BufferError:
            self._send(key, value, None)
            return
        # The counting below repeats _send's on purpose: inlined, as a call costs on this hot path.
        self.sent += 1
        if self._thread is None:
            self._since_poll += 1
            if self._since_poll >= _POLL_EVERY:
                self._since_poll = 0
                self._producer.poll(0)

    def _send(self, key: bytes | str | None, value: bytes | None, callback: DeliveryCallback | None) -> None:
        while True:
            try:
                if callback is None:
                    self._produce(self.topic, value, key)
                else:
                    self._produce(self.topic, value, key, on_delivery=callback)
                break
            except BufferError:
                self._producer.poll(0.05)  # queue full: let deliveries drain, then retry
        self.sent += 1
        if self._thread is None:
            self._since_poll += 1
            if self._since_poll >= _POLL_EVERY:
                self._since_poll = 0
                self._producer.poll(0)

    def poll(self, timeout: float = 0) -> int:
        """Serve pending delivery callbacks now (only useful with ``poll_thread=False``)."""
        served: int = self._producer.poll(timeout)
        return served

    def pending(self) -> int:
        """Records queued or in flight, not yet acknowledged or failed."""
        return len(self._producer)

    def acked(self) -> int:
        """Records Kafka acknowledged so far (exact in both reporting modes)."""
        return self.sent - len(self._producer) - self.failed

    def flush(self, timeout: float = 30.0) -> int:
        """Wait up to ``timeout`` s for in-flight records; returns how many are still undelivered."""
        remaining: int = self._producer.flush(timeout)
        return remaining

    def close(self, timeout: float = 30.0) -> None:
        """Flush, stop the poll thread; raises PublishError if anything was not delivered."""
        remaining = self.flush(timeout)
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
        self._producer.poll(0)
        with self._lock:
            lost, self._lost = self._lost, []
        if remaining:
            raise PublishError(f"{remaining} record(s) still undelivered after {timeout:g}s")
        if lost:
            raise PublishError(f"{len(lost)} record(s) failed delivery, first: {lost[0]}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        try:  # the body's own exception wins; still deliver what was queued
            self.close()
        except PublishError as failed:
            exc.add_note(f"and on close: {failed}")
