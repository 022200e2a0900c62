"""The real consumer process end to end: Kafka -> PostgreSQL + Redis, dead letters, metrics."""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import psycopg
import pytest
import redis
from confluent_kafka import KafkaError, Message, Producer

from leaderboard import scoring
from leaderboard.keys import Keys
from leaderboard.redis_client import SyncClient
from leaderboard.settings import Settings
from tests.procs import (
    ConsumerProcess,
    caught_up,
    committed,
    consume_until_caught_up,
    dumps,
    read_topic,
    wait_until,
    zscores,
)

INVALID = [
    (b"{not json", "undecodable"),
    (
        dumps(
            {
                "event_id": "nope",
                "match_id": "m",
                "player_id": "p",
                "game": "chess",
                "occurred_at": "2026-11-28T10:00:00Z",
            }
        ),
        "schema_violation",
    ),
    (
        dumps(
            {
                "schema_version": 2,
                "event_id": str(uuid.uuid4()),
                "match_id": "m",
                "player_id": "p",
                "game": "chess",
                "occurred_at": "2026-11-28T10:00:00Z",
            }
        ),
        "unknown_schema_version",
    ),
    (
        dumps(
            {
                "event_id": str(uuid.uuid4()),
                "match_id": "m",
                "player_id": "p",
                "game": "chess",
                "occurred_at": "2019-12-31T10:00:00Z",
            }
        ),
        "out_of_range",
    ),
]


Placed = list[tuple[str, int, int, int]]
"""(player, points, partition, offset) of each valid win as the broker acknowledged it."""


Record = tuple[bytes, bytes, str, int, str | None]
"""(key, value, player, points, invalid reason) of one record to publish."""

RESENDS = 3


