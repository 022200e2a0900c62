"""Smoke test of `deploy/stack.sh up kafka-cluster`: 3 KRaft brokers, RF 3 topics, min.insync.replicas=2.

The SDK publisher (acks=all, idempotent) keeps publishing while the leader of a partition is SIGKILLed:
every record is acknowledged, and reading the topic back gives each event exactly once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from leaderboard.net import free_cluster_block
from leaderboard.settings import Settings, load
from producers.publisher import Publisher
from tests.factories import win
from tests.services import kafka_libs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TOPIC = "match-won.v1"  # the private cluster's own topics, created by stack.sh


@dataclass
class KafkaCluster:
    bootstrap: str
    stack_dir: Path


def _stack(cmd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "deploy" / "stack.sh"), cmd, "kafka-cluster"],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def _log_tails(stack_dir: Path) -> str:
    """The end of every node's log: the stack directory, logs included, is removed after a failed start."""
    logs = sorted((stack_dir / "logs").glob("*.log")) if (stack_dir / "logs").is_dir() else []
    return "".join(f"\n--- {log.name} ---\n{log.read_text(errors='replace')[-1500:]}" for log in logs)


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    stack_dir = tmp_path_factory.mktemp("kc-stack")
    shared = kafka_libs()
    if (shared / ".stamp").is_file():  # reuse the assembled broker classpath instead of copying it again
        (stack_dir / "kafka").mkdir()
        (stack_dir / "kafka" / "libs").symlink_to(shared)
    base = free_cluster_block(6)  # one block: brokers, then controllers (two draws could overlap)
    ctrl = base + 3
    env = {
        **os.environ,
        "LEADERBOARD_STACK_DIR": str(stack_dir),
        "KAFKA_CLUSTER_PORT": str(base),
        "KAFKA_CLUSTER_CONTROLLER_PORT": str(ctrl),
    }
    try:  # `down` also after an `up` that timed out: its brokers already run, detached from the script
        up = _stack("up", env)
        assert up.returncode == 0, up.stderr + up.stdout + _log_tails(stack_dir)
        yield KafkaCluster(",".join(f"127.0.0.1:{base + i}" for i in range(3)), stack_dir)
    finally:
        down = _stack("down", env)
        assert down.returncode == 0, down.stderr
        shutil.rmtree(stack_dir, ignore_errors=True)


def _publish(config: Settings, ids: list[str]) -> None:
    with Publisher(config) as pub:
        futures = [pub.publish(win(f"p{i % 50}", event_id=e)) for i, e in enumerate(ids)]
        pub.flush(60)
        for f in futures:
            f.result(timeout=60)  # raises if a record was not acknowledged by min.insync.replicas brokers


def _read_all(config: Settings, partitions: int, deadline_s: float) -> list[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka_bootstrap,
            "group.id": f"smoke-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        highs = {}
        for p in range(partitions):
            _, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)
            highs[p] = high
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(partitions)])
        ids: list[str] = []
        pos = dict.fromkeys(highs, 0)
        end = time.monotonic() + deadline_s
        while any(pos[p] < highs[p] for p in highs):
            if time.monotonic() > end:
                raise TimeoutError(f"read {len(ids)} records; positions {pos} short of {highs}")
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            value, partition, offset = msg.value(), msg.partition(), msg.offset()
            assert value is not None
            assert partition is not None
            assert offset is not None
            ids.append(orjson.loads(value)["event_id"])
            pos[partition] = offset + 1
        return ids
    finally:
        consumer.close()


def test_broker_sigkill_loses_nothing(kafka_cluster: KafkaCluster) -> None:
    config = replace(load({}), kafka_bootstrap=kafka_cluster.bootstrap, topic=TOPIC)
    meta = AdminClient({"bootstrap.servers": config.kafka_bootstrap}).list_topics(TOPIC, timeout=10)
    parts = meta.topics[TOPIC].partitions
    assert all(len(p.replicas) == 3 for p in parts.values())
    before = [str(uuid.uuid4()) for _ in range(300)]
    _publish(config, before)
    victim = parts[0].leader
    pid = int((kafka_cluster.stack_dir / "run" / f"kafka-cluster-{victim}.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    after = [str(uuid.uuid4()) for _ in range(300)]
    _publish(config, after)  # partitions it led move to another in-sync replica; 2 of 3 still acknowledge
    got = _read_all(config, len(parts), 40)
    assert sorted(got) == sorted(before + after)
