"""Partitions whose committed offsets a member cannot read (consumers/offset_probe.py).

The pure planning first; then on the real broker: offsets left pending by an open transaction of another
producer keep the member's read_committed fetch of them waiting (KIP-447). The member must say it is not
ready within the stall bound (before this, its watchdog saw no position, so no lag, and it stayed ready), and
must go on by itself once that transaction ends.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from consumers.offset_probe import CLEAR_AFTER, CLEAR_EVERY_S, PROBE_AFTER_S, PROBE_TIMEOUT_S, Probes, plan
from consumers.watchdog import STALL_AFTER_S
from leaderboard.settings import Settings
from tests.procs import ConsumerProcess, caught_up, wait_until


def test_plan_probes_only_partitions_owned_long_enough_without_a_position() -> None:
    owned_at = {0: 0.0, 1: 0.0, 2: 9.0, 3: 0.0}
    positions = {0: 17, 1: -1001}  # 3: never sampled
    assert plan(owned_at, positions, now=10.0) == [1, 3]  # 2: owned for 1 s only
    assert plan(owned_at, positions, now=PROBE_AFTER_S - 0.1) == []


@given(st.lists(st.tuples(st.sets(st.integers(0, 5)), st.sets(st.integers(0, 5))), max_size=30))
def test_probes_count_unreadable_runs_and_a_readable_probe_resets_them(
    rounds: list[tuple[set[int], set[int]]],
) -> None:
    probes = Probes()
    naive: dict[int, int] = {}
    for i, (readable, sampled) in enumerate(rounds):
        unreadable = sampled - readable
        probes.record(float(i), readable, unreadable)
        for p in readable:
            naive.pop(p, None)
        for p in unreadable:
            naive[p] = naive.get(p, 0) + 1
        assert {p: n for p, (_, n) in probes.unreadable.items()} == naive


def test_clearing_is_due_after_clear_after_probes_and_not_more_often_than_clear_every() -> None:
    probes = Probes()
    for i in range(CLEAR_AFTER - 1):
        probes.record(float(i), set(), {4})
        assert probes.to_clear(float(i)) == []
    probes.record(10.0, set(), {4})
    assert probes.to_clear(10.0) == [4]
    probes.record(11.0, set(), {4})
    assert probes.to_clear(11.0) == []
    assert probes.to_clear(10.0 + CLEAR_EVERY_S) == [4]
    assert probes.stuck(10.0, 20.0) == []
    assert probes.stuck(25.0, 20.0) == [4]
    probes.forget({4})
    assert probes.stuck(25.0, 20.0) == []


def test_the_batch_loop_and_the_probes_share_one_clearing_rate() -> None:
    probes = Probes()
    assert probes.clear_due(100.0)
    assert not probes.clear_due(100.0 + CLEAR_EVERY_S - 0.1)
    for i in range(CLEAR_AFTER):
        probes.record(101.0 + i, set(), {2})
    assert probes.to_clear(105.0) == []  # the batch loop's attempt at 100 s counts
    assert probes.to_clear(100.0 + CLEAR_EVERY_S) == [2]
    assert not probes.clear_due(100.0 + CLEAR_EVERY_S)


def _publish(config: Settings, n: int) -> None:
    producer = Producer({**config.kafka_common(), "enable.idempotence": True, "linger.ms": 5})
    for i in range(n):
        body = orjson.dumps(
            {
                "event_id": str(uuid.uuid4()),
                "match_id": f"m{i}",
                "player_id": f"p-{i % 40}",
                "game": "chess",
                "points": 1 + i % 5,
                "occurred_at": "2026-11-20T10:00:00Z",
            }
        )
        producer.produce(config.topic, body, f"p-{i % 40}".encode())
    assert producer.flush(30) == 0


def test_offsets_pending_in_another_transaction_make_the_member_not_ready_until_it_ends(
    config: Settings, tmp_path: Path
) -> None:
    _publish(config, 400)
    # Another producer's open transaction holding offsets of every partition for the member's group.
    blocker = Producer(
        {
            **config.kafka_common(),
            "transactional.id": f"blocker-{uuid.uuid4().hex}",
            "transaction.timeout.ms": 120_000,
        }
    )
    blocker.init_transactions(30)
    blocker.begin_transaction()
    outsider = Consumer({**config.kafka_common(), "group.id": config.consumer_group})
    blocker.send_offsets_to_transaction(
        [TopicPartition(config.topic, p, 0) for p in range(12)], outsider.consumer_group_metadata(), 30
    )
    outsider.close()
    member = ConsumerProcess(config, tmp_path)
    try:
        member.wait_ready()
        start = time.monotonic()
        wait_until(
            lambda: member.metric("leaderboard_consumer_assigned_partitions") == 12,
            30,
            "it to own all",
        )
        wait_until(
            lambda: member.get("/readyz")[0] == 503,
            STALL_AFTER_S + PROBE_AFTER_S + PROBE_TIMEOUT_S + 15,
            "the member to report that it cannot progress",
        )
        body = member.get("/readyz")[1]
        print(f"not ready {time.monotonic() - start:.1f} s after starting: {body!r}")
        assert member.metric("leaderboard_consumer_last_commit_timestamp_seconds") < time.time() - 5
        blocker.abort_transaction(30)
        wait_until(lambda: caught_up(config, member), 60, "the member to commit everything once unblocked")
        wait_until(lambda: member.get("/readyz")[0] == 200, 30, "the member to be ready again")
        log = member.log_path.read_text()
        assert "committed offsets of owned partitions cannot be read" in log
    finally:
        assert member.stop() == 0
