"""The processor as a library (built in a test, clients passed in), ``--until-caught-up``, and clean stops."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumers.catchup import CatchUp
from consumers.clients import Clients, consumer_settings
from consumers.metrics import ConsumerMetrics
from consumers.processor import NotCaughtUp, Processor
from leaderboard import boards as boards_mod
from leaderboard.net import free_port
from leaderboard.settings import Settings
from tests.procs import ConsumerProcess, committed, end_offsets, leaderboard_cli
from tests.test_consumer import board, produce_stream


def sample(metrics: ConsumerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    if value is None:
        raise AssertionError(f"no series {name}{labels}")
    return value


def test_catch_up_needs_an_owned_partition_and_every_owned_one_at_its_target() -> None:
    target = CatchUp({0: 5, 1: 0, 2: 7})
    assert not target.reached(set(), {0: 5, 2: 7})  # owning nothing proves nothing
    assert target.reached({0, 1}, {0: 5})  # partition 1 was empty at the start: no offset needed
    assert not target.reached({0, 2}, {0: 5, 2: 6})
    assert target.reached({0, 2}, {0: 9, 2: 7})
    assert not target.reached({0}, {0: -1001})  # librdkafka's "no committed offset"
    assert target.reached({3}, {})  # created after the start: nothing to wait for
    assert target.behind({0, 1, 2}, {0: 2}) == {0: (2, 5), 2: (0, 7)}
    assert not CatchUp({}, None).expired(1e12)
    assert CatchUp({}, 10.0).expired(10.0)


def test_a_processor_built_in_a_test_applies_everything_and_stops_when_caught_up(
    config: Settings, redis_client: redis.Redis
) -> None:
    truth, _, _ = produce_stream(config, 400, seed=21)
    metrics = ConsumerMetrics()
    processor = Processor(config, boards_mod.load(config.boards_file), metrics, Clients.for_settings(config))
    started = time.monotonic()
    processor.run(until_caught_up=True, timeout_s=60)  # returns: no thread, no signal needed
    assert time.monotonic() - started < 60
    ends, done = end_offsets(config, config.topic), committed(config)
    assert all(done[p] >= end for p, end in ends.items() if end > 0), (done, ends)
    assert board(redis_client, config, "all_time") == truth
    # close() ran the revoke callback: no partition left, nothing read from prometheus-client's privates.
    assert sample(metrics, "leaderboard_consumer_assigned_partitions") == 0
    assert sample(metrics, "leaderboard_consumer_rebalances_total", kind="revoke") >= 1


class ClosingConsumer(Consumer):
    """The real consumer, with what librdkafka does now and then inside close(): ``assignment()`` from the
    revoke callback fails with _DESTROY ("Broker handle destroyed for termination"). Seen about once in
    15-60 stops; made certain here so the test fails whenever a callback asks the closing consumer."""

    closing = False

    def assignment(self) -> list[TopicPartition]:
        if self.closing:
            raise KafkaException(KafkaError(KafkaError._DESTROY, "Failed to get assignment"))
        return super().assignment()

    def close(self) -> None:
        self.closing = True
        super().close()


def test_closing_an_assigned_member_does_not_ask_the_closing_consumer(config: Settings) -> None:
    produce_stream(config, 50, seed=24)
    clients = Clients.for_settings(config)
    clients.consumer.close()
    clients.consumer = ClosingConsumer(consumer_settings(config))
    metrics = ConsumerMetrics()
    Processor(config, boards_mod.load(config.boards_file), metrics, clients).run(
        until_caught_up=True, timeout_s=30
    )
    assert sample(metrics, "leaderboard_consumer_assigned_partitions") == 0
    assert sample(metrics, "leaderboard_consumer_rebalances_total", kind="revoke") >= 1


def test_until_caught_up_gives_up_at_its_timeout_while_a_sink_is_down(config: Settings) -> None:
    produce_stream(config, 50, seed=22)
    clients = Clients.for_settings(config)
    metrics = ConsumerMetrics()
    processor = Processor(config, boards_mod.load(config.boards_file), metrics, clients)
    processor.prepare()  # migrations and the first build of the boards, on the real server
    dead = free_port()  # from now on nothing listens: every batch's connect fails and the batch retries
    clients.connect_pg = lambda: psycopg.connect(
        f"postgresql://127.0.0.1:{dead}/none", connect_timeout=1, autocommit=True
    )
    started = time.monotonic()
    with pytest.raises(NotCaughtUp, match=r"^timed out before catching up") as caught:
        processor.run(until_caught_up=True, timeout_s=6)
    assert caught.value.exit_code == 1  # the CLI's "ran and found a problem", not a usage error
    took = time.monotonic() - started
    assert 6 <= took < 20, took  # enforced while the batch was retrying, not only between batches
    assert sample(metrics, "leaderboard_consumer_sink_errors_total", sink="postgres") >= 1
    assert not any(committed(config).get(p, -1) > 0 for p in range(12))


def test_consume_timeout_without_until_caught_up_is_one_line_and_exit_2(config: Settings) -> None:
    out = leaderboard_cli(config, "consume", "--timeout", "5", timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "leaderboard consume: --timeout bounds --until-caught-up; give both"
    ]


def test_sigterm_stops_members_with_exit_0_also_during_rebalances(config: Settings, tmp_path: Path) -> None:
    """close() runs the revoke callback; it once asked the closing consumer for its assignment, which
    raised KafkaError _DESTROY now and then and made a graceful stop exit 1."""
    produce_stream(config, 300, seed=23)
    anchor = ConsumerProcess(config, tmp_path, name="anchor")
    members = [anchor]
    try:
        anchor.wait_ready()
        for i in range(5):
            joiner = ConsumerProcess(config, tmp_path, name=f"joiner{i}")
            members.append(joiner)
            joiner.wait_ready()  # ready before its assignment settles: SIGTERM lands mid-rebalance
            assert joiner.stop() == 0, joiner.tail()
        assert anchor.stop() == 0, anchor.tail()
    finally:
        for member in members:
            member.stop()
    logs = Counter("Traceback" in m.log_path.read_text() for m in members)
    assert logs == Counter({False: len(members)}), "a member logged a traceback"
