"""The consumer's Prometheus metrics. Names follow Prometheus conventions (units, _total)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000)


@dataclass
class ConsumerMetrics:
    # One statement per metric on purpose, though their shapes repeat: each is a typed attribute the code
    # names (metrics.applied.inc()); a table of names would give untyped lookups by string instead.
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.consumed = Counter(
            "leaderboard_consumer_events_consumed", "Records read from the topic.", registry=r
        )
        self.applied = Counter(
            "leaderboard_consumer_events_applied", "Canonical events applied to the boards.", registry=r
        )
        self.duplicates = Counter(
            "leaderboard_consumer_events_duplicate",
            "Valid records whose event_id was already stored (not counted again).",
            registry=r,
        )
        self.dead_lettered = Counter(
            "leaderboard_consumer_events_dead_lettered",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "leaderboard_consumer_batch_size_events", "Records per batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.stage = Histogram(
            "leaderboard_consumer_stage_duration_seconds",
            "Time per batch stage (decode, postgres, redis, commit).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.visible_latency = Histogram(
            "leaderboard_consumer_visible_latency_seconds",
            "From the record's Kafka timestamp to its win being visible on the boards.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "leaderboard_consumer_lag_messages",
            "Records between this member's last committed offset and the partition's high watermark "
            "(exported by the watchdog thread, so also while a batch is stuck).",
            ["partition"],
            registry=r,
        )
        self.sink_errors = Counter(
            "leaderboard_consumer_sink_errors",
            "Failed calls to a sink by the batch loop (a batch's write, or the catalog and moderation"
            " reads between batches), by sink.",
            ["sink"],
            registry=r,
        )
        self.rebalances = Counter(
            "leaderboard_consumer_rebalances", "Partition assignment changes, by kind.", ["kind"], registry=r
        )
        self.assigned = Gauge(
            "leaderboard_consumer_assigned_partitions", "Partitions this process owns.", registry=r
        )
        self.ready = Gauge(
            "leaderboard_consumer_ready",
            "1 when ready; 0 while a batch retries, is stalled, or boards are being recovered.",
            registry=r,
        )
        self.recoveries = Counter(
            "leaderboard_consumer_redis_recoveries", "Rebuilds of boards after Redis lost them.", registry=r
        )
        self.recovering = Gauge(
            "leaderboard_consumer_redis_recovery_in_progress",
            "1 while rebuilding boards Redis lost.",
            registry=r,
        )
        self.last_commit = Gauge(
            "leaderboard_consumer_last_commit_timestamp_seconds",
            "When offsets were last committed (the start time until the first commit).",
            registry=r,
        )
        self.batch_age = Gauge(
            "leaderboard_consumer_batch_age_seconds",
            "How long the batch in progress has been waiting to commit; 0 between batches.",
            registry=r,
        )
        self.stalls = Counter(
            "leaderboard_consumer_stalls",
            "Batches not committed within the stall bound, or batch-loop blockages (member not-ready).",
            registry=r,
        )
