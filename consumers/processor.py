"""The stream processor: one member of the consumer group, applying batches exactly once.

Per batch: decode -> PostgreSQL (append, decide canonical copies; one transaction) -> Redis (apply.lua,
idempotent by watermark) -> one Kafka transaction holding the dead letters AND the consumed offsets.
Offsets therefore move only after both sinks have the batch, and dead letters appear exactly once for
read_committed readers. Any failure aborts the Kafka transaction, pauses the partitions and retries the same
batch with backoff (both sinks are idempotent), so outages lose and double nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from types import FrameType

import psycopg
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from consumers import dlq, pg_sink
from consumers.decoded import Record, decode_messages
from consumers.generations import Generations, rebuild_from_checkpoint
from consumers.lease import LockLost
from consumers.metrics import ConsumerMetrics
from consumers.migrate import migrate
from consumers.plan import Canonical, positions
from consumers.redis_sink import RedisLost, RedisSink
from consumers.scheduler import Scheduler
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.settings import Settings
from schemas.model import Invalid, MatchWon, Reason

log = logging.getLogger(__name__)

_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 5.0
_IDLE_CHECK_S = 2.0
_TX_TIMEOUT_S = 30.0
_LATENCY_SAMPLES = 64


class SinkError(Exception):
    def __init__(self, sink: str, cause: BaseException) -> None:
        super().__init__(f"{sink}: {cause}")
        self.sink = sink


class GroupMoved(Exception):
    """The batch's offsets carried a group generation a rebalance just replaced: retry, it is no outage."""


# What the broker answers when offsets are sent with the generation a rebalance is replacing.
_GROUP_MOVED = frozenset(
    {KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS, KafkaError.UNKNOWN_MEMBER_ID}
)
_GROUP_MOVED_WAIT_S = 0.05


