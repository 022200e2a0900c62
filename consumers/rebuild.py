"""``leaderboard rebuild``: rebuild boards as a new generation while the API keeps serving the old one.

``--from postgres`` is the same path Redis-loss recovery takes (``generations.rebuild_from_checkpoint``): fold
the log's tail into the board's checkpoint, load the checkpoint, apply the tail after it. ``--from kafka``
replays the topic from its beginning through the same PostgreSQL de-duplication as the live consumer. Either
way the new generation then catches up with the live stream and the readers' pointer flips atomically; each
board's lock renews itself for the whole job, and a lost lock stops it with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import uuid
from collections.abc import Sequence

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from consumers import names as display_names
from consumers import pg_sink
from consumers.decoded import decode_messages
from consumers.generations import Generations, Loaded, rebuild_from_checkpoint
from consumers.lease import Lease, LockLost
from consumers.plan import Canonical, Fold, fold
from consumers.redis_sink import RedisSink
from leaderboard import boards as boards_mod
from leaderboard.boards import Board
from leaderboard.errors import UserError
from leaderboard.keys import Keys
from leaderboard.progress import Progress
from leaderboard.redis_client import FAILURES, sync_client
from leaderboard.settings import Settings
from schemas.model import MatchWon

HELP = "rebuild boards from PostgreSQL or from the Kafka topic, with no downtime (blue/green)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", choices=["postgres", "kafka"], required=True)
    parser.add_argument("--board", help="only this board (default: every configured board)")


def select_boards(config: Settings, board_id: str | None) -> tuple[Board, ...]:
    boards = boards_mod.load(config.boards_file)
    if board_id is None:
        return boards
    chosen = tuple(b for b in boards if b.id == board_id)
    if not chosen:
        raise UserError(f"no board {board_id!r}; configured boards: {', '.join(b.id for b in boards)}")
    return chosen


def replay_kafka(config: Settings, conn: psycopg.Connection, boards: Sequence[Board]) -> dict[str, Loaded]:
    """Replay the topic from the beginning up to its current end; fold canonical events per board."""
    consumer = Consumer(
        {
            **config.kafka_common(),
            "group.id": f"{config.consumer_group}-rebuild-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        meta = consumer.list_topics(config.topic, timeout=10).topics.get(config.topic)
        if meta is None or meta.error is not None:
            raise UserError(f"topic {config.topic!r} not found at {config.kafka_bootstrap}")
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(config.topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(config.topic, p, OFFSET_BEGINNING) for p in ends])
        total = sum(ends.values())
        progress = Progress("replayed records", total)
        folded: dict[str, Fold] = {b.id: {} for b in boards}
        done: dict[int, int] = dict.fromkeys(ends, 0)
        events = 0
        while any(done[p] < ends[p] for p in ends):
            batch = decode_messages(consumer.consume(5000, 1.0), config.max_future_skew_s)
            records = [r for r in batch if r.offset < ends[r.partition]]
            for r in records:
                done[r.partition] = max(done[r.partition], r.offset + 1)
            for tp in consumer.position([TopicPartition(config.topic, p) for p in ends]):
                if tp.offset >= 0:  # past transaction markers too
                    done[tp.partition] = max(done[tp.partition], min(tp.offset, ends[tp.partition]))
            valid = [
                Canonical(r.partition, r.offset, r.decoded)
                for r in records
                if isinstance(r.decoded, MatchWon)
            ]
            # Records PostgreSQL refuses were dead-lettered (sink_rejected) by the live consumer: skip them.
            outcome, _ = pg_sink.write_isolating(conn, valid, boards)
            for board in boards:
                fold(board, outcome.canonical, into=folded[board.id], split_partitions=False)
            events += len(outcome.canonical)
            progress.update(sum(done.values()), f"lag {total - sum(done.values()):,}")
        progress.finish(f"{events:,} canonical events")
    finally:
        consumer.close()
    positions = {p: end - 1 for p, end in ends.items()}
    return {b.id: Loaded(folded[b.id], positions, events) for b in boards}


def run(config: Settings, args: argparse.Namespace) -> int:
    boards = select_boards(config, args.board)
    client = sync_client(config, socket_timeout=30)
    keys = Keys(config.redis_prefix)
    gens = Generations(client, keys, boards)
    sink = RedisSink(client, keys, boards)
    leases: dict[str, Lease] = {}
    try:
        for board in boards:
            lease = gens.lease(board.id)
            if lease is None:
                raise UserError(
                    f"board {board.id!r} is being rebuilt by another process (lock {keys.lock(board.id)})"
                )
            leases[board.id] = lease
        with psycopg.connect(config.database_url, autocommit=True, connect_timeout=5) as conn:
            if args.source == "kafka":
                _from_kafka(config, conn, gens, sink, boards, leases)
            else:
                for board in boards:
                    started = time.monotonic()
                    gen, written = rebuild_from_checkpoint(
                        gens, sink, conn, board, leases[board.id], progress=_say
                    )
                    print(
                        f"board {board.id}: generation {gen} is live, {written.entries:,} entries, "
                        f"{time.monotonic() - started:.1f} s",
                        flush=True,
                    )
            # The names hash is shared by the boards and decided by PostgreSQL: copy it as it is now (a
            # replay may have changed names; a Redis that lost writes may lack some).
            display_names.load(conn, client, keys)
    except LockLost as exc:
        raise UserError(f"stopped: {exc}") from exc
    finally:
        # A failure above (mapped to one line by the CLI) must not be replaced by Redis failing here too.
        for lease in leases.values():
            with contextlib.suppress(*FAILURES):
                lease.release()
        client.close()
    return 0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _from_kafka(  # noqa: PLR0917
    config: Settings,
    conn: psycopg.Connection,
    gens: Generations,
    sink: RedisSink,
    boards: Sequence[Board],
    leases: dict[str, Lease],
) -> None:
    new = {b.id: gens.new_generation(b.id) for b in boards}
    loaded = replay_kafka(config, conn, boards)
    for board in boards:
        started = time.monotonic()
        gen = new[board.id]
        leases[board.id].check()
        gens.write(board, gen, loaded[board.id])
        old = gens.catch_up_and_flip(board, gen, conn, sink, leases[board.id])
        if old is not None and old != gen:
            gens.drop(board.id, old)
        print(
            f"board {board.id}: generation {gen} is live (replaced {old or 'none'}), "
            f"{sum(len(s.players) for s in loaded[board.id].folded.values()):,} entries, "
            f"flip after {time.monotonic() - started:.1f} s",
            flush=True,
        )
