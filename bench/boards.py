"""Benchmark of board kinds and runtime boards on the local stack (issue 16): not a test, a measurement.

    .venv/bin/python bench/boards.py                 # 200,000 events, 3 runs of each, medians
    .venv/bin/python bench/boards.py --events 50000 --reps 1

1. End-to-end throughput of one consumer over the same pre-published topic, side by side in one
   invocation: the default single board (``global``, every event) against 4 boards of mixed kinds (sum,
   best desc, last, best asc; two time zones) where each event feeds 2 of them. Runs alternate.
2. Backfill rate of a board created at runtime: ``leaderboard boards apply`` of a new board over the event
   log the runs left in PostgreSQL (events read / build seconds, the live consumer stopped).

Everything it creates is named after a fresh run id and removed at the end (topics ``bench-<run>*``, groups,
Redis keys ``bench<run>*``, schema ``bench_<run>``). Results are printed as markdown; ``--write`` inserts
them into docs/benchmarks.md under "Board kinds and runtime boards".
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import psycopg
import redis
from benchlib import (  # much of bench/run.py's list: each script imports the helpers it uses
    ROOT,
    VENV_BIN,
    BenchError,
    Procs,
    http_get,
    median,
    remove_world,
    run_cmd,
    scrape,
    value,
    wait_for,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

sys.path.insert(0, str(ROOT))
from consumers.board_ops import Ops
from consumers.migrate import migrate
from leaderboard import settings
from leaderboard.boards import Board
from leaderboard.net import free_port
from leaderboard.settings import Settings

PARTITIONS = 12
GAMES = "chess,go,poker,darts"
# Four [[board]] tables of one shape on purpose: each is another board kind the run compares.
FOUR = """
[[board]]
id = "sum-ab"
filter = { game = ["chess", "go"] }

[[board]]
id = "best-bc"
aggregation = "best"
timezone = "Europe/Berlin"
filter = { game = ["go", "poker"] }

[[board]]
id = "last-cd"
aggregation = "last"
filter = { game = ["poker", "darts"] }