class Processor:
    def __init__(self, config: Settings, boards: Sequence[Board], metrics: ConsumerMetrics) -> None:
        self.config = config
        self.boards = tuple(boards)
        self.metrics = metrics
        self.keys = Keys(config.redis_prefix)
        self.stopping = threading.Event()
        self.problem: str | None = "starting"
        self._paused = False
        self._revocations: Counter[int] = Counter()
        """Times each partition was taken from this process; a batch keeps partitions never taken since."""
        self._pg: psycopg.Connection | None = None
        self._redis = redis.Redis.from_url(config.redis_url, socket_timeout=10, socket_connect_timeout=3)
        self.sink = RedisSink(self._redis, self.keys, self.boards)
        self.gens = Generations(self._redis, self.keys, self.boards)
        common = config.kafka_common()
        self.consumer = Consumer(
            {
                **common,
                "group.id": config.consumer_group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "isolation.level": "read_committed",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 250,  # members hear of rebalances sooner, for tiny requests
                "max.poll.interval.ms": 600_000,
                "fetch.wait.max.ms": 50,
            }
        )
        self.producer = self._new_producer()
        # Checkpoints and period closes run beside the poll loop, with their own connections and producer.
        self._scheduler = Scheduler(config, self.boards)
        self._next_idle_check = 0.0
        self._redis_suspect = False
        self._applied_hi: dict[int, int] = {}
        """Last offset per partition this process saw Redis accept: Redis going below it lost writes."""

    # -- Kafka clients -------------------------------------------------------------------------------

    def _new_producer(self) -> Producer:
        producer = Producer(
            {
                **self.config.kafka_common(),
                "transactional.id": f"{self.config.consumer_group}-{uuid.uuid4().hex}",
                "linger.ms": 5,
                # A SIGKILLed member leaves its open transaction behind; its offsets block the partitions
                # (KIP-447) until the broker aborts it, so keep this short: batches commit in milliseconds.
                "transaction.timeout.ms": 10_000,
            }
        )
        producer.init_transactions(_TX_TIMEOUT_S)
        return producer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        # librdkafka keeps a partition's pause flag across revoke and re-assign: set it either way, or a
        # partition paused during a failed batch and handed back later would stay paused for good.
        (consumer.pause if self._paused else consumer.resume)(partitions)
        self.metrics.rebalances.labels("assign").inc()
        self.metrics.assigned.set(len(consumer.assignment()))
        log.info("partitions assigned", extra={"partitions": sorted(tp.partition for tp in partitions)})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition], kind: str = "revoke") -> None:
        consumer.incremental_unassign(partitions)
        self._revocations.update(tp.partition for tp in partitions)
        for tp in partitions:
            self.metrics.lag.remove(str(tp.partition)) if (
                str(tp.partition),
            ) in self.metrics.lag._metrics else None
        self.metrics.rebalances.labels(kind).inc()
        self.metrics.assigned.set(len(consumer.assignment()))
        log.info(f"partitions {kind}d", extra={"partitions": sorted(tp.partition for tp in partitions)})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._on_revoke(consumer, partitions, "lose")

    # -- sinks ------------------------------------------------------------------------------------------

    def _conn(self) -> psycopg.Connection:
        if self._pg is None or self._pg.closed or self._pg.broken:
            self._pg = psycopg.connect(self.config.database_url, autocommit=True, connect_timeout=5)
        return self._pg

    def prepare(self) -> None:
        """Apply migrations; rebuild from PostgreSQL any board whose generation Redis lacks."""
        with psycopg.connect(self.config.database_url, connect_timeout=5) as conn:
            migrate(conn)
        self.recover_missing()

    def recover_missing(self) -> None:
        """Rebuild every board whose generation Redis lacks; one process does it, the others wait.

        No deadline: a member waits as long as the rebuild's lock is held (its holder renews it on a timer
        and the rebuild gives up by itself when it stops making progress); a lock that lapses with the
        board still missing is taken over.
        """
        while missing := self.gens.missing():
            for board_id in missing:
                board = next(b for b in self.boards if b.id == board_id)
                self.problem = f"rebuilding board {board_id} from PostgreSQL"
                if self._rebuild(board, "board missing in Redis; rebuilding from PostgreSQL"):
                    self._load_names()
            if self.gens.missing():
                if self.stopping.is_set():
                    raise RuntimeError("stopping while boards are missing in Redis")
                self._serve(0.5)  # another process is rebuilding

    def check_regression(self) -> None:
        """Rebuild boards whose Redis position fell below what this process saw applied.

        That happens when Redis crashed and restarted from an AOF that lacked its last writes.
        """
        for board in self.boards:
            gen = self.gens.active(board.id)
            if gen is None:
                continue
            hi = {int(p): int(o) for p, o in self._redis.hgetall(self.keys.position(board.id, gen)).items()}
            if any(hi.get(p, -1) < o for p, o in self._applied_hi.items()):
                self._rebuild(board, "Redis lost recent writes; rebuilding from PostgreSQL")

    def _rebuild(self, board: Board, why: str) -> bool:
        """Rebuild one board from its checkpoint under its Redis lease; False if another process holds it."""
        lease = self.gens.lease(board.id)
        if lease is None:
            return False
        log.warning(why, extra={"board": board.id})
        self.metrics.recovering.set(1)
        try:
            self._in_background(
                lambda: rebuild_from_checkpoint(self.gens, self.sink, self._conn(), board, lease)
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
        conn = self._conn()
        with conn.cursor() as cur:
            cur.execute("SELECT player_id, display_name FROM players WHERE display_name IS NOT NULL")
            while rows := cur.fetchmany(10_000):
                self._redis.hset(self.keys.names(), mapping=dict(rows))

    # -- the batch ----------------------------------------------------------------------------------------

    def _attempt(self, records: list[Record]) -> None:
        m = self.metrics
        valid = [
            Canonical(r.partition, r.offset, r.decoded) for r in records if isinstance(r.decoded, MatchWon)
        ]
        t0 = time.perf_counter()
        try:
            outcome = pg_sink.write_batch(self._conn(), valid, self.boards)
        except psycopg.Error as exc:
            raise SinkError("postgres", exc) from exc
        t1 = time.perf_counter()
        m.stage.labels("postgres").observe(t1 - t0)
        pos = positions(records)
        try:
            self.sink.apply(outcome.canonical, pos=pos)
        except redis.RedisError as exc:
            raise SinkError("redis", exc) from exc
        for p, o in pos.items():
            self._applied_hi[p] = max(self._applied_hi.get(p, -1), o)
        t2 = time.perf_counter()
        m.stage.labels("redis").observe(t2 - t1)
        now = time.time()
        step = max(1, len(records) // _LATENCY_SAMPLES)  # a sample per batch: observe() per event costs ~5%
        for rec in records[::step]:
            m.visible_latency.observe(max(0.0, now - rec.timestamp_ms / 1000))
        closed = {(p, o): where for p, o, where in outcome.period_closed}
        letters = []
        for r in records:
            if isinstance(r.decoded, Invalid):
                letters.append((r, r.decoded.reason.value, r.decoded.detail))
            elif (r.partition, r.offset) in closed:
                where = closed[(r.partition, r.offset)]
                letters.append((r, Reason.PERIOD_CLOSED.value, f"period {where} is closed"))
        offsets = {p: o + 1 for p, o in pos.items()}
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
        m.stage.labels("commit").observe(time.perf_counter() - t2)
        m.last_commit.set(time.time())
        m.consumed.inc(len(records))
        m.applied.inc(len(outcome.canonical))
        m.duplicates.inc(outcome.duplicates)
        for _, reason, _ in letters:
            m.dead_lettered.labels(reason).inc()

    def _abort(self, exc: KafkaException) -> None:
        err = exc.args[0] if exc.args else None
        try:
            if isinstance(err, KafkaError) and err.fatal():
                raise exc
            self.producer.abort_transaction(_TX_TIMEOUT_S)
        except KafkaException:
            log.warning("transactional producer unusable; creating a new one", exc_info=True)
            self.producer = self._new_producer()

    def handle(self, records: list[Record]) -> bool:
        """Process one batch until it is committed; False if it was given up (stop or revocation)."""
        backoff, moved_wait = _BACKOFF_MIN_S, _GROUP_MOVED_WAIT_S
        self.metrics.batch_size.observe(len(records))
        taken = dict(self._revocations)
        while True:
            # A partition taken away while the batch waited went to another member, even if it is back now:
            # that member may have committed past these records, and committing them again would rewind it.
            records = [r for r in records if self._revocations[r.partition] == taken.get(r.partition, 0)]
            if not records:
                if self._paused and not self.stopping.is_set():
                    self._resume()  # nothing of this batch is left to retry; paused, it would wait forever
                return False
            try:
                self._attempt(records)
            except GroupMoved as exc:
                # Let poll() finish the rebalance, then redo the batch (idempotent) for what is still ours:
                # a short wait and no not-ready, since every scale-up or deploy does this.
                log.info("batch commit raced a rebalance; retrying", extra={"error": str(exc)[:300]})
                if not self._hold(moved_wait):
                    return False
                moved_wait = min(moved_wait * 2, _BACKOFF_MAX_S)
                continue
            except RedisLost:
                self.problem = "Redis lost the boards; rebuilding"
                self._pause()
                self.recover_missing()
                continue
            except SinkError as exc:
                if exc.sink == "redis":
                    self._redis_suspect = True
                self.metrics.sink_errors.labels(exc.sink).inc()
                self.metrics.ready.set(0)
                self.problem = f"{exc.sink} unavailable: retrying"
                log.warning("batch failed; will retry", extra={"sink": exc.sink, "error": str(exc)[:300]})
                if not self._hold(backoff):
                    return False
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            if self._paused:
                self._resume()
            if self._redis_suspect:
                self._redis_suspect = False
                self.check_regression()
            self.metrics.ready.set(1)
            self.problem = None
            return True

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
            msg = self.consumer.poll(min(left, 0.2))
            if msg is not None and msg.error() is None:
                # A partition assigned between pause and poll: rewind so nothing is skipped.
                tp = TopicPartition(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
                self.consumer.seek(tp)
                self.consumer.pause([tp])

    def _idle_checks(self) -> None:
        now = time.monotonic()
        if now < self._next_idle_check:
            return
        self._next_idle_check = now + _IDLE_CHECK_S
        try:
            if self.gens.missing():
                self.recover_missing()
            self.problem = None if self.metrics.ready._value.get() == 1 else self.problem
        except redis.RedisError as exc:
            self.problem = f"redis unavailable: {exc}"
        assignment = self.consumer.assignment()
        if assignment:
            for tp in self.consumer.position(assignment):
                try:
                    _, high = self.consumer.get_watermark_offsets(tp, timeout=1, cached=True)
                except KafkaException:
                    continue
                if tp.offset >= 0 and high >= 0:
                    self.metrics.lag.labels(str(tp.partition)).set(max(0, high - tp.offset))

    def run(self) -> None:
        self.prepare()
        self._scheduler.start()
        self.consumer.subscribe(
            [self.config.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self.metrics.ready.set(1)
        self.problem = None
        log.info("consumer started", extra={"topic": self.config.topic, "group": self.config.consumer_group})
        try:
            while not self.stopping.is_set():
                messages = self.consumer.consume(self.config.batch_size, self.config.batch_timeout_ms / 1000)
                t0 = time.perf_counter()
                records = decode_messages(messages)
                if records:
                    self.metrics.stage.labels("decode").observe(time.perf_counter() - t0)
                    self.handle(records)
                self._idle_checks()
        finally:
            self.close()

    def close(self) -> None:
        log.info("consumer stopping: leaving the group")
        try:
            self.consumer.close()
        finally:
            self.producer.flush(5)
            self._scheduler.stop()
            self._redis.close()
            if self._pg is not None:
                self._pg.close()

    def install_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            del frame
            log.info("signal received; finishing the batch", extra={"signal": signum})
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