def produce_stream(
    config: Settings, n: int, seed: int, placed: Placed | None = None
) -> tuple[dict[str, int], int, Counter[str]]:
    """Publish n valid wins (plus duplicates and invalid records) with a plain client; returns the truth.

    Every record must be acknowledged by the broker: ``flush`` returns 0 also when records FAILED (only their
    delivery reports carry the error), and a truth holding unwritten records would look like a lost event.
    A refused record is sent again, as a game server would, up to RESENDS times; then this raises. Invalid
    records' reasons are counted as they are acknowledged. ``placed`` collects where each valid win landed
    (for a mismatch's message)."""
    rnd = random.Random(seed)
    producer = Producer({**config.kafka_common(), "enable.idempotence": True, "linger.ms": 5})
    truth: dict[str, int] = defaultdict(int)
    sent: list[tuple[bytes, bytes]] = []
    reasons: Counter[str] = Counter()
    failed: list[tuple[Record, str]] = []

    def send(rec: Record) -> None:
        def done(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failed.append((rec, str(err)))
                return
            _, _, player, points, reason = rec
            if reason is not None:
                reasons[reason] += 1
            elif placed is not None and points:
                placed.append((player, points, msg.partition() or 0, msg.offset() or 0))

        producer.produce(config.topic, rec[1], rec[0], on_delivery=done)

    for i in range(n):
        player = f"player-{min(int(rnd.paretovariate(1.2)), 500)}"
        points = rnd.randint(1, 5)
        body = dumps(
            {
                "event_id": str(uuid.uuid4()),
                "match_id": f"m{i}",
                "player_id": player,
                "game": "chess",
                "points": points,
                "occurred_at": f"2026-11-{rnd.randint(1, 28):02d}T10:{rnd.randint(0, 59):02d}:00Z",
                "display_name": f"Name {player}",
            }
        )
        truth[player] += points
        sent.append((player.encode(), body))
        send((player.encode(), body, player, points, None))
        if rnd.random() < 0.05:  # the same event again, later in the stream
            key, value = rnd.choice(sent)
            send((key, value, key.decode(), 0, None))
        if rnd.random() < 0.02:
            value, reason = rnd.choice(INVALID)
            send((b"bad", value, "bad", 0, reason))
        producer.poll(0)
    assert producer.flush(30) == 0
    refused: list[str] = []
    for _ in range(RESENDS):
        if not failed:
            break
        again = [rec for rec, _ in failed]
        refused += [f"{rec[2]}: {err}" for rec, err in failed]
        failed.clear()
        for rec in again:
            send(rec)
        assert producer.flush(30) == 0
    assert not failed, (
        f"{len(failed)} record(s) not written to {config.topic} after {RESENDS} resends: "
        f"{[f'{rec[2]}: {err}' for rec, err in failed][:5]}"
    )
    if refused:  # shown with -s and in a failing test's captured output
        print(f"produce_stream: {len(refused)} refused record(s) written on a resend: {refused[:5]}")
    return dict(truth), n, reasons


def mismatch(
    want: dict[str, int], got: dict[str, int], placed: Placed, config: Settings, consumer: ConsumerProcess
) -> str:
    """Why a board differs from the truth: the players that differ, where their wins sit in the topic, what
    the group committed, and the consumer's log tail (its batches with LEADERBOARD_LOG_LEVEL=DEBUG)."""
    players = sorted(p for p in want.keys() | got.keys() if want.get(p) != got.get(p))
    lines = [f"{len(players)} player(s) differ (player: want/got):"]
    for player in players[:10]:
        wins = sorted((part, off, pts) for who, pts, part, off in placed if who == player)
        where = ", ".join(f"p{part}@{off}:{pts}" for part, off, pts in wins[:12])
        lines.append(f"  {player}: {want.get(player)}/{got.get(player)}; wins at {where}")
    with psycopg.connect(config.database_url) as conn:
        stored = conn.execute(
            "SELECT player_id, kafka_partition, kafka_offset, points FROM events WHERE player_id = ANY(%s)"
            " ORDER BY 2, 3",
            (players[:10],),
        ).fetchall()
    lines.append("in PostgreSQL: " + ", ".join(f"{p} p{part}@{off}:{pts}" for p, part, off, pts in stored))
    lines.append(f"committed offsets: {committed(config)}")
    lines.append(f"consumer log tail:\n{consumer.tail(6000)}")
    return "\n".join(lines)


def board(client: SyncClient, config: Settings, period: str, name: str = "global") -> dict[str, int]:
    keys = Keys(config.redis_prefix)
    gen = int(client.hget(keys.meta(name), "active") or 0)
    return {m.decode(): scoring.points_of(s) for m, s in zscores(client, keys.board(name, gen, period))}


def test_events_land_once_in_both_sinks_and_invalid_ones_in_the_dead_letter_topic(
    config: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    placed: Placed = []
    truth, n, reasons = produce_stream(config, 3000, seed=11, placed=placed)
    # DEBUG: the log shows each committed batch's offsets, so a mismatch names the batches around it.
    consumer = ConsumerProcess(config, tmp_path, LEADERBOARD_BATCH_SIZE="400", LEADERBOARD_LOG_LEVEL="DEBUG")
    try:
        consumer.wait_ready()
        wait_until(lambda: caught_up(config), 90, "consumer to commit every offset")
        for period in ("all_time", "monthly:2026-11"):
            got = board(redis_client, config, period)
            assert got == truth, f"{period}: " + mismatch(truth, got, placed, config, consumer)
        assert consumer.metric("leaderboard_consumer_events_applied_total") == n
        assert consumer.get("/readyz")[0] == 200
    finally:
        assert consumer.stop() == 0
    with psycopg.connect(config.database_url) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM events"
        ).fetchone() or (0, 0)
        names = conn.execute("SELECT count(*) FROM players WHERE display_name LIKE 'Name %'").fetchone()
    assert total == distinct == n
    assert names is not None
    assert names[0] == len(truth)
    letters = read_topic(config, config.dlq_topic)
    assert Counter(h["reason"] for _, _, h in letters) == reasons
    originals = {value for value, _ in INVALID}
    assert all(
        v in originals and h["source-topic"] == config.topic and int(h["source-offset"]) >= 0
        for _, v, h in letters
    )
    assert sum(reasons.values()) > 0


def test_a_restarted_consumer_continues_where_it_committed(
    config: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    truth, _, _ = produce_stream(config, 500, seed=3)
    consume_until_caught_up(config)
    more, _, _ = produce_stream(config, 500, seed=4)
    second = ConsumerProcess(config, tmp_path, name="second")
    try:
        second.wait_ready()
        wait_until(lambda: caught_up(config), 60, "second consumer to catch up")
        expected = Counter(truth)
        expected.update(more)
        assert board(redis_client, config, "all_time") == dict(expected)
        assert second.metric("leaderboard_consumer_events_consumed_total") < 600  # did not start over
    finally:
        second.stop()


@pytest.mark.slow
def test_members_joining_and_leaving_are_not_sink_errors(config: Settings, tmp_path: Path) -> None:
    """A commit that races a rebalance is retried quietly: no sink error, no loss (scale-ups and deploys)."""
    truth: Counter[str] = Counter()
    stop = threading.Event()

    def publish() -> None:  # steady traffic, so batches are in flight whenever the group rebalances
        seed = 100
        while not stop.is_set():
            part, _, _ = produce_stream(config, 400, seed=seed)
            truth.update(part)
            seed += 1

    first = ConsumerProcess(config, tmp_path, "first", LEADERBOARD_BATCH_SIZE="200")
    publisher = threading.Thread(target=publish)
    try:
        first.wait_ready()
        publisher.start()
        wait_until(lambda: first.metric("leaderboard_consumer_events_consumed_total") > 0, 30, "first batch")
        for round_ in range(3):
            joiner = ConsumerProcess(config, tmp_path, f"joiner{round_}", LEADERBOARD_BATCH_SIZE="200")
            joiner.wait_ready()
            wait_until(lambda: first.metric("leaderboard_consumer_assigned_partitions") < 12, 30, "hand-over")
            wait_until(
                lambda: joiner.metric("leaderboard_consumer_events_consumed_total") > 0,  # noqa: B023
                30,
                "the joiner to commit a batch",
            )
            assert joiner.metric("leaderboard_consumer_sink_errors_total", '{sink="kafka"}', unset=0) == 0
            assert joiner.stop() == 0
            wait_until(lambda: first.metric("leaderboard_consumer_assigned_partitions") == 12, 30, "all back")
        stop.set()
        publisher.join()
        wait_until(lambda: caught_up(config), 90, "consumed")
        assert first.metric("leaderboard_consumer_sink_errors_total", '{sink="kafka"}', unset=0) == 0
        assert first.metric("leaderboard_consumer_ready") == 1
        client = redis.Redis.from_url(config.redis_url)
        assert board(client, config, "all_time") == dict(truth)
        client.close()
        for line in first.log_path.read_text().splitlines():  # librdkafka's own complaints included
            assert isinstance(json.loads(line), dict), line
    finally:
        stop.set()
        if publisher.is_alive():
            publisher.join()
        first.stop()
