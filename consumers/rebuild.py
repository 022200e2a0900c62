"""``leaderboard rebuild``: rebuild boards as a new generation while the API keeps serving the old one.

``--from postgres`` is the same path Redis-loss recovery takes (``generations.rebuild_from_checkpoint``): fold
the log's tail into the board's checkpoint, load the checkpoint, apply the tail after it. ``--from kafka``
first replays the topic from its beginning into the event log, batch by batch, through the same PostgreSQL
de-duplication as the live consumer (events PostgreSQL lacked are stored; nothing is held in memory but one
batch), then takes that same path. Either way the new generation catches up with the live stream and the
readers' pointer flips atomically; each board's lock renews itself for the whole job, and a lost lock stops
it with one line. The whole command has a deadline (``LEADERBOARD_REBUILD_DEADLINE_S``) that a timer signal
enforces, whatever call it is blocked in.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from consumers import names as display_names
from consumers import pg_sink
from consumers.decoded import decode_messages
from consumers.generations import Generations, rebuild_from_checkpoint
from consumers.lease import Lease, LockLost
from consumers.plan import Canonical
from consumers.redis_sink import RedisSink
from leaderboard import catalog_store
from leaderboard.boards import Board
from leaderboard.errors import UserError
from leaderboard.keys import Keys
from leaderboard.moderation import store as moderation
from leaderboard.moderation.view import pseudonymised
from leaderboard.progress import Progress
from leaderboard.redis_client import FAILURES, SyncClient, sync_client
from leaderboard.settings import Settings
from schemas.model import MatchWon

HELP = "rebuild boards from PostgreSQL or from the Kafka topic, with no downtime (blue/green)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", choices=["postgres", "kafka"], required=True)
    parser.add_argument("--board", help="only this board (default: every configured board)")


def select_boards(config: Settings, board_id: str | None) -> tuple[Board, ...]:
    """The boards fed now (the boards file overlaid by the runtime catalog), or the one named."""
    boards = catalog_store.current(config).fed
    if board_id is None:
        return boards
    chosen = tuple(b for b in boards if b.id == board_id)
    if not chosen:
        raise UserError(f"no board {board_id!r}; configured boards: {', '.join(b.id for b in boards)}")
    return chosen


_BATCH = 5000


@dataclass
class Replayed:
    """What a replay of the topic did: records read, events new to PostgreSQL, the ends it read up to."""

    records: int
    stored: int
    ends: dict[int, int]


def replay_kafka(
    config: Settings,
    conn: psycopg.Connection,
    boards: Sequence[Board],
    check: Callable[[], None] = lambda: None,
) -> Replayed:
    """Replay the topic from the beginning up to its current end into the event log, one batch at a time.

    Every batch goes through ``pg_sink`` (so copies are recognised, closed periods and too-old months
    refused, exactly as the live consumer decides) and is then forgotten: memory is one batch, whatever the
    topic holds. ``check`` runs between batches (the rebuild's leases). Records of erased ids are stored
    under their pseudonym (moderation), so raw records inside the topic's retention never bring them back;
    what else moderation hides is decided by the checkpoint path the rebuild then takes.
    """
    view = moderation.load_view(conn)
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
        done: dict[int, int] = dict.fromkeys(ends, 0)
        records_read = stored = 0
        while any(done[p] < ends[p] for p in ends):
            check()
            batch = decode_messages(consumer.consume(_BATCH, 1.0), config.max_future_skew_s)
            records = [r for r in batch if r.offset < ends[r.partition]]
            for r in records:
                done[r.partition] = max(done[r.partition], r.offset + 1)
            for tp in consumer.position([TopicPartition(config.topic, p) for p in ends]):
                if tp.offset >= 0:  # past transaction markers too
                    done[tp.partition] = max(done[tp.partition], min(tp.offset, ends[tp.partition]))
            valid = [
                Canonical(r.partition, r.offset, pseudonymised(view, r.decoded))
                for r in records
                if isinstance(r.decoded, MatchWon)
            ]
            # Records PostgreSQL refuses were dead-lettered (sink_rejected) by the live consumer: skip them.
            outcome, _ = pg_sink.write_isolating(conn, valid, boards)
            records_read += len(records)
            stored += sum(1 for _ in outcome.canonical)
            progress.update(sum(done.values()), f"lag {total - sum(done.values()):,}")
        progress.finish(f"{stored:,} canonical events")
    finally:
        consumer.close()
    return Replayed(records_read, stored, ends)


class DeadlinePassed(UserError):
    """The rebuild ran longer than LEADERBOARD_REBUILD_DEADLINE_S."""


@contextlib.contextmanager
def deadline(seconds: float, doing: Callable[[], str]) -> Iterator[None]:
    """Raise DeadlinePassed in the main thread once ``seconds`` have passed, whatever it is blocked in (a
    timer signal: a blocking wait returns to Python, which runs the handler). ``doing`` names the stage."""

    def expired(signum: int, frame: object) -> None:
        del signum, frame
        raise DeadlinePassed(
            f"rebuild stopped: its deadline of {seconds:g} s (LEADERBOARD_REBUILD_DEADLINE_S) passed while"
            f" {doing()}; boards not reported live above still serve their previous generation"
        )

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(config: Settings, args: argparse.Namespace) -> int:
    boards = select_boards(config, args.board)
    client = sync_client(config, socket_timeout=30)
    keys = Keys(config.redis_prefix)
    gens = Generations(client, keys, boards)
    sink = RedisSink(client, keys, boards)
    leases: dict[str, Lease] = {}
    stage = ["taking the boards' locks"]
    try:
        with deadline(config.rebuild_deadline_s, lambda: stage[0]):
            _run(config, args, boards, client, gens, sink, leases, stage)
    except LockLost as exc:
        raise UserError(f"stopped: {exc}") from exc
    finally:
        # A failure above (mapped to one line by the CLI) must not be replaced by Redis failing here too.
        for lease in leases.values():
            with contextlib.suppress(*FAILURES):
                lease.release()
        client.close()
    return 0


def _run(  # noqa: PLR0917 - run's state, passed along
    config: Settings,
    args: argparse.Namespace,
    boards: Sequence[Board],
    client: SyncClient,
    gens: Generations,
    sink: RedisSink,
    leases: dict[str, Lease],
    stage: list[str],
) -> None:
    keys_of = Keys(config.redis_prefix)
    for board in boards:
        lease = gens.lease(board.id)
        if lease is None:
            raise UserError(
                f"board {board.id!r} is being rebuilt by another process (lock {keys_of.lock(board.id)})"
            )
        leases[board.id] = lease
    stage[0] = "connecting to PostgreSQL"
    with psycopg.connect(config.database_url, autocommit=True, connect_timeout=5) as conn:
        if args.source == "kafka":
            stage[0] = f"replaying topic {config.topic} into PostgreSQL"

            def check() -> None:
                for lease in leases.values():
                    lease.check()

            replayed = replay_kafka(config, conn, boards, check)
            _say(
                f"topic {config.topic}: {replayed.records:,} records replayed,"
                f" {replayed.stored:,} canonical events in PostgreSQL"
            )
        for board in boards:
            stage[0] = f"rebuilding board {board.id}"
            started = time.monotonic()
            gen, written = rebuild_from_checkpoint(gens, sink, conn, board, leases[board.id], progress=_say)
            print(
                f"board {board.id}: generation {gen} is live, {written.entries:,} entries, "
                f"{time.monotonic() - started:.1f} s",
                flush=True,
            )
        # The names hash is shared by the boards and decided by PostgreSQL: copy it as it is now (a replay may
        # have changed names; a Redis that lost writes may lack some).
        stage[0] = "copying display names"
        display_names.load(conn, client, keys_of)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
