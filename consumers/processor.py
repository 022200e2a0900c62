"""The stream processor: one member of the consumer group, applying batches exactly once.

Per batch: decode -> PostgreSQL (append, decide canonical copies; one transaction) -> Redis (apply.lua,
idempotent by watermark) -> one Kafka transaction holding the dead letters AND the consumed offsets.
Offsets therefore move only after both sinks have the batch, and dead letters appear exactly once for
read_committed readers. Any failure aborts the Kafka transaction, pauses the partitions and retries the same
batch with backoff (both sinks are idempotent), so outages lose and double nothing.

Every blocking call on this path has a bound the process enforces: PostgreSQL by statement_timeout and, for
a server that stopped answering at all, by the watchdog breaking the connection; Redis by socket timeouts;
Kafka by short explicit timeouts on the transactional calls. The watchdog thread (consumers/watchdog.py)
reports a batch that does not commit within its bound as not-ready and counts it, while the loop is blocked.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from types import FrameType

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumers import dlq, pg_sink
from consumers import names as display_names
from consumers.bounded import TransactionalProducer, bounded
from consumers.catchup import CatchUp
from consumers.clients import Clients
from consumers.decoded import Record, decode_messages, mark_uncountable
from consumers.generations import Generations, rebuild_from_checkpoint
from consumers.health import Readiness
from consumers.lease import LockLost
from consumers.metrics import ConsumerMetrics
from consumers.migrate import migrate
from consumers.moderation_apply import Moved, Recomputer, sync
from consumers.offset_probe import PROBE_TIMEOUT_S, Probes, plan
from consumers.plan import Canonical, positions
from consumers.redis_sink import DefinitionStale, RedisBehind, RedisLost, RedisSink
from consumers.scheduler import Scheduler, break_connection
from consumers.watchdog import STALL_AFTER_S, Progress, Watchdog, spans_of
from leaderboard import shards
from leaderboard.boards import Board
from leaderboard.catalog_watch import POLL_S, Watch
from leaderboard.errors import EXIT_FAILED, UserError
from leaderboard.keys import Keys
from leaderboard.moderation.view import View, pseudonymised
from leaderboard.redis_client import FAILURES
from leaderboard.settings import Settings
from schemas.model import Invalid, MatchWon, Reason

log = logging.getLogger(__name__)
_REDIS_OR_MOVED: tuple[type[BaseException], ...] = (*FAILURES, Moved)

_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 5.0
_IDLE_CHECK_S = 2.0
# Kafka transactional calls: a batch commits in milliseconds, so anything near these is an outage. On
# timeout the transaction is aborted (and the producer recreated when that fails too) and the batch retried.
_TX_TIMEOUT_S = 10.0
_ABORT_TIMEOUT_S = 5.0
_COMMITTED_TIMEOUT_S = 5.0
_KAFKA_FAILURES_BEFORE_NEW_PRODUCER = 2
# PostgreSQL: the server ends a statement after _PG_STATEMENT_S; a server that answers nothing (frozen,
# partitioned) is cut off by the watchdog after _PG_BREAK_S of continuous work on the batch connection
# (and by the TCP settings in consumers/clients.py).
_PG_STATEMENT_S = 8
_PG_BREAK_S = 10.0
_LATENCY_SAMPLES = 64
_CATCH_UP_CHECK_S = 0.5
_END_OFFSETS_TIMEOUT_S = 10.0
_MODERATION_CHECK_S = 0.5
"""How often an idle member looks for new moderation actions (a busy one looks before every batch)."""


class SinkError(Exception):
    def __init__(self, sink: str, cause: BaseException) -> None:
        super().__init__(f"{sink}: {cause}")
        self.sink = sink


class GroupMoved(Exception):
    """The batch's offsets carried a group generation a rebalance just replaced: retry, it is no outage."""


class OffsetsUnreadable(Exception):
    """The recheck after a failed commit could not read the group's committed offsets of the batch's
    partitions (pending from an earlier transaction, or the coordinator away): consumers.offset_probe."""

    def __init__(self, partitions: list[int], cause: KafkaException) -> None:
        super().__init__(f"committed offsets of partition(s) {partitions} unreadable: {cause}")
        self.partitions = partitions


# What the broker answers when offsets are sent with the generation a rebalance is replacing.
_GROUP_MOVED = frozenset(
    {KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS, KafkaError.UNKNOWN_MEMBER_ID}
)
_GROUP_MOVED_WAIT_S = 0.05


Letter = tuple[Record, str, str]
"""A record to dead-letter, with its reason and detail."""


