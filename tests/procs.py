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
from typing import TypeVar, cast

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from leaderboard.net import free_port
from leaderboard.redis_client import SyncClient
from leaderboard.settings import Settings
from leaderboard.topic_reader import read_to_end
from tests.conftest import env_of

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


def scrape(url: str, name: str, labels: str = "", *, unset: float | None = None) -> float:
    """One sample of a Prometheus text page; AssertionError when the page or the series is missing."""
    status, body = http_get(url, timeout=2)
    if status != 200:
        raise AssertionError(f"{url} answered {status or 'nothing'}: no value for {name}{labels}")
    for line in body.decode().splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.rsplit(" ", 1)[1])
    if unset is not None:
        return unset
    raise AssertionError(f"{url} has no series {name}{labels}")


class _CliChild:
    """A ``leaderboard`` subcommand as a child process with the test's settings, on a free port (``port``),
    its output in ``<log_dir>/<name>-<port>.log``."""

    proc: subprocess.Popen[bytes]

    def __init__(self, config: Settings, log_dir: Path, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self._environ = {**env_of(config), **env}
        self._log = self.log_path.open("ab")

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "leaderboard.cli", *args],
            env=self._environ,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> tuple[int, bytes]:
        raise NotImplementedError

    def wait_ready(self, timeout: float = 60) -> None:
        """Until /readyz answers 200; fails at once, with the log's tail, if the process exited."""
        wait_until(
            lambda: self.get("/readyz")[0] == 200 or self.proc.poll() is not None,
            timeout,
            f"{self.name} ready",
        )
        assert self.proc.poll() is None, self.tail()

    def tail(self, chars: int = 3000) -> str:
        """The end of the process's log, for an assertion message."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 30) -> int:
        try:
            return stop_process(self.proc, timeout)
        finally:
            self._log.close()


class ConsumerProcess(_CliChild):
    """One ``leaderboard consume`` child process with its own health port and log file."""

    def __init__(self, config: Settings, log_dir: Path, name: str = "consumer", **env: str) -> None:
        super().__init__(config, log_dir, name, env)
        self.proc = self._spawn("consume", "--metrics-port", str(self.port))

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(f"http://127.0.0.1:{self.port}{path}", timeout=2)

    def metric(self, name: str, labels: str = "", *, unset: float | None = None) -> float:
        """One sample from /metrics. Raises when the process does not answer, or when the series is absent
        unless ``unset`` says what an absent series means (a labelled counter never incremented)."""
        return scrape(f"http://127.0.0.1:{self.port}/metrics", name, labels, unset=unset)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

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


def caught_up(config: Settings, member: ConsumerProcess | None = None) -> bool:
    """Every record of the main topic is committed by the group (False while the group is rebalancing).

    Raises on an empty topic (nothing to catch up with proves nothing). With ``member``, also requires that
    this process owns partitions, so a check meant for it cannot pass on another member's commits.
    """
    try:
        ends = end_offsets(config, config.topic)
        done = committed(config)
    except KafkaException:
        return False
    if not any(ends.values()):
        raise AssertionError(f"topic {config.topic} is empty: 'caught up' would prove nothing")
    if member is not None and member.metric("leaderboard_consumer_assigned_partitions") == 0:
        return False
    return all(done.get(p, -1) >= end for p, end in ends.items() if end > 0)


def zscores(client: SyncClient, key: str, *, reverse: bool = False) -> list[tuple[bytes, float]]:
    """A sorted set's (member, score) pairs, low to high or, with ``reverse``, high to low (redis-py types the
    reply as any reply shape)."""
    rows = client.zrange(key, 0, -1, desc=reverse, withscores=True)
    return cast("list[tuple[bytes, float]]", rows)


def read_topic(
    config: Settings, topic: str, timeout: float = 20
) -> list[tuple[bytes | None, bytes | None, dict[str, str]]]:
    """Every committed record of a topic (read_committed), as (key, value, headers).

    Raises if the end offsets are not reached in ``timeout``: a partial list would let absence checks pass.
    """
    return [(r.key, r.value, r.headers) for r in read_to_end(config, topic, timeout)]


def group_state(admin: AdminClient, group: str) -> tuple[str, int]:
    """The group's state name and member count, as the broker describes it."""
    [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
    desc = future.result(timeout=15)
    return desc.state.name, len(desc.members)


def reset_offsets_to_earliest(config: Settings, timeout: float = 60) -> str:
    """Kafka's own tool, as the runbook has operators run it: wait until the group is empty (a SIGKILLed
    member lingers for the session timeout), then require the tool's plan in its output, since it exits 0 even
    when it refuses ("Assignments can only be reset if the group ... is inactive")."""
    admin = AdminClient(config.kafka_common())
    wait_until(
        lambda: group_state(admin, config.consumer_group) in {("EMPTY", 0), ("DEAD", 0)},
        timeout,
        f"group {config.consumer_group} to be empty",
    )
    tool = Path(__file__).resolve().parents[1] / "deploy/kafka/bin/kafka-consumer-groups"
    # fmt: off
    args = [str(tool), "--bootstrap-server", config.kafka_bootstrap, "--group", config.consumer_group,
            "--reset-offsets", "--to-earliest", "--topic", config.topic, "--execute"]
    # fmt: on
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    text = out.stdout + out.stderr
    planned = {
        int(cols[2])
        for line in text.splitlines()
        if len(cols := line.split()) >= 4 and cols[0] == config.consumer_group and cols[1] == config.topic
    }
    partitions = set(end_offsets(config, config.topic))
    if out.returncode != 0 or "Error" in text or planned != partitions:
        raise AssertionError(f"offset reset did not happen (exit {out.returncode}):\n{text[-2000:]}")
    return text


def delete_group(admin: AdminClient, group: str) -> None:
    for future in admin.delete_consumer_groups([group]).values():
        future.result(timeout=10)


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj)


class ApiProcess(_CliChild):
    """``leaderboard api`` as a child process on a free port."""

    def __init__(self, config: Settings, log_dir: Path, *, workers: int = 1, **env: str) -> None:
        super().__init__(config, log_dir, "api", env)
        self.proc = self._spawn("api", "--port", str(self.port), "--workers", str(workers))
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(f"{self.url}{path}", timeout=5)


def schemathesis(api: ApiProcess, *args: str, timeout: float) -> str:
    """``schemathesis run *args`` against the running API's OpenAPI document; its output, once it passed."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run", f"{api.url}/openapi.json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout.lower()
    return result.stdout


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


def consume_until_caught_up(config: Settings, timeout: float = 60) -> str:
    """``leaderboard consume --until-caught-up``: one member that exits once the group committed everything
    the topic held when it started. Raises when it exits non-zero (its timeout included); returns its log."""
    out = leaderboard_cli(
        config, "consume", "--until-caught-up", "--timeout", str(timeout), timeout=timeout + 60
    )
    if out.returncode != 0:
        raise AssertionError(f"consume --until-caught-up exited {out.returncode}: {out.stderr[-3000:]}")
    return out.stderr


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
