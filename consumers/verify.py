"""``leaderboard verify``: compare every Redis board with the standings checkpoint plus the log's tail.

The comparison itself is :func:`consumers.compare.differences` (streaming, bounded memory).
"""

from __future__ import annotations

import argparse
import sys
import time

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumers.compare import differences
from consumers.rebuild import select_boards
from leaderboard.errors import ServiceError, UserError
from leaderboard.keys import Keys
from leaderboard.redis_client import sync_client
from leaderboard.settings import Settings

HELP = (
    "compare Redis boards with PostgreSQL ground truth and report the consumer group's lag; "
    "exit 1 on any difference or when the group lags more than --max-lag"
)
_SHOW = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", help="only this board")
    parser.add_argument("--period", help="only this period key (e.g. monthly:2026-11)")
    parser.add_argument("--attempts", type=int, default=3, help="re-check differences this often (live lag)")
    parser.add_argument(
        "--recheck-closed",
        action="store_true",
        help="compare every closed period's Redis copy whole again (by default once per version)",
    )
    parser.add_argument(
        "--max-lag",
        type=int,
        default=0,
        help="records the group may have left uncommitted (under live load, allow a few batches)",
    )


def run(config: Settings, args: argparse.Namespace) -> int:
    """Both checks: equal boards say nothing while the group is stuck (both sinks are then equally stale)."""
    status = compare(config, args)
    return max(status, check_lag(config, args.max_lag, args.attempts))


def group_lag(config: Settings, timeout: float = 10) -> dict[int, int]:
    """Records per partition of the main topic that the consumer group has not committed yet.

    End offset minus committed offset (the log start when the group never committed). Reads offsets only:
    the probe never joins the group, so it causes no rebalance.
    """
    consumer = Consumer(
        {**config.kafka_common(), "group.id": config.consumer_group, "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(config.topic, timeout=timeout).topics.get(config.topic)
        if meta is None or meta.error is not None:
            raise UserError(f"topic {config.topic} not found in Kafka at {config.kafka_bootstrap}")
        tps = [TopicPartition(config.topic, p) for p in sorted(meta.partitions)]
        lag: dict[int, int] = {}
        for tp in consumer.committed(tps, timeout=timeout):
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            lag[tp.partition] = max(0, high - (tp.offset if tp.offset >= 0 else low))
    except KafkaException as exc:
        raise ServiceError(
            f"cannot read the consumer group's offsets from Kafka at {config.kafka_bootstrap}: {exc}",
            unavailable=True,
        ) from exc
    finally:
        consumer.close()
    return lag


def check_lag(config: Settings, max_lag: int, attempts: int) -> int:
    """Print the group's lag; 1 when it stays above ``max_lag`` over ``attempts`` readings a second apart."""
    for attempt in range(max(attempts, 1)):
        lag = group_lag(config)
        total = sum(lag.values())
        if total <= max_lag:
            print(f"ok: consumer group {config.consumer_group} lags {total} record(s) (max {max_lag})")
            return 0
        if attempt + 1 < attempts:
            time.sleep(1.0)
    worst = sorted(((n, p) for p, n in lag.items() if n), reverse=True)[:5]
    where = ", ".join(f"partition {p}: {n}" for n, p in worst)
    print(
        f"LAGGING: consumer group {config.consumer_group} has {total} record(s) not committed "
        f"(max {max_lag}; {where}); the boards are stale until its members catch up",
        file=sys.stderr,
    )
    return 1


def compare(config: Settings, args: argparse.Namespace) -> int:
    boards = select_boards(config, args.board)
    client = sync_client(config, socket_timeout=30, connect_timeout=3)
    keys = Keys(config.redis_prefix)
    try:
        with psycopg.connect(config.database_url, autocommit=True, connect_timeout=5) as conn:
            for attempt in range(max(args.attempts, 1)):
                lines: list[str] = []
                compared = 0
                for board in boards:
                    found, n = differences(client, conn, keys, board, args.period, args.recheck_closed)
                    lines += found
                    compared += n
                if not lines:
                    print(f"ok: {len(boards)} board(s), {compared} period(s) equal PostgreSQL")
                    return 0
                if attempt + 1 < args.attempts:
                    time.sleep(1.0)
    finally:
        client.close()
    for line in lines[:_SHOW]:
        print(line, file=sys.stderr)
    print(f"DIFFERENT: {len(lines)} difference(s) (first {min(len(lines), _SHOW)} shown)", file=sys.stderr)
    return 1