def dead_letters(
    records: Sequence[Record],
    period_closed: Sequence[tuple[int, int, str]],
    refused: Sequence[tuple[Canonical, str]],
    too_old: Sequence[tuple[int, int, str]] = (),
) -> list[Letter]:
    """The batch's records that go to the dead-letter topic, in batch order, each with why."""
    closed = {(p, o): where for p, o, where in period_closed}
    old = {(p, o): detail for p, o, detail in too_old}
    sink_refused = {(rec.partition, rec.offset): why for rec, why in refused}
    letters: list[Letter] = []
    for r in records:
        at = (r.partition, r.offset)
        if isinstance(r.decoded, Invalid):
            letters.append((r, r.decoded.reason.value, r.decoded.detail))
        elif at in closed:
            letters.append((r, Reason.PERIOD_CLOSED.value, f"period {closed[at]} is closed"))
        elif at in sink_refused:
            letters.append((r, Reason.SINK_REJECTED.value, sink_refused[at]))
        elif at in old:
            letters.append((r, Reason.TOO_OLD.value, old[at]))
    return letters


def _batch_facts(
    records: Sequence[Record], outcome: pg_sink.Outcome, letters: int, updates: int
) -> dict[str, object]:
    """One committed batch for the debug log: per partition its first and last offset and how many records
    (fewer than the span: the batch skipped offsets), how PostgreSQL classified them and how many sorted-set
    updates Redis made (0 for canonical events: the watermarks said they were applied already)."""
    spans = spans_of((r.partition, r.offset) for r in records)
    counts = Counter(r.partition for r in records)
    return {
        "partitions": {str(p): [lo, hi - 1, counts[p]] for p, (lo, hi) in sorted(spans.items())},
        "canonical": len(outcome.canonical),
        "duplicates": outcome.duplicates,
        "dead_letters": letters,
        "redis_updates": updates,
    }


class NotCaughtUp(UserError):
    """``--until-caught-up`` ran out of time (or was stopped first): the CLI prints this one line, exit 1."""

    exit_code = EXIT_FAILED


