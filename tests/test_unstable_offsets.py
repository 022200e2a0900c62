"""A member whose committed offsets are held unstable by a pending transaction says so (G6, issue 12).

With isolation.level=read_committed librdkafka fetches a partition's committed offset with require_stable:
while a transaction holds pending offsets of the group on it, the broker answers UNSTABLE_OFFSET_COMMIT and
librdkafka never starts fetching. Seen after broker restarts, when a replaced producer's late TxnOffsetCommit
left offsets pending that no transaction would end (consumers/processor.py, _clear_hanging_offsets): the
member owned partitions, fetched nothing, logged nothing and stayed ready. Here another producer's open
transaction holds them: the member must report it (not-ready, a warning), then consume and commit once the
transaction ends.
"""

from __future__ import annotations

import logging
import threading

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from consumers.clients import Clients
from consumers.metrics import ConsumerMetrics
from consumers.processor import Processor
from leaderboard import boards as boards_mod
from leaderboard.settings import Settings
from tests.procs import wait_until
from tests.test_consumer import board, produce_stream


def test_a_member_whose_offsets_a_pending_transaction_holds_says_so_then_consumes(
    config: Settings, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    truth, _, _ = produce_stream(config, 60, seed=31)
    group = Consumer({**config.kafka_common(), "group.id": config.consumer_group})
    holder = Producer(
        {
            **config.kafka_common(),
            "transactional.id": f"holder-{config.consumer_group}",
            "transaction.timeout.ms": 120_000,
        }
    )
    try:
        partitions = group.list_topics(config.topic, timeout=10).topics[config.topic].partitions
        holder.init_transactions(10)
        holder.begin_transaction()
        holder.send_offsets_to_transaction(
            [TopicPartition(config.topic, p, 0) for p in partitions], group.consumer_group_metadata(), 10
        )
    finally:
        group.close()
    processor = Processor(
        config, boards_mod.load(config.boards_file), ConsumerMetrics(), Clients.for_settings(config)
    )
    runner = threading.Thread(target=processor.run, name="processor", daemon=True)
    caplog.set_level(logging.WARNING, logger="consumers.processor")
    runner.start()
    try:

        def reported() -> str:
            warned = any("committed offsets unstable" in r.getMessage() for r in caplog.records)
            problem = processor.problem or ""
            return problem if warned and "unreadable" in problem else ""

        problem = wait_until(reported, 40, "the member to report (log, not-ready) its unreadable offsets")
        assert "committed offsets of partitions" in problem
        assert board(redis_client, config, "all_time") == {}, (
            "nothing is fetched while the offsets are unstable"
        )
        holder.abort_transaction(10)
        wait_until(
            lambda: board(redis_client, config, "all_time") == truth and processor.problem is None,
            40,
            "the member to consume everything and be ready once the transaction ended",
        )
    finally:
        processor.stopping.set()
        runner.join(30)
        holder.flush(5)
    assert not runner.is_alive()
