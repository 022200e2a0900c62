"""Publishing stored actions to moderation.v1: after PostgreSQL holds them, idempotently, with a bound.

The outbox row goes only once the broker acknowledged the record (acks=all, idempotent producer). A crash
in between leaves the row: the next action, or ``leaderboard moderate publish``, sends it again, and readers
of the topic de-duplicate by action_id.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

import psycopg
from confluent_kafka import KafkaError, Message, Producer

from leaderboard.moderation import store
from leaderboard.settings import PRODUCER_DEFAULTS, Settings

PUBLISH_TIMEOUT_S: Final = 10.0
log = logging.getLogger(__name__)

# One producer per configuration for the process: a new idempotent producer waits ~0.5 s for its producer id
# before its first record, which every action submitted through the admin API or the CLI paid. Producers
# are thread-safe; each call's delivery callbacks only touch that call's lists.
_producers: dict[tuple[tuple[str, str], ...], Producer] = {}
_lock = threading.Lock()


def _key(conf: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in conf.items()))


def _producer(conf: dict[str, Any]) -> Producer:
    with _lock:
        producer = _producers.get(_key(conf))
        if producer is None:
            producer = _producers[_key(conf)] = Producer(conf)
        return producer


def _forget(conf: dict[str, Any]) -> None:
    with _lock:
        _producers.pop(_key(conf), None)


def publish_pending(config: Settings, conn: psycopg.Connection, timeout: float = PUBLISH_TIMEOUT_S) -> int:
    """Send every outbox row (in action order) and delete those acknowledged; returns how many remain.

    Never raises for Kafka trouble: the actions are durable already, so an unreachable broker only
    leaves them pending (logged, and counted in the return value).
    """
    rows = store.pending(conn)
    if not rows:
        return 0
    acked: list[str] = []
    failures: list[str] = []
    fatal: list[bool] = []
    conf: dict[str, Any] = {
        **PRODUCER_DEFAULTS,
        **config.kafka_common(),
        "message.timeout.ms": int(timeout * 1000),
        "linger.ms": 0,
    }

    def report(action_id: str) -> Any:
        def done(err: KafkaError | None, msg: Message) -> None:
            del msg
            if err is None:
                acked.append(action_id)
            else:
                failures.append(str(err))
                if err.fatal():
                    fatal.append(True)

        return done

    try:
        producer = _producer(conf)
        for action_id, key, value in rows:
            producer.produce(config.moderation_topic, value, key, on_delivery=report(action_id))
        producer.flush(timeout + 1.0)
    except Exception as exc:  # a bad producer config or a full queue: still durable, still pending
        failures.append(f"{type(exc).__name__}: {exc}")
        fatal.append(True)
    if fatal:  # an idempotent producer's fatal error is for good: the next call starts a new one
        _forget(conf)
    store.published(conn, acked)
    left = len(rows) - len(acked)
    if left:
        log.warning(
            "moderation actions not published yet",
            extra={"pending": left, "topic": config.moderation_topic, "error": (failures or ["timeout"])[0]},
        )
    return left
