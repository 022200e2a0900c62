"""Running the real ``leaderboard`` processes from tests, with bounded waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from leaderboard.settings import Settings
from tests.conftest import env_of
from tests.services import free_port

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll until ``check()`` is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(interval)
        last = check()
    return last


def http_get(url: str, timeout: float) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


class ConsumerProcess:
    """One ``leaderboard consume`` child process with its own health port and log file."""

    def __init__(self, config: Settings, log_dir: Path, name: str = "consumer", **env: str) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"{name}-{self.port}.log"
        environ = env_of(config)
        environ.update(env)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leaderboard.cli", "consume", "--metrics-port", str(self.port)],
            env=environ,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(f"http://127.0.0.1:{self.port}{path}", timeout=2)

    def metric(self, name: str, labels: str = "") -> float:
        _, body = self.get("/metrics")
        for line in body.decode().splitlines():
            if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name} ")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(
            lambda: self.get("/readyz")[0] == 200 or self.proc.poll() is not None, timeout, "consumer ready"
        )
        assert self.proc.poll() is None, self.log_path.read_text()[-3000:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> int:
        try:
            return stop_process(self.proc, timeout)
        finally:
            self._log.close()

    def alive(self) -> bool:
        return self.proc.poll() is None


def end_offsets(config: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({**config.kafka_common(), "group.id": "probe", "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
    finally:
        consumer.close()


def committed(config: Settings) -> dict[int, int]:
    """The consumer group's committed offsets on the main topic."""
    consumer = Consumer(
        {**config.kafka_common(), "group.id": config.consumer_group, "enable.auto.commit": False}
    )
    try:
        parts = consumer.list_topics(config.topic, timeout=10).topics[config.topic].partitions
        tps = consumer.committed([TopicPartition(config.topic, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def caught_up(config: Settings) -> bool:
    """Every record of the main topic is committed by the group (False while the group is rebalancing)."""
    try:
        ends = end_offsets(config, config.topic)
        done = committed(config)
    except KafkaException:
        return False
    return all(done.get(p, -1) >= end for p, end in ends.items() if end > 0)


def read_topic(
    config: Settings, topic: str, timeout: float = 20
) -> list[tuple[bytes | None, bytes | None, dict[str, str]]]:
    """Every committed record of a topic (read_committed), as (key, value, headers)."""
    ends = end_offsets(config, topic)
    consumer = Consumer(
        {
            **config.kafka_common(),
            "group.id": f"reader-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    out = []
    positions = dict.fromkeys(ends, 0)
    deadline = time.monotonic() + timeout
    try:
        while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                positions[msg.partition()] = msg.offset() + 1
                headers = {k: (v or b"").decode() for k, v in msg.headers() or []}
                out.append((msg.key(), msg.value(), headers))
                # transaction markers occupy offsets too: ask for positions to see past them
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= 0:
                    positions[tp.partition] = max(positions[tp.partition], tp.offset)
    finally:
        consumer.close()
    return out


def delete_group(admin: AdminClient, group: str) -> None:
    for future in admin.delete_consumer_groups([group]).values():
        future.result(timeout=10)


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj)


class ApiProcess:
    """``leaderboard api`` as a child process on a free port."""

    def __init__(self, config: Settings, log_dir: Path, workers: int = 1, **env: str) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"api-{self.port}.log"
        environ = env_of(config)
        environ.update(env)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "leaderboard.cli",
                "api",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=environ,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(f"{self.url}{path}", timeout=5)

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(
            lambda: self.get("/readyz")[0] == 200 or self.proc.poll() is not None, timeout, "API ready"
        )
        assert self.proc.poll() is None, self.log_path.read_text()[-3000:]

    def stop(self, timeout: float = 30) -> int:
        try:
            return stop_process(self.proc, timeout)
        finally:
            self._log.close()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM, then SIGKILL if it is still running after ``timeout``: no child outlives a test. Exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


@contextmanager
def consumer_and_api(
    config: Settings, log_dir: Path, *simulate: str, catch_up_s: float = 60
) -> Iterator[tuple[ConsumerProcess, ApiProcess]]:
    """A consumer and an API over what ``leaderboard simulate *simulate`` published, consumed to the end."""
    consumer = ConsumerProcess(config, log_dir)
    api: ApiProcess | None = None
    try:
        consumer.wait_ready()
        api = ApiProcess(config, log_dir)
        sim = leaderboard_cli(config, "simulate", *simulate, timeout=120)
        assert sim.returncode == 0, sim.stderr
        wait_until(lambda: caught_up(config), catch_up_s, "consumer caught up")
        api.wait_ready()
        yield consumer, api
    finally:
        if api is not None:
            api.stop()
        consumer.stop()


def leaderboard_cli(config: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a ``leaderboard`` subcommand with the test's settings."""
    return subprocess.run(
        [sys.executable, "-m", "leaderboard.cli", *args],
        env=env_of(config),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def watermarks(consumer: Consumer, partition: TopicPartition) -> tuple[int, int]:
    """Retries while a fresh topic's partition leaders are still being elected."""
    deadline = time.monotonic() + 30
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=10)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        else:
            return low, high
