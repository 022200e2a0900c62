"""Publishing stored actions to moderation.v1: after PostgreSQL holds them, idempotently, with a bound.

The outbox row goes only once the broker acknowledged the record (acks=all, idempotent producer). A crash
in between leaves the row: the next action, or ``leaderboard moderate publish``, sends it again, and readers
of the topic de-duplicate by action_id.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import psycopg
from confluent_kafka import KafkaError, Message, Producer

from leaderboard.moderation import store
from leaderboard.settings import PRODUCER_DEFAULTS, Settings

PUBLISH_TIMEOUT_S: Final = 10.0
log = logging.getLogger(__name__)


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

        return done

    try:
        producer = Producer(conf)
        for action_id, key, value in rows:
            producer.produce(config.moderation_topic, value, key, on_delivery=report(action_id))
        producer.flush(timeout + 1.0)
    except Exception as exc:  # a bad producer config or a full queue: still durable, still pending
        failures.append(f"{type(exc).__name__}: {exc}")
    store.published(conn, acked)
    left = len(rows) - len(acked)
    if left:
        log.warning(
            "moderation actions not published yet",
            extra={"pending": left, "topic": config.moderation_topic, "error": (failures or ["timeout"])[0]},
        )
    return left