[[board]]
id = "asc-da"
aggregation = "best"
order = "asc"
timezone = "Asia/Kathmandu"
filter = { game = ["darts", "chess"] }
"""
M_CONSUMED = "leaderboard_consumer_events_consumed_total"
M_APPLIED = "leaderboard_consumer_events_applied_total"


class Run:
    def __init__(self, config: Settings, tmp: Path) -> None:
        self.id = uuid.uuid4().hex[:8]
        self.config = config
        self.tmp = tmp
        self.schema = f"bench_{self.id}"
        sep = "&" if "?" in config.database_url else "?"
        self.db_url = f"{config.database_url}{sep}options=-csearch_path%3D{self.schema}"
        self.topic = f"bench-{self.id}"
        self.admin = AdminClient(config.kafka_common())
        self.r = redis.Redis.from_url(config.redis_url, socket_timeout=30)
        self.groups: list[str] = []
        self.procs = Procs(tmp)
        self.four = tmp / "four.toml"
        self.four.write_text(FOUR, encoding="utf-8")

    def settings(self, tag: str, boards_file: Path | None) -> Settings:
        group = f"bench-{self.id}-{tag}"
        self.groups.append(group)
        return replace(
            self.config,
            topic=self.topic,
            dlq_topic=f"{self.topic}.dlq",
            period_closed_topic=f"{self.topic}.closed",
            redis_prefix=f"bench{self.id}{tag}",
            consumer_group=group,
            database_url=self.db_url,
            log_level="WARNING",
            boards_file=boards_file,
        )

    def env(self, config: Settings) -> dict[str, str]:
        return {**os.environ, **settings.to_env(config)}

    def setup(self) -> None:
        with psycopg.connect(self.config.database_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.schema}")
        with psycopg.connect(self.db_url, connect_timeout=5) as conn:
            migrate(conn)
        names = [(self.topic, PARTITIONS), (f"{self.topic}.dlq", 3), (f"{self.topic}.closed", 3)]
        for fut in self.admin.create_topics(
            [NewTopic(n, p, 1) for n, p in names], operation_timeout=30
        ).values():
            fut.result(60)

    def cleanup(self) -> None:
        self.procs.close()
        remove_world(
            self.admin,
            self.r,
            self.config.database_url,
            groups=self.groups,
            topics=[self.topic, f"{self.topic}.dlq", f"{self.topic}.closed"],
            key_match=f"bench{self.id}*",
            schema=self.schema,
        )

    def publish(self, count: int) -> None:
        argv = [str(VENV_BIN / "leaderboard"), "simulate", "--count", str(count), "--rate", "0"]
        argv += ["--players", "100000", "--skew", "0.8", "--seed", "1", "--games", GAMES, "--json"]
        out = run_cmd(argv, 600, env=self.env(self.settings("p", None)))
        if json.loads(out.strip().splitlines()[-1]).get("acked") != count:
            raise BenchError(f"simulate did not acknowledge {count} events")

    def e2e(self, tag: str, boards_file: Path | None, count: int) -> float:
        """events/s of one consumer from its first consumed event to the last (a fresh group and prefix)."""
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute(
                "TRUNCATE events, event_ids, players, standings_checkpoint, checkpoint_positions,"
                " checkpoint_boards"
            )
        port = free_port()
        argv = [str(VENV_BIN / "leaderboard"), "consume", "--metrics-port", str(port)]
        proc = self.procs.start(f"consumer-{tag}", argv, self.env(self.settings(tag, boards_file)))
        try:
            wait_for("consumer metrics", functools.partial(_up, proc, port), 60)
            first: tuple[float, float] | None = None
            deadline = time.monotonic() + 120 + count / 1000
            while time.monotonic() < deadline:
                done = value(scrape(port), M_CONSUMED)
                now = time.perf_counter()
                if first is None and done > 0:
                    first = (now, done)
                if done >= count and first is not None:
                    return (done - first[1]) / (now - first[0])
                time.sleep(0.2)
            raise BenchError(f"{tag}: not all {count:,} events consumed before the deadline")
        finally:
            self.procs.stop(proc)

    def backfill(self, rep: int) -> tuple[int, float]:
        """(events read, seconds) of building a new runtime board over the event log."""
        config = self.settings(f"bf{rep}", None)
        board = Board(id=f"bf{rep}", aggregation="best", order="asc", games=frozenset({"go", "darts"}))
        [applied] = Ops(config).apply([board])
        if applied.built is None:
            raise BenchError("the backfill built nothing")
        return applied.built.events, applied.built.seconds


def _up(proc: object, port: int) -> bool:
    if getattr(proc, "returncode", None) is not None:
        raise BenchError(f"consumer on {port} exited")
    return http_get(f"http://127.0.0.1:{port}/metrics")[0] == 200


def runs(xs: list[float]) -> str:
    return ", ".join(f"{x:,.0f}" for x in xs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    config = settings.load()
    with tempfile.TemporaryDirectory(prefix="bench-boards-") as tmp:
        run = Run(config, Path(tmp))
        try:
            run.setup()
            print(f"[bench] publishing {args.events:,} events", file=sys.stderr)
            run.publish(args.events)
            single: list[float] = []
            four: list[float] = []
            for rep in range(args.reps):
                single.append(run.e2e(f"s{rep}", None, args.events))
                four.append(run.e2e(f"f{rep}", run.four, args.events))
                print(
                    f"[bench] run {rep + 1}: single {single[-1]:,.0f}/s, four {four[-1]:,.0f}/s",
                    file=sys.stderr,
                )
            with psycopg.connect(run.db_url) as conn:
                row = conn.execute("SELECT count(*) FROM events").fetchone()
            stored = 0 if row is None else int(row[0])
            if stored < args.events // 2:
                raise BenchError(f"only {stored:,} events stored for the backfill")
            rates = []
            for rep in range(args.reps):
                events, seconds = run.backfill(rep)
                rates.append(events / seconds)
                print(f"[bench] backfill {rep + 1}: {events:,} events in {seconds:.2f} s", file=sys.stderr)
        finally:
            run.cleanup()
    head = f"median of {args.reps}; {args.events:,} events, 1 consumer, 12 partitions"
    print(f"| measure ({head}) | events/s | runs |")
    print("| --- | --- | --- |")
    print(f"| end-to-end, 1 board (`global`, every event) | {median(single):,.0f} | {runs(single)} |")
    print(
        f"| end-to-end, 4 boards of mixed kinds, each event feeding 2 | {median(four):,.0f} | {runs(four)} |"
    )
    what = "backfill of a new runtime board (`boards apply`, best asc, half the events)"
    print(f"| {what} | {median(rates):,.0f} | {runs(rates)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