class Processor:
    """One member of the group. ``clients`` defaults to the production ones (``Clients.for_settings``)."""

    def __init__(
        self,
        config: Settings,
        boards: Sequence[Board],
        metrics: ConsumerMetrics,
        clients: Clients | None = None,
    ) -> None:
        self.config = config
        self.boards = tuple(boards)
        self.metrics = metrics
        self.keys = Keys(config.redis_prefix)
        self.stopping = threading.Event()
        self.readiness = Readiness(metrics.ready)
        self.progress = Progress(time.monotonic())
        self._paused = False
        self._revocations: Counter[int] = Counter()
        """Times each partition was taken from this process; a batch keeps partitions never taken since."""
        self._pg: psycopg.Connection | None = None
        self._pg_long: psycopg.Connection | None = None
        self._clients = clients if clients is not None else Clients.for_settings(config)
        self._redis = self._clients.redis
        self.sink = RedisSink(self._redis, self.keys, self.boards)
        self.gens = Generations(self._redis, self.keys, self.boards)
        self.recomputer = Recomputer(self._redis, self.keys, self.boards)
        self.view: View | None = None
        """The moderation state this member's Redis writes honour (None: not loaded yet)."""
        self._watch = Watch(self.boards)
        """The boards file overlaid by the runtime catalog (leaderboard.catalog): polled, swapped between
        batches."""
        self._next_catalog_check = 0.0
        self._next_moderation_check = 0.0
        self.consumer: Consumer = self._clients.consumer
        self.producer = self._new_producer()
        self._kafka_failures = 0
        # Checkpoints and period closes run beside the poll loop, with their own connections and producer.
        self._scheduler = Scheduler(config, self.boards)
        self._next_idle_check = 0.0
        self._next_sample = 0.0
        self._next_catch_up_check = 0.0
        self._catch_up_seen: tuple[frozenset[int], dict[int, int]] = (frozenset(), {})
        self._lag_lock = threading.Lock()
        self._owned: set[int] = set()
        """Partitions assigned to this member, kept by the rebalance callbacks: they must not ask the
        consumer (``assignment()`` fails with _DESTROY when the callback runs inside ``close()``)."""
        self._lag_exported: set[int] = set()
        self._sampled: dict[int, tuple[int, int]] = {}
        """(high watermark, position) per owned partition, sampled by the loop every idle check."""
        self._owned_at: dict[int, float] = {}
        """When each owned partition was assigned (monotonic), for consumers.offset_probe."""
        self._probes = Probes()
        self.watchdog = Watchdog(
            self.progress,
            self.readiness,
            metrics,
            pg_busy=self._pg_busy,
            pg_break=self._pg_break,
            pg_bound=_PG_BREAK_S,
            export=self.export_lag,
        )

    @property
    def problem(self) -> str | None:
        """Why this member is not ready (for /readyz), or None."""
        return self.readiness.problem()

    # -- Kafka clients -------------------------------------------------------------------------------

    def _new_producer(self) -> TransactionalProducer:
        return self._clients.new_producer()

    def _replace_producer(self) -> None:
        """A new transactional producer; keeps the old one when the broker cannot be reached yet.

        The broken one then fails the next attempt at once, which comes back here after the backoff.
        """
        try:
            producer = self._new_producer()
        except KafkaException as exc:
            log.warning("cannot create a transactional producer yet", extra={"error": str(exc)[:300]})
            return
        self.producer = producer
        self._kafka_failures = 0

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        now = time.monotonic()
        with self._lag_lock:
            self._owned.update(tp.partition for tp in partitions)
            self._owned_at.update((tp.partition, now) for tp in partitions)
            owned = len(self._owned)
        # librdkafka keeps a partition's pause flag across revoke and re-assign: set it either way, or a
        # partition paused during a failed batch and handed back later would stay paused for good.
        (consumer.pause if self._paused else consumer.resume)(partitions)
        self.metrics.rebalances.labels("assign").inc()
        self.metrics.assigned.set(owned)
        log.info("partitions assigned", extra={"partitions": sorted(tp.partition for tp in partitions)})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition], kind: str = "revoke") -> None:
        consumer.incremental_unassign(partitions)
        self._revocations.update(tp.partition for tp in partitions)
        with self._lag_lock:
            for tp in partitions:
                self._owned.discard(tp.partition)
                self._owned_at.pop(tp.partition, None)
                self._sampled.pop(tp.partition, None)
                if tp.partition in self._lag_exported:
                    self._lag_exported.discard(tp.partition)
                    self.metrics.lag.remove(str(tp.partition))
            owned = len(self._owned)
        self.metrics.rebalances.labels(kind).inc()
        self.metrics.assigned.set(owned)
        log.info(f"partitions {kind}d", extra={"partitions": sorted(tp.partition for tp in partitions)})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._on_revoke(consumer, partitions, "lose")

    # -- sinks ------------------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        return self._clients.connect_pg()

    def _conn(self) -> psycopg.Connection:
        """The batch connection: every statement bounded by the server, the whole wait by the watchdog."""
        if self._pg is None or self._pg.closed or self._pg.broken:
            if self._pg is not None:
                self._pg.close()
            conn = self._connect()
            conn.execute(f"SET statement_timeout = {_PG_STATEMENT_S * 1000}")
            self._pg = conn
        return self._pg

    def _long_conn(self) -> psycopg.Connection:
        """For board rebuilds: no statement timeout (one snapshot read folds the whole event log)."""
        if self._pg_long is None or self._pg_long.closed or self._pg_long.broken:
            if self._pg_long is not None:
                self._pg_long.close()
            self._pg_long = self._connect()
        return self._pg_long

    def _pg_busy(self) -> bool:
        """Whether the batch connection has a statement or transaction in flight (read by the watchdog)."""
        conn = self._pg
        if conn is None or conn.closed:
            return False
        return conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def _pg_break(self) -> None:
        """Make the batch connection's blocked call fail now: shut its socket down under libpq.

        Called from the watchdog thread; the loop's call raises OperationalError, the batch is retried on a
        new connection (whose connect is bounded by connect_timeout).
        """
        break_connection(self._pg)

    def prepare(self) -> None:
        """Apply migrations; rebuild from PostgreSQL any board whose generation Redis lacks."""
        with psycopg.connect(self.config.database_url, connect_timeout=5, autocommit=True) as conn:
            migrate(conn)  # each migration in a transaction of its own
            conn.execute(f"SET statement_timeout = {_PG_STATEMENT_S * 1000}")
            self.reload_boards(conn, force=True)
        self.recover_missing()

    def reload_boards(self, conn: psycopg.Connection | None = None, *, force: bool = False) -> bool:
        """Take up the catalog's boards if it changed (one bounded read, on the batch connection unless
        given); True if the boards changed. Called between batches: a batch applies one set of definitions."""
        try:
            fresh = self._watch.poll(self._conn() if conn is None else conn, force=force)
        except psycopg.Error as exc:
            self.metrics.sink_errors.labels("postgres").inc()
            log.warning("cannot read the board catalog; keeping the boards", extra={"error": str(exc)[:300]})
            return False
        if fresh is None or fresh.fed == self.boards:
            return False
        self.set_boards(fresh.fed)
        return True

    def set_boards(self, boards: Sequence[Board]) -> None:
        """Work with these boards from the next batch on (what the sink saw accepted is kept)."""
        before = {b.id: b.version for b in self.boards}
        self.boards = tuple(boards)
        sink = RedisSink(self._redis, self.keys, self.boards)
        sink.seen, sink._names_seen = self.sink.seen, self.sink._names_seen  # noqa: SLF001 - same class
        self.sink = sink
        self.gens = Generations(self._redis, self.keys, self.boards)
        self.recomputer = Recomputer(self._redis, self.keys, self.boards)
        self._scheduler.boards = self.boards
        log.info(
            "boards reloaded",
            extra={"boards": {b.id: b.version for b in self.boards}, "before": before},
        )

    def _stale(self, stale: DefinitionStale) -> float:
        """A live write was refused by the definition fence: reload; if Redis holds an older version than
        the catalog's (its switch never completed, or a board came back), rebuild those boards. Returns
        how long to wait before the retry (longer while the catalog does not show the new version yet)."""
        log.info(
            "a live write met the definition fence; reloading the boards", extra={"boards": stale.boards}
        )
        self.reload_boards(force=True)
        mine = {b.id: b for b in self.boards}
        wait = 0.02
        for board_id, theirs in stale.boards.items():
            board = mine.get(board_id)
            if board is None:
                continue  # retired: no longer fed
            version = board.version or 0
            if theirs.isdigit() and int(theirs) > version:
                wait = 0.2  # the catalog's switch is not visible yet
            elif not self._rebuild(board, "Redis holds an older definition of the board; rebuilding"):
                wait = 0.5
        self.sink.forget()
        return wait

    def recover_missing(self) -> None:
        """Rebuild every board whose generation Redis lacks; one process does it, the others wait.

        No deadline: a member waits as long as the rebuild's lock is held (its holder renews it on a timer
        and the rebuild gives up by itself when it stops making progress); a lock that lapses with the
        board still missing is taken over.
        """
        while missing := self.gens.missing():
            for board_id in missing:
                board = next(b for b in self.boards if b.id == board_id)
                self.readiness.set("recovery", f"rebuilding board {board_id} from PostgreSQL")
                if self._rebuild(board, "board missing in Redis; rebuilding from PostgreSQL"):
                    self._load_names()  # Redis lost them too
            if self.gens.missing():
                if self.stopping.is_set():
                    raise RuntimeError("stopping while boards are missing in Redis")
                self.readiness.set("recovery", "waiting for another member to rebuild the boards")
                self._serve(0.5)  # another process is rebuilding
        self.sink.forget()  # rebuilt generations start at PostgreSQL's positions
        self.readiness.set("recovery", None)

    def repair(self, behind: RedisBehind) -> None:
        """Redis lost writes it had acknowledged (the sink noticed, see RedisBehind): rebuild those boards
        from PostgreSQL and copy the names back. Happens when Redis restarted from an AOF that lacked its
        last writes, or a cluster master died before its replica, promoted since, had received them."""
        for board in self.boards:
            if any(part.id in behind.boards for part in shards.parts(board)):  # a shard's id, if sharded
                self._rebuild(board, "Redis lost acknowledged writes; rebuilding from PostgreSQL")
        self._load_names()  # the lost writes may have carried names
        self.sink.forget()

    def _rebuild(self, board: Board, why: str) -> bool:
        """Rebuild one board from its checkpoint under its Redis lease; False if another process holds it."""
        lease = self.gens.lease(board.id)
        if lease is None:
            return False
        log.warning(why, extra={"board": board.id})
        self.metrics.recovering.set(1)
        try:
            self._in_background(
                lambda: rebuild_from_checkpoint(self.gens, self.sink, self._long_conn(), board, lease)
            )
            self.metrics.recoveries.inc()
        except LockLost as exc:  # the job stopped; whoever holds the lock now finishes the board
            log.error("rebuild stopped: its lock was lost", extra={"board": board.id, "error": str(exc)})  # noqa: TRY400
            return False
        finally:
            lease.release()
            self.metrics.recovering.set(0)
        return True

    def _in_background(self, job: Callable[[], object]) -> None:
        """Run ``job`` on a thread while this one keeps the group membership alive (poll), however long it
        takes: no ``max.poll.interval.ms`` cliff. Re-raises what the job raised."""
        failed: list[BaseException] = []

        def run() -> None:
            try:
                job()
            except BaseException as exc:
                failed.append(exc)

        worker = threading.Thread(target=run, name="rebuild", daemon=True)
        worker.start()
        while worker.is_alive():
            if self.stopping.is_set():
                worker.join(0.2)
            else:
                self._serve(0.2)
        if failed:
            raise failed[0]

    def _load_names(self) -> None:
        display_names.load(self._long_conn(), self._redis, self.keys)

    # -- the batch ----------------------------------------------------------------------------------------

    def moderate(self) -> View:
        """Bring this member's moderation view, and Redis with it, up to the newest action.

        One indexed ``max(seq)`` per call; only when it moved: load the (small) state, recompute the
        players of the new actions on every live generation, drop erased ids, record the seq Redis
        reflects. Every member does it (the recompute is absolute and watermark-guarded, so running it
        twice or beside another member's applies is harmless); a batch then applies with the new view.
        """
        try:
            fresh = sync(self._conn(), self.recomputer, self.view)
        except psycopg.Error as exc:
            raise SinkError("postgres", exc) from exc
        except _REDIS_OR_MOVED as exc:
            raise SinkError("redis", exc) from exc
        self.view = fresh
        return fresh

    def _keep(self, board: Board, rec: Canonical) -> bool:
        view = self.view
        return view is None or view.counts(rec.event, board.id)

    def _attempt(self, records: list[Record]) -> None:
        m = self.metrics
        view = self.moderate()
        valid = [
            Canonical(r.partition, r.offset, pseudonymised(view, r.decoded))
            for r in records
            if isinstance(r.decoded, MatchWon)
        ]
        t0 = time.perf_counter()
        try:
            # A record PostgreSQL refuses for its data is dead-lettered (sink_rejected), not retried forever.
            outcome, refused = pg_sink.write_isolating(self._conn(), valid, self.boards)
        except (psycopg.Error, UnicodeError) as exc:
            raise SinkError("postgres", exc) from exc
        t1 = time.perf_counter()
        m.stage.labels("postgres").observe(t1 - t0)
        pos = positions(records)
        try:
            keep = None if view is None or view.empty else self._keep  # nothing moderated: all count
            updates = self.sink.apply(outcome.canonical, pos=pos, names=outcome.names, keep=keep)
        except FAILURES as exc:  # on a cluster also RedisClusterException (no node for a slot)
            raise SinkError("redis", exc) from exc
        t2 = time.perf_counter()
        m.stage.labels("redis").observe(t2 - t1)
        now = time.time()
        step = max(1, len(records) // _LATENCY_SAMPLES)  # a sample per batch: observe() per event costs ~5%
        for rec in records[::step]:
            m.visible_latency.observe(max(0.0, now - rec.timestamp_ms / 1000))
        letters = dead_letters(records, outcome.period_closed, refused, outcome.too_old)
        self._commit(letters, {p: o + 1 for p, o in pos.items()})
        if log.isEnabledFor(logging.DEBUG):  # what a lost or doubled event is traced back to
            log.debug("batch committed", extra=_batch_facts(records, outcome, len(letters), updates))
        m.stage.labels("commit").observe(time.perf_counter() - t2)
        m.last_commit.set(time.time())
        m.consumed.inc(len(records))
        m.applied.inc(len(outcome.canonical))
        m.duplicates.inc(outcome.duplicates)
        for _, reason, _ in letters:
            m.dead_lettered.labels(reason).inc()

    def _commit(self, letters: list[Letter], offsets: dict[int, int]) -> None:
        """One Kafka transaction: the dead letters and the consumed offsets, or neither."""
        try:
            self.producer.begin_transaction()
            for r, reason, detail in letters:
                letter = dlq.dead_letter(
                    key=r.key,
                    value=r.value,
                    reason=reason,
                    detail=detail,
                    topic=r.topic,
                    partition=r.partition,
                    offset=r.offset,
                    timestamp_ms=r.timestamp_ms,
                )
                self.producer.produce(
                    self.config.dlq_topic, letter.value, letter.key, headers=list(letter.headers)
                )
            self.producer.send_offsets_to_transaction(
                [TopicPartition(self.config.topic, p, o) for p, o in offsets.items()],
                self.consumer.consumer_group_metadata(),
                _TX_TIMEOUT_S,
            )
            self.producer.commit_transaction(_TX_TIMEOUT_S)
        except KafkaException as exc:
            self._abort(exc)
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() in _GROUP_MOVED:
                raise GroupMoved(str(err)) from exc
            raise SinkError("kafka", exc) from exc

    def _abort(self, exc: KafkaException) -> None:
        err = exc.args[0] if exc.args else None
        try:
            if isinstance(err, KafkaError) and err.fatal():
                raise exc
            self.producer.abort_transaction(_ABORT_TIMEOUT_S)
        except KafkaException as abort_exc:
            log.warning(
                "transactional producer unusable; creating a new one",
                extra={"error": str(exc)[:300], "abort_error": str(abort_exc)[:300]},
            )
            self._replace_producer()

    def handle(self, records: list[Record]) -> bool:
        """Process one batch until it is committed; False if it was given up (stop or revocation)."""
        self.metrics.batch_size.observe(len(records))
        spans = spans_of((r.partition, r.offset) for r in records)
        self.progress.begin(time.monotonic(), len(records), spans)
        committed = False
        try:
            committed = self._until_committed(records)
        finally:
            self.progress.end(time.monotonic(), committed)
        return committed

    def _until_committed(self, records: list[Record]) -> bool:  # noqa: C901 - one branch per failure kind
        backoff, moved_wait = _BACKOFF_MIN_S, _GROUP_MOVED_WAIT_S
        taken = dict(self._revocations)
        recheck = False
        while records := self._still_ours(records, taken):
            wait = 0.0
            try:
                self._commit_once(records, recheck)
            except GroupMoved as exc:
                # Let poll() finish the rebalance, then redo the batch (idempotent) for what is still ours:
                # a short wait and no not-ready, since every scale-up or deploy does this.
                log.info("batch commit raced a rebalance; retrying", extra={"error": str(exc)[:300]})
                wait, moved_wait = moved_wait, min(moved_wait * 2, _BACKOFF_MAX_S)
            except DefinitionStale as stale:
                self.readiness.set("batch", "a board's definition changed; reloading")
                self._pause()
                wait = self._stale(stale)
            except RedisLost:
                self.readiness.set("batch", "Redis lost the boards; rebuilding")
                self._pause()
                self.recover_missing()
                continue
            except RedisBehind as behind:
                self.readiness.set("batch", "Redis lost acknowledged writes; repairing from PostgreSQL")
                self._pause()
                try:
                    self.repair(behind)
                except FAILURES as exc:  # Redis failed again: the retried batch notices the loss again
                    self._failed(SinkError("redis", exc))
                    wait, backoff = backoff, min(backoff * 2, _BACKOFF_MAX_S)
                else:
                    continue  # the batch again: PostgreSQL and the rebuilt boards have it, Kafka not yet
            except OffsetsUnreadable as exc:
                # Not the producer's fault: no new producer. Offsets pending under our own producer id
                # (a replaced producer's late commit) never resolve by themselves: clear them.
                self.metrics.sink_errors.labels("kafka").inc()
                self.readiness.set("batch", "kafka: committed offsets unreadable; retrying")
                log.warning("batch failed; will retry", extra={"sink": "kafka", "error": str(exc)[:300]})
                if self._probes.clear_due(time.monotonic()):
                    self._clear_pending(exc.partitions)
                wait, backoff = backoff, min(backoff * 2, _BACKOFF_MAX_S)
            except (SinkError, KafkaException) as exc:
                recheck = self._failed(exc)
                wait, backoff = backoff, min(backoff * 2, _BACKOFF_MAX_S)
            else:
                self._batch_done()
                return True
            if not self._hold(wait):
                return False
        return False

    def _still_ours(self, records: list[Record], taken: dict[int, int]) -> list[Record]:
        """The batch's records on partitions not taken from this member since the batch began.

        A partition taken away while the batch waited went to another member, even if it is back now: that
        member may have committed past these records, and committing them again would rewind it.
        """
        records = [r for r in records if self._revocations[r.partition] == taken.get(r.partition, 0)]
        if not records and self._paused and not self.stopping.is_set():
            self._resume()  # nothing of this batch is left to retry; paused, it would wait forever
        return records

    def _commit_once(self, records: list[Record], recheck: bool) -> None:
        """One attempt at the batch; after a failed commit, first what of it the group has not committed.

        Trims ``records`` in place to what is left, so later retries do not redo what had landed.
        """
        if recheck:
            # A commit that timed out may still have landed: retrying it would dead-letter twice.
            try:
                records[:] = self._not_committed(records)
            except KafkaException as exc:
                raise OffsetsUnreadable(sorted({r.partition for r in records}), exc) from exc
            if not records:
                log.info("the failed commit had landed; batch done")
                self.metrics.last_commit.set(time.time())
                return
        self._attempt(records)

    def _batch_done(self) -> None:
        self._kafka_failures = 0
        if self._paused:
            self._resume()
        self.readiness.set("batch", None)

    def _failed(self, exc: SinkError | KafkaException) -> bool:
        """Count and report a failed attempt; True when its commit may have landed (recheck first)."""
        sink = exc.sink if isinstance(exc, SinkError) else "kafka"
        if sink == "kafka":
            self._kafka_failures += 1
            if self._kafka_failures >= _KAFKA_FAILURES_BEFORE_NEW_PRODUCER:
                self._replace_producer()  # a fresh one finds the transaction coordinator anew
        self.metrics.sink_errors.labels(sink).inc()
        self.readiness.set("batch", f"{sink} unavailable: retrying")
        log.warning("batch failed; will retry", extra={"sink": sink, "error": str(exc)[:300]})
        return sink == "kafka"

    def _committed(self, partitions: Iterable[int]) -> dict[int, int]:
        """The group's committed offsets of these partitions (those it has); KafkaException on timeout."""
        tps = bounded(
            "committed",
            _COMMITTED_TIMEOUT_S,
            self.consumer.committed,
            [TopicPartition(self.config.topic, p) for p in sorted(partitions)],
            _COMMITTED_TIMEOUT_S,
        )
        return {tp.partition: tp.offset for tp in tps if tp.error is None and tp.offset >= 0}

    def _not_committed(self, records: list[Record]) -> list[Record]:
        """The records at or past the group's committed offsets (raises KafkaException on timeout)."""
        done = self._committed({r.partition for r in records})
        return [r for r in records if r.offset >= done.get(r.partition, -1)]

    def _sample_offsets(self, probe: bool = False) -> None:
        """Cache high watermarks and positions for ``export_lag`` (the loop's thread: librdkafka calls
        from the watchdog thread can block behind a rebalance callback). At most every _IDLE_CHECK_S.

        With ``probe`` (between batches), owned partitions still without a position are probed
        (consumers.offset_probe)."""
        now = time.monotonic()
        if now < self._next_sample:
            return
        self._next_sample = now + _IDLE_CHECK_S
        assignment = self.consumer.assignment()
        sampled: dict[int, tuple[int, int]] = {}
        for tp in self.consumer.position(assignment) if assignment else []:
            try:
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            sampled[tp.partition] = (high, tp.offset)
        with self._lag_lock:
            owned_at = dict(self._owned_at)
        self._probes.forget({p for p in self._probes.unreadable if p not in owned_at})
        self._probes.forget({p for p, (_, pos) in sampled.items() if pos >= 0})
        if probe:
            sampled.update(self._probe(plan(owned_at, {p: pos for p, (_, pos) in sampled.items()}, now)))
        with self._lag_lock:
            self._sampled = {p: v for p, v in sampled.items() if p in self._owned}
        if not probe:
            return
        stuck = self._probes.stuck(now, STALL_AFTER_S)
        self.readiness.set(
            "offsets",
            f"committed offsets of partition(s) {stuck} unreadable for over {STALL_AFTER_S:.0f} s"
            if stuck
            else None,
        )
        if due := self._probes.to_clear(now):
            self._clear_pending(due)

    def _probe(self, partitions: list[int]) -> dict[int, tuple[int, int]]:
        """(high watermark, committed offset or log start) of the partitions whose committed offset reads
        back stable; the others are counted unreadable (``export_lag`` counts them as waiting)."""
        if not partitions:
            return {}
        tps = [TopicPartition(self.config.topic, p) for p in partitions]
        try:
            got = bounded("committed", PROBE_TIMEOUT_S, self.consumer.committed, tps, PROBE_TIMEOUT_S)
        except KafkaException:
            got = []
        out: dict[int, tuple[int, int]] = {}
        for tp in got:
            if tp.error is not None:
                continue
            try:
                low, high = self.consumer.get_watermark_offsets(tp, PROBE_TIMEOUT_S, False)
            except KafkaException:
                continue
            out[tp.partition] = (high, tp.offset if tp.offset >= 0 else low)
        self._probes.record(time.monotonic(), set(out), set(partitions) - set(out))
        return out

    def _clear_pending(self, partitions: list[int]) -> None:
        """Abort an empty transaction holding offsets of these partitions: its marker drops the offsets
        pending under this member's producer id (consumers.offset_probe). Never commits anything."""
        log.warning(
            "committed offsets of owned partitions cannot be read (pending from an earlier transaction); "
            "writing an abort marker to clear them",
            extra={"partitions": partitions},
        )
        try:
            self.producer.begin_transaction()
            self.producer.send_offsets_to_transaction(
                [TopicPartition(self.config.topic, p, 0) for p in partitions],
                self.consumer.consumer_group_metadata(),
                _TX_TIMEOUT_S,
            )
            self.producer.abort_transaction(_ABORT_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("clearing pending offsets failed", extra={"error": str(exc)[:300]})
            self._abort(exc)

    def export_lag(self) -> int:
        """Lag per owned partition, and the total; the watchdog calls it, so lag is exported mid-batch too.

        A partition in the uncommitted batch counts from the batch's first offset, so records read but
        stuck count as lag; others count from the position. No librdkafka call here: cached samples.
        """
        batch = self.progress.batch
        spans = batch.spans if batch is not None else {}
        total = 0
        with self._lag_lock:
            # A committed offset that cannot be read: lag unknown, but the partition cannot progress.
            total += sum(1 for p in list(self._probes.unreadable) if p in self._owned)
            # The batch's partitions count even when not sampled (a sample fails while a broker is away).
            for p in self._sampled.keys() | spans.keys():
                sampled_high, sampled_position = self._sampled.get(p, (-1, -1))
                span = spans.get(p)
                high = sampled_high if span is None else max(sampled_high, span[1])
                position = sampled_position if span is None else span[0]
                if p in self._owned and position >= 0 and high >= 0:
                    lag = max(0, high - position)
                    self.metrics.lag.labels(str(p)).set(lag)
                    self._lag_exported.add(p)
                    total += lag
        return total

    def _hold(self, seconds: float) -> bool:
        """Pause fetching and keep the membership alive for a while before a retry; False when stopping."""
        self._pause()
        if self.stopping.is_set():
            return False
        self._serve(seconds)
        return True

    def _pause(self) -> None:
        if not self._paused:
            self.consumer.pause(self.consumer.assignment())
            self._paused = True

    def _resume(self) -> None:
        self.consumer.resume(self.consumer.assignment())
        self._paused = False

    def _serve(self, seconds: float) -> None:
        """Wait while keeping group membership alive (rebalance callbacks run inside poll)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self.stopping.is_set():
            self.progress.alive(time.monotonic())
            self._sample_offsets()  # lag stays current while a batch waits to be retried
            msg = self.consumer.poll(min(left, 0.2))
            if msg is not None and msg.error() is None:
                # A partition assigned between pause and poll: rewind so nothing is skipped.
                tp = TopicPartition(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
                log.debug(
                    "record fetched while paused; rewound to it",
                    extra={"partition": tp.partition, "offset": tp.offset},
                )
                self.consumer.seek(tp)
                self.consumer.pause([tp])

    def _idle_checks(self) -> None:
        now = time.monotonic()
        if now >= self._next_catalog_check:
            self._next_catalog_check = now + POLL_S
            if self.reload_boards() and self.gens.missing():
                self._next_idle_check = 0.0  # a board new to this member: load it now
        if now >= self._next_moderation_check:
            self._next_moderation_check = now + _MODERATION_CHECK_S
            try:
                self.moderate()
                self.readiness.set("moderation", None)
            except SinkError as exc:
                # Counted like a batch's failure: a server that fails between batches shows at once.
                self.metrics.sink_errors.labels(exc.sink).inc()
                self.readiness.set("moderation", f"moderation not applied: {exc}")
        if now < self._next_idle_check:
            return
        self._next_idle_check = now + _IDLE_CHECK_S
        try:
            if self.gens.missing():
                # Paused while the rebuild runs: _serve() keeps the membership alive by polling, and a record
                # it fetched would pause its partition for good (nothing resumes it outside a batch).
                self._pause()
                try:
                    self.recover_missing()
                finally:
                    self._resume()
            self.readiness.set("idle", None)
        except FAILURES as exc:
            self.metrics.sink_errors.labels("redis").inc()
            self.readiness.set("idle", f"redis unavailable: {exc}")
        self._sample_offsets(probe=True)

    def run(self, until_caught_up: bool = False, timeout_s: float | None = None) -> None:
        """Consume until stopped. With ``until_caught_up``: until the group committed what the topic held at
        the start, on this member's partitions (see consumers/catchup.py); otherwise, or after ``timeout_s``,
        or on a signal first, NotCaughtUp."""
        catch_up = None
        if until_caught_up:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            catch_up = CatchUp(self._end_offsets(), deadline)
            if timeout_s is not None:
                # Enforced even while a batch retries an outage: the loop gives the batch up and stops.
                timer = threading.Timer(timeout_s, self.stopping.set)
                timer.daemon = True
                timer.start()
        self.prepare()
        self._scheduler.start()
        self.consumer.subscribe(
            [self.config.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self.metrics.last_commit.set(time.time())
        self.progress.alive(time.monotonic())
        self.watchdog.start()
        self.readiness.set("start", None)
        log.info("consumer started", extra={"topic": self.config.topic, "group": self.config.consumer_group})
        try:
            while not self.stopping.is_set():
                self._step()
                if catch_up is not None and self._reached(catch_up):
                    log.info("caught up with the end offsets seen at the start; stopping")
                    return
            if catch_up is not None:
                raise self._not_caught_up(catch_up)
        finally:
            self.close()

    def _step(self) -> None:
        self.progress.alive(time.monotonic())
        messages = self.consumer.consume(self.config.batch_size, self.config.batch_timeout_ms / 1000)
        t0 = time.perf_counter()
        records = mark_uncountable(decode_messages(messages, self.config.max_future_skew_s), self.boards)
        if records:
            self.metrics.stage.labels("decode").observe(time.perf_counter() - t0)
            self.handle(records)
        self._idle_checks()

    # -- --until-caught-up ------------------------------------------------------------------------------

    def _end_offsets(self) -> dict[int, int]:
        """The topic's end offsets now (each call bounded by librdkafka's timeout)."""
        topic = self.config.topic
        try:
            meta = self.consumer.list_topics(topic, timeout=_END_OFFSETS_TIMEOUT_S).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise UserError(f"topic {topic} not found: nothing to catch up with")
            return {
                p: self.consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=_END_OFFSETS_TIMEOUT_S
                )[1]
                for p in meta.partitions
            }
        except KafkaException as exc:
            raise UserError(f"cannot read the end offsets of {topic}: {exc}") from exc

    def _reached(self, catch_up: CatchUp) -> bool:
        """Whether the target is reached; asks the broker at most every _CATCH_UP_CHECK_S."""
        now = time.monotonic()
        if now < self._next_catch_up_check:
            return False
        self._next_catch_up_check = now + _CATCH_UP_CHECK_S
        with self._lag_lock:
            owned = frozenset(self._owned)
        try:
            done = self._committed(owned) if owned else {}
        except KafkaException as exc:
            log.warning("cannot read committed offsets; will retry", extra={"error": str(exc)[:300]})
            return False
        self._catch_up_seen = (owned, done)
        return catch_up.reached(owned, done)

    def _not_caught_up(self, catch_up: CatchUp) -> NotCaughtUp:
        owned, done = self._catch_up_seen
        why = "timed out" if catch_up.expired(time.monotonic()) else "stopped by a signal"
        if not owned:
            return NotCaughtUp(f"{why} before catching up: this member was assigned no partition")
        behind = ", ".join(f"{p}: {c}/{e}" for p, (c, e) in catch_up.behind(owned, done).items())
        return NotCaughtUp(f"{why} before catching up; partition: committed/target {behind}")

    def close(self) -> None:
        log.info("consumer stopping: leaving the group")
        self.watchdog.stop()
        try:
            self.consumer.close()
        finally:
            self.producer.flush(5)
            self._scheduler.stop()
            self._redis.close()
            for conn in (self._pg, self._pg_long):
                if conn is not None:
                    conn.close()

    def install_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            del frame
            log.info("signal received; finishing the batch", extra={"signal": signum})
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
