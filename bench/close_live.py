"""A day closing while consumers serve a steady stream (issue 13): event-to-visible and commit gaps.

    .venv/bin/python bench/close_live.py                      # the issue's size: 5M events, 1M players
    .venv/bin/python bench/close_live.py --events 500000 --players 100000 --runs 1

Per run, on the shared local stack (its own schema, topics, Redis prefix and consumer group):
1. ``--events`` wins of yesterday (UTC) over ``--players`` players go straight into PostgreSQL
   (growth.fill; on Kafka partitions 1000+, which the topic does not have, so its own offsets start clean)
   and are folded into the standings checkpoint, as the scheduler would have done during the day.
2. A boards file makes yesterday due ``--lead`` seconds after the consumers start (``grace_seconds``); two
   ``leaderboard consume`` processes recover the boards from the checkpoint, then their scheduler threads
   fold and close by the group's recorded clock, as in production (LEADERBOARD_CLOSE_INTERVAL_S as set).
3. 5,000 events/s of today's wins (bench/paced_publish.py) with a produce-to-visible probe every 50 ms
   (bench/run.py's probe) and each consumer's last-commit gauge scraped every 0.2 s, until the close has
   stored and announced its standings and ``--after`` more seconds have passed.

Prints event-to-visible p50/p99 before, during and after the close (by the probe's send time against
``closed_periods.closed_at`` .. ``announced_at``), the longest commit gap of any consumer in each span (the
gauge's successive values: a gap is overstated by up to one scrape interval, never understated), and the
close's time. Fails when the close did not fall inside the stream.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import redis
from benchlib import ROOT, VENV_BIN, BenchError, Procs, remove_world, scrape, value, wait_for
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from growth import fill, pct
from run import M_ASSIGNED, PARTITIONS, probe_loop, start_consumers

from consumers import checkpoints
from consumers.migrate import migrate
from leaderboard import settings
from leaderboard.boards import load as load_boards
from leaderboard.settings import PRODUCER_DEFAULTS

M_COMMIT = "leaderboard_consumer_last_commit_timestamp_seconds"
M_READY = "leaderboard_consumer_ready"
RATE = 5000
FIRST_PARTITION = 1000


@dataclass
class Commits:
    """Every consumer's last-commit gauge, scraped every ``every_s`` on a thread of its own."""

    ports: list[int]
    every_s: float = 0.2
    seen: list[list[float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.seen = [[] for _ in self.ports]
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            for port, seen in zip(self.ports, self.seen, strict=True):
                with contextlib.suppress(OSError, ValueError, BenchError):
                    at = value(scrape(port), M_COMMIT)
                    if at > 0 and (not seen or at != seen[-1]):
                        seen.append(at)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def longest_gap(self, lo: float, hi: float) -> float:
        """The longest time any consumer went without a commit within [lo, hi] (epoch seconds)."""
        worst = 0.0
        for seen in self.seen:
            inside = [t for t in seen if lo <= t <= hi]
            if not inside:
                raise BenchError(f"a consumer committed nothing between {lo:.1f} and {hi:.1f}")
            edges = [lo, *inside, hi]
            worst = max(worst, *(b - a for a, b in itertools.pairwise(edges)))
        return worst


def _boards(path: Path, today: datetime, due: datetime) -> None:
    """The default board, yesterday due at ``due``: its grace runs from today's midnight (UTC) to then."""
    path.write_text(f'[[board]]\nid = "global"\ngrace_seconds = {int((due - today).total_seconds())}\n')


def _log(text: str) -> None:
    print(f"[close_live {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class World:
    """This run's schema, topics, Redis prefix and consumer group on the shared stack; dropped by close()."""

    def __init__(self, run: str) -> None:
        self.config = settings.load()
        self.schema = f"bench_{run}"
        self.topic = f"bench-{run}-close"
        self.prefix = f"bench{run}c"
        self.group = f"bench-{run}-close"
        self.admin = AdminClient(self.config.kafka_common())
        self.r = redis.Redis.from_url(self.config.redis_url, socket_timeout=30)
        self.base = psycopg.connect(self.config.database_url, autocommit=True, connect_timeout=5)
        self.base.execute(f"CREATE SCHEMA {self.schema}")
        sep = "&" if "?" in self.config.database_url else "?"
        self.url = f"{self.config.database_url}{sep}options=-csearch_path%3D{self.schema}"
        self.topics = [(self.topic, PARTITIONS), (f"{self.topic}.dlq", 3), (f"{self.topic}.closed", 3)]
        new = [NewTopic(n, p, 1) for n, p in self.topics]
        for fut in self.admin.create_topics(new, operation_timeout=30).values():
            fut.result(60)
        with psycopg.connect(self.url, autocommit=True) as conn:
            migrate(conn)

    def env(self, boards_file: Path) -> dict[str, str]:
        config = replace(
            self.config,
            topic=self.topic,
            dlq_topic=f"{self.topic}.dlq",
            period_closed_topic=f"{self.topic}.closed",
            redis_prefix=self.prefix,
            consumer_group=self.group,
            database_url=self.url,
            log_level="WARNING",
            boards_file=boards_file,
            auto_close_periods=True,
        )
        return {**os.environ, **settings.to_env(config)}

    def closed(self, period: str) -> tuple[datetime, datetime | None, datetime | None] | None:
        """(closed_at, standings_at, announced_at) of the period, None before its freeze."""
        with psycopg.connect(self.url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT closed_at, standings_at, announced_at FROM closed_periods"
                " WHERE board = 'global' AND period = %s",
                (period,),
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def close(self) -> None:
        remove_world(
            self.admin,
            self.r,
            self.config.database_url,
            groups=[self.group],
            topics=[n for n, _ in self.topics],
            key_match=f"{self.prefix}*",
            schema=self.schema,
        )
        self.base.close()
        self.r.close()


def _ready(ports: list[int], w: World) -> bool:
    return (
        all(value(scrape(p), M_ASSIGNED) > 0 and value(scrape(p), M_READY) == 1 for p in ports)
        and w.r.hget(f"{w.prefix}:{{global}}:meta", "active") is not None
    )


def one_run(args: argparse.Namespace, run: str, procs: Procs, tmp: Path) -> dict[str, float]:
    w = World(run)
    try:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        period = f"daily:{today - timedelta(days=1):%Y-%m-%d}"
        took = fill(w.url, args.events, args.players, 1, end=today, first_partition=FIRST_PARTITION)
        _log(f"filled {args.events:,} events of {period} in {took:.0f} s")
        boards_file = tmp / f"boards-{run}.toml"
        _boards(boards_file, today, datetime.now(UTC) + timedelta(days=1))  # the fold's board: not due yet
        board = load_boards(boards_file)[0]
        t0 = time.monotonic()
        with psycopg.connect(w.url, autocommit=True) as conn:
            checkpoints.advance(conn, board)
        _log(f"checkpoint fold of the day: {time.monotonic() - t0:.0f} s")
        # Due --lead seconds from now by the group's recorded clock: only the stream's ingest times get there.
        _boards(boards_file, today, datetime.now(UTC) + timedelta(seconds=args.lead))
        env = w.env(boards_file)
        cons = start_consumers(procs, 2, env, f"close-{run}")
        ports = [port for _, port in cons]
        t0 = time.monotonic()
        wait_for("both consumers assigned and ready", lambda: _ready(ports, w), args.timeout, 0.5)
        _log(f"consumers ready after {time.monotonic() - t0:.0f} s (recovery from the checkpoint)")
        commits = Commits(ports)
        producer = Producer({**w.config.kafka_common(), **PRODUCER_DEFAULTS})
        stream_s = args.lead + args.timeout
        argv = [str(VENV_BIN / "python"), str(ROOT / "bench/paced_publish.py"), "--rate", str(RATE)]
        argv += ["--duration", str(stream_s), "--topic", w.topic, "--players", str(args.players)]
        sim = procs.start(f"paced-{run}", argv, env)
        started = time.time()
        announced: list[float] = []

        def watch() -> None:
            """End the stream --after seconds once the close is announced (or at its deadline)."""
            deadline = time.monotonic() + stream_s
            while time.monotonic() < deadline:
                row = w.closed(period)
                if row and row[2] is not None:
                    announced.append(time.time())
                    time.sleep(args.after)
                    break
                time.sleep(0.5)
            procs.stop(sim)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        stamps: list[float] = []
        samples = probe_loop(
            w.r,
            run,
            producer=producer,
            topic=w.topic,
            prefix=w.prefix,
            sim=sim,
            rep=0,
            limit_s=stream_s + 5,
            stamps=stamps,
        )
        watcher.join(args.after + 30)
        ended = time.time()
        commits.stop()
        producer.flush(10)
        row = w.closed(period)
        if row is None or row[2] is None or not announced:
            raise BenchError(f"{period} was not closed and announced within the stream ({stream_s:.0f} s)")
        lo, hi = row[0].timestamp(), row[2].timestamp()
        if lo < started:
            raise BenchError("the close began before the stream: raise --lead")
        out: dict[str, float] = {"close_s": hi - lo, "standings_s": (row[1] or row[2]).timestamp() - lo}
        for name, (a, b) in {"before": (started, lo), "during": (lo, hi), "after": (hi, ended)}.items():
            inside = [s for s, at in zip(samples, stamps, strict=True) if a <= at <= b]
            out[f"{name}_n"] = len(inside)
            out[f"{name}_p50"] = pct(inside, 0.5)
            out[f"{name}_p99"] = pct(inside, 0.99)
            out[f"{name}_gap"] = commits.longest_gap(a, b)
        _log(json.dumps(out))
        for proc, _ in cons:
            procs.stop(proc)
        return out
    finally:
        procs.close()
        w.close()


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            x = kind(text)
        except ValueError:
            x = 0
        if x <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number > 0")
        return x

    return parse


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    whole, seconds = _positive(int), _positive(float)
    p.add_argument("--events", type=whole, default=5_000_000, help="wins stored in yesterday's daily period")
    p.add_argument("--players", type=whole, default=1_000_000)
    p.add_argument("--lead", type=seconds, default=40.0, help="seconds of stream before the close is due")
    p.add_argument("--after", type=seconds, default=20.0, help="seconds of stream after the announcement")
    p.add_argument("--timeout", type=seconds, default=600.0, help="bound on the recovery and on the close")
    p.add_argument("--runs", type=whole, default=1)
    args = p.parse_args()
    run = f"{int(time.time()) & 0xFFFFFF:06x}{os.getpid() & 0xFF:02x}"
    tmp = Path(tempfile.mkdtemp(prefix=f"close-live-{run}-"))
    results = []
    try:
        for i in range(args.runs):
            results.append(one_run(args, f"{run}{i}", Procs(tmp), tmp))
    except BenchError as exc:
        print(f"close_live: {exc} (logs in {tmp})", file=sys.stderr)
        return 1
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(
        f"### Closing a day of {args.events:,} events over {args.players:,} players while 2 consumers serve"
        f" {RATE:,} events/s (`bench/close_live.py {' '.join(sys.argv[1:])}`, medians of {len(results)})\n"
    )
    print("| span | probes | event-to-visible p50 | p99 | longest commit gap |")
    print("|---|---|---|---|---|")
    for name in ("before", "during", "after"):
        print(
            f"| {name} the close | {med[name + '_n']:.0f} | {med[name + '_p50']:.1f} ms |"
            f" {med[name + '_p99']:.1f} ms | {med[name + '_gap']:.2f} s |"
        )
    print(
        f"\nClose (freeze to announcement): {med['close_s']:.1f} s;"
        f" standings stored after {med['standings_s']:.1f} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
