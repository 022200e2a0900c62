"""The period-closed announcement: one Kafka event per closed period, published once its standings are stored.

Published through an idempotent producer and flushed, then ``announced_at`` is recorded: a crash in between
is announced again on the next run; a recorded announcement never is.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import psycopg
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from consumers import period_store
from leaderboard.boards import Board
from leaderboard.settings import Settings

FLUSH_S = 30.0


def send(producer: Producer, topic: str, key: str, doc: dict[str, object], what: str) -> None:
    """Publish one event and wait (FLUSH_S) for the broker's acknowledgement; RuntimeError naming ``what``
    when it was not sent or not acknowledged (the caller records nothing, so the next run sends it again)."""
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        del msg
        if err is not None:
            errors.append(err)

    try:
        producer.produce(topic, orjson.dumps(doc), key.encode(), on_delivery=delivered)
    except (KafkaException, BufferError) as exc:
        raise RuntimeError(f"{what} not sent: {exc}") from exc
    left = producer.flush(FLUSH_S)
    if left or errors:
        raise RuntimeError(f"{what} not acknowledged: {errors or f'{left} queued'}")


def new_producer(config: Settings) -> Producer:
    """The idempotent (not transactional) producer that period-closed events go through."""
    return Producer({"enable.idempotence": True, "acks": "all", "linger.ms": 5, **config.kafka_common()})


def iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def announcement(conn: psycopg.Connection, board: Board, period: str) -> dict[str, object] | None:
    """The period-closed event of a closed period, built from its snapshot (None if it is not closed)."""
    head = conn.execute(
        "SELECT closed_at, players FROM closed_periods WHERE board = %s AND period = %s"
        " AND standings_at IS NOT NULL",
        (board.id, period),
    ).fetchone()
    span = board.bounds(period)
    if head is None or span is None:
        return None
    top = conn.execute(
        "SELECT s.rank, s.player_id, s.score, p.display_name FROM period_standings s"
        " LEFT JOIN players p ON p.player_id = s.player_id"
        " WHERE s.board = %s AND s.period = %s ORDER BY s.position LIMIT %s",
        (board.id, period, board.reward_top),
    ).fetchall()
    return {
        "board": board.id,
        "period": period,
        "start": iso(span[0]),
        "end": iso(span[1]),
        "closed_at": iso(head[0]),
        "players": int(head[1]),
        "top": [{"rank": r, "player_id": p, "score": s, "display_name": n} for r, p, s, n in top],
    }


def announce(
    conn: psycopg.Connection, producer: Producer, config: Settings, board: Board, period: str
) -> bool:
    """Publish the period-closed event unless it was already recorded as published; True if sent now."""
    with conn.transaction():
        if not period_store.claim(conn, board.id, period, "announced_at"):
            return False
        doc = announcement(conn, board, period)
        if doc is None:
            return False
        send(
            producer,
            config.period_closed_topic,
            f"{board.id}/{period}",
            doc,
            f"period-closed event for {board.id}/{period}",
        )
        conn.execute(
            "UPDATE closed_periods SET announced_at = now() WHERE board = %s AND period = %s",
            (board.id, period),
        )
    return True
