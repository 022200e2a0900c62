"""Growth benchmark (issue 13): what costs grow with stored history, measured with the product's own code.

    .venv/bin/python bench/growth.py                       # make bench-growth: the issue's full sizes
    .venv/bin/python bench/growth.py --events 1000000 --players 100000 --board-players 500000 --updates 10000

Scenarios (``--only`` picks some; each prints one markdown table, medians of ``--runs``):
  write     PostgreSQL batch writes (pg_sink.write_batch, 5,000 rows per commit): the write path of git
            ``--before-ref`` vs this tree on fresh schemas of a private PostgreSQL in alternation, each also
            with ``--events`` stored events (``--no-stored-before``: this tree only); disk and WAL per event.
  rebuild   ``leaderboard rebuild --from postgres`` and ``leaderboard verify`` as child processes: wall time
            and peak RSS at ``--events``/10 and at ``--events`` stored events over ``--players`` players,
            after the periods due at the fill's end were closed (``--no-rebuild-closes``: none).
            Redis-loss recovery runs the same rebuild_from_checkpoint (consumers/generations.py).
  redis     A ``--board-players`` board on a private redis-server; batches of 5,000 events are applied at
            ``--updates``/s through apply.lua with each call budget of ``--budgets`` (planned by RedisSink
            before the window, CPU timed apart), and with nothing (idle); a reader process times top-10 and
            around-me reads. Script time per call comes from SLOWLOG (Redis' own clock).
  convert   migration 0005 on an unpartitioned log of ``--events`` rows: time and rows/s.
  close     closing.close_one of a day of ``--close-events`` events while a writer process commits 5,000
            events/s: the close's time and the longest gap between two of the writer's commits.
  snapshot  a player's rank in a closed period of ``--players`` players read from PostgreSQL, as the API
            does once Redis lacks the period: this tree's query and the one it replaced, ``--reads`` each.

Everything lives in PostgreSQL schemas ``growth_<run>_*`` (dropped at the end), private PostgreSQL servers
(write, rebuild) and private redis-servers.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumers import checkpoints, closing, period_store, pg_sink  # noqa: E402
from consumers.migrate import migrate  # noqa: E402
from consumers.plan import Canonical  # noqa: E402
from consumers.redis_sink import Body, RedisSink, chunks  # noqa: E402
from leaderboard import scoring  # noqa: E402
from leaderboard import settings as settings_mod  # noqa: E402
from leaderboard.boards import Board  # noqa: E402
from leaderboard.keys import Keys  # noqa: E402
from leaderboard.lua_scripts import script  # noqa: E402
from query_api.snapshots import PLAYER_SQL  # noqa: E402
from query_api.store import script_text  # noqa: E402
from schemas.model import MatchWon  # noqa: E402
from tests.services import PostgresServer, RedisServer  # noqa: E402

BOARD = Board(id="global")
BATCH = 5000
RUN = uuid.uuid4().hex[:6]


# -- helpers ---------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        raise RuntimeError("no samples")
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


def uuid7(ms: int) -> str:
    h = os.urandom(9).hex()
    return f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7{h[:3]}-{'89ab'[int(h[3], 16) & 3]}{h[4:7]}-{h[7:18]}0"


def events(  # noqa: PLR0917 - a generator's knobs
    n: int, players: int, start: datetime, span_s: int, partition: int, first_offset: int, rng: random.Random
) -> list[Canonical]:
    """Wins of skewed players (a few play a lot), UUIDv7 ids, 3% re-sent copies."""
    out: list[Canonical] = []
    for i in range(n):
        if out and rng.random() < 0.03:
            out.append(Canonical(partition, first_offset + i, rng.choice(out).event))
            continue
        at = start + timedelta(seconds=rng.randrange(span_s))
        player = f"p{int(rng.paretovariate(1.1) * 7919) % players}"
        event = MatchWon(
            event_id=uuid7(int(at.timestamp() * 1000)),
            match_id=f"m{i}",
            player_id=player,
            game="chess",
            points=rng.randint(1, 10),
            occurred_at=at,
        )
        out.append(Canonical(partition, first_offset + i, event))
    return out


class Schemas:
    """PostgreSQL schemas of this run; each has its own search_path URL."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.made: list[str] = []

    def new(self, tag: str) -> str:
        name = f"growth_{RUN}_{tag}"
        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self.made.append(name)
        sep = "&" if "?" in self.base else "?"
        return f"{self.base}{sep}options={quote(f'-csearch_path={name}')}"

    def drop(self) -> None:
        if not self.made:  # nothing to drop: no connection (the write scenario's server is private)
            return
        with psycopg.connect(self.base, autocommit=True) as conn:
            for name in self.made:
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def fill(  # noqa: PLR0917 - a generator's knobs
    url: str, n: int, players: int, days: int, end: datetime | None = None, first_partition: int = 0
) -> float:
    """``n`` stored events over ``players`` players in the ``days`` days before ``end`` (default: now),
    generated inside PostgreSQL (12 Kafka partitions from ``first_partition``, offsets from 0). Returns
    seconds taken."""
    t0 = time.perf_counter()
    end = end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    with psycopg.connect(url, autocommit=True) as conn:
        month = start.replace(day=1, hour=0)
        partitioned = conn.execute("SELECT to_regproc('ensure_event_partition') IS NOT NULL").fetchone()
        while partitioned and partitioned[0] and month <= end:
            conn.execute("SELECT ensure_event_partition(%s)", (month,))
            month = (month + timedelta(days=32)).replace(day=1)
        ids = conn.execute("SELECT to_regclass('event_ids') IS NOT NULL").fetchone()
        # The de-duplication key (migration 0014) holds a row per stored event, as the write path leaves it.
        claim = " INSERT INTO event_ids SELECT * FROM ins" if ids and ids[0] else " SELECT count(*) FROM ins"
        step = 1_000_000
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            conn.execute(
                "WITH ins AS (INSERT INTO events (event_id, match_id, player_id, game, points, occurred_at,"
                " kafka_partition, kafka_offset)"
                " SELECT gen_random_uuid(), 'm' || g, 'p' || ((g * 7919) %% %(players)s), 'chess',"
                " 1 + g %% 7,"
                " %(start)s + (g::float8 / %(n)s) * %(span)s * interval '1 second', %(p0)s + g %% 12, g / 12"
                " FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) g"
                " RETURNING event_id, kafka_partition, kafka_offset)" + claim,
                {
                    "players": players,
                    "start": start,
                    "n": n,
                    "span": days * 86400,
                    "lo": lo,
                    "hi": hi,
                    "p0": first_partition,
                },
            )
        # VACUUM, not only ANALYZE: a live log is vacuumed as it grows (autovacuum), while a bulk fill leaves
        # every page for an insert-triggered autovacuum that would then run during the measurements.
        conn.execute("VACUUM (ANALYZE) events")
        if ids and ids[0]:
            conn.execute("VACUUM (ANALYZE) event_ids")
    return time.perf_counter() - t0


def table(title: str, head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# -- write -----------------------------------------------------------------------------------------------


def old_write_path(ref: str) -> tuple[types.ModuleType, list[str]]:
    """pg_sink.py and the migrations as they are at git ``ref`` (the 'before' of this comparison)."""

    def show(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{ref}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True, timeout=30
        ).stdout

    names = subprocess.run(
        ["git", "ls-tree", "--name-only", ref, "consumers/migrations/"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    spec = importlib.util.spec_from_loader(f"pg_sink_{ref}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    exec(compile(show("consumers/pg_sink.py"), f"{ref}:consumers/pg_sink.py", "exec"), module.__dict__)
    return module, [show(n) for n in sorted(n for n in names if n.endswith(".sql"))]


def backend_cpu(conn: psycopg.Connection) -> float:
    """CPU seconds the connection's PostgreSQL backend has used (the server runs on this host)."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    fields = Path(f"/proc/{row[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_rate(
    url: str, write: Callable[..., object], batches: list[list[Canonical]]
) -> tuple[float, float, float]:
    """(rows/s of wall time, rows per CPU second of client + backend, WAL bytes per row) of committed
    batches on one connection. The CPU figure holds still when other work shares the cores; wall time not."""
    with psycopg.connect(url) as conn:
        lsn0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        conn.commit()
        cpu0 = backend_cpu(conn) + time.process_time()
        conn.commit()
        t0 = time.perf_counter()
        for batch in batches:
            write(conn, batch, [BOARD])
        elapsed = time.perf_counter() - t0
        cpu = backend_cpu(conn) + time.process_time() - cpu0
        wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", lsn0).fetchone()
        conn.commit()
    rows = sum(len(b) for b in batches)
    return rows / elapsed, rows / cpu, float(wal[0] if wal else 0) / rows


def disk_per_event(url: str) -> tuple[int, float]:
    """(rows, bytes per row) of the event log: heap, TOAST and indexes of every leaf partition (the days of
    a month since migration 0018), and of the de-duplication key ``event_ids`` (migration 0014) where it
    exists."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM events), coalesce(sum(pg_total_relation_size(relid)), 0)"
            " + coalesce(pg_total_relation_size(to_regclass('event_ids')), 0)"
            " FROM pg_partition_tree('events') WHERE isleaf"
        ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1]) / max(1, int(row[0]))


def bench_write(args: argparse.Namespace) -> str:
    """Up to four variants per run, in a rotating order (the CPU is shared: drift hits all alike): the write
    path of ``--before-ref`` and of this tree, each on an empty log and on one holding ``--events`` events
    (``--no-stored-before``: the old tree on an empty log only, half the filling). A private PostgreSQL with
    the stack's settings: its buffer pool holds only this scenario's pages, whatever else the shared one
    serves meanwhile."""
    pg = private_postgres(args.pg_set)
    try:
        return _bench_write(args, Schemas(pg.url))
    finally:
        pg.cleanup()


def _bench_write(args: argparse.Namespace, schemas: Schemas) -> str:
    old_sink, old_sql = old_write_path(args.before_ref)
    rng = random.Random(1)
    end = args.write_end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    now = end - timedelta(days=1)
    variants = [("before", 0), ("after", 0), ("before", args.events), ("after", args.events)]
    if not args.stored_before:
        variants.remove(("before", args.events))
    urls: dict[tuple[str, int], str] = {}
    filled = 0.0
    for variant, stored in variants:
        url = urls[(variant, stored)] = schemas.new(f"w{variant[0]}{stored}")
        with psycopg.connect(url, autocommit=True) as conn:
            if variant == "before":
                for text in old_sql:
                    conn.execute(text.encode())
            else:
                migrate(conn)
        if stored:
            filled += fill(url, stored, args.players, args.write_history_days, end)
    rates: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    cpus: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    wal: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    for run in range(args.runs):
        recs = events(args.write_rows, args.players, now, 3600, 100 + run, 0, rng)
        batches = [recs[i : i + BATCH] for i in range(0, len(recs), BATCH)]
        for v in variants[run % len(variants) :] + variants[: run % len(variants)]:
            write = old_sink.write_batch if v[0] == "before" else pg_sink.write_batch
            rate, per_cpu, per_row = write_rate(urls[v], write, batches)
            rates[v].append(rate)
            cpus[v].append(per_cpu)
            wal[v].append(per_row)
    rows: list[list[object]] = []
    for v in variants:
        name = f"{v[0]} ({args.before_ref if v[0] == 'before' else 'this tree'}), {v[1]:,} stored"
        runs = ", ".join(f"{r:,.0f}" for r in rates[v])
        rows.append(
            [name, f"{median(cpus[v]):,.0f}", f"{median(rates[v]):,.0f}", runs, f"{median(wal[v]):,.0f}"]
        )
    stored_n, per_event = disk_per_event(urls[("after", args.events)])
    ratio = median(cpus[("after", args.events)]) / median(cpus[("after", 0)])
    change = median(cpus[("after", 0)]) / median(cpus[("before", 0)])
    return table(
        f"Write rate ({args.write_rows:,} rows per run, 5,000 per commit, one connection; stored events over"
        f" the {args.write_history_days} day(s) before {end:%Y-%m-%d %H:%M}, the runs a day before that;"
        " server settings:"
        f" the stack's{' + ' + ', '.join(args.pg_set) if args.pg_set else ''})",
        ["write path", "rows per CPU-s (median)", "rows/s wall (median)", "wall runs", "WAL B/row"],
        rows,
    ) + (
        f"\nPer CPU second: this tree vs {args.before_ref} on an empty log {change:.2f}x;"
        f" with {args.events:,} stored {ratio:.2f}x the empty-log rate (target >= 0.9x)."
        f" Disk per stored event (heap + indexes, partitioned log): {per_event:,.0f} B"
        f" over {stored_n:,} rows."
        f" Filling took {filled:,.0f} s.\n"
    )


def bench_convert(args: argparse.Namespace, schemas: Schemas) -> str:
    """Migration 0005 on an unpartitioned log of ``--events`` rows (the ``--before-ref`` schema)."""
    _, old_sql = old_write_path(args.before_ref)
    url = schemas.new("conv")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for i, text in enumerate(old_sql, start=1):
            conn.execute(text.encode())
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (i, f"old{i}"))
    fill(url, args.events, args.players, 60)
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        applied = migrate(conn)
        took = time.perf_counter() - t0
    rows = [[", ".join(applied), f"{args.events:,}", f"{took:.1f} s", f"{args.events / took:,.0f}"]]
    return table(
        "Converting an unpartitioned log (migration 0005)", ["applied", "rows", "time", "rows/s"], rows
    )


# -- rebuild / verify --------------------------------------------------------------------------------------


def child(argv: list[str], env: dict[str, str], timeout_s: float) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in GB, CPU seconds) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(10)
            raise RuntimeError(f"{' '.join(argv[-3:])}: over {timeout_s:.0f} s")
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-3:])} exited {proc.returncode}: {err.strip()[-400:]}")
    return wall, usage.ru_maxrss / 1024 / 1024, usage.ru_utime + usage.ru_stime


def postmaster_cpu(server: PostgresServer) -> float:
    """CPU seconds of a private PostgreSQL's postmaster and its exited children (the backends of finished
    connections: what a job's queries cost; the background writers' ongoing work is left out)."""
    root = (server.data / "postmaster.pid").read_text().split("\n", 1)[0]
    rest = Path(f"/proc/{root}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in rest[11:15]) / os.sysconf("SC_CLK_TCK")


def private_postgres(extra: Sequence[str] = ()) -> PostgresServer:
    """A private PostgreSQL with the stack's settings (deploy/postgres/postgresql.conf), then ``extra``
    (``name=value`` lines, --pg-set): millions of rows neither fill nor slow the shared one."""
    server = PostgresServer()
    conf = (ROOT / "deploy" / "postgres" / "postgresql.conf").read_text()
    keep = [line for line in conf.splitlines() if line.split("=")[0].strip() in _PG_KEEP]
    with (server.data / "postgresql.conf").open("a") as f:
        f.write("\n".join([*keep, *extra]) + "\n")
    server.stop()
    server.start()
    return server


_PG_KEEP = {"shared_buffers", "wal_compression", "fsync", "synchronous_commit", "full_page_writes"}


def bench_rebuild(args: argparse.Namespace, schemas: Schemas) -> str:
    """``rebuild --from postgres`` and ``verify`` as child processes on a private PostgreSQL and Redis, at a
    tenth of ``--events`` and at ``--events``. The checkpoint's first fold (once in a deployment's life) is
    timed apart first; each run then costs the checkpoint plus an empty tail. CPU per process kind from
    rusage, the postmaster's children and Redis' INFO: on a shared machine they hold still, wall time not."""
    rows = []
    cli = [str(ROOT / ".venv" / "bin" / "leaderboard")]
    for n in (args.events // 10, args.events):
        pg = private_postgres(args.pg_set)
        try:
            url = pg.url
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
            end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            filled = fill(url, n, args.players, args.days, end=end)
            t0 = time.perf_counter()
            with psycopg.connect(url, autocommit=True) as conn:
                checkpoints.advance(conn, BOARD)
                ckpt = conn.execute("SELECT count(*) FROM standings_checkpoint").fetchone()
            fold_s = time.perf_counter() - t0
            ckpt_rows = int(ckpt[0]) if ckpt else 0
            print(f"{n:,} events: filled in {filled:.0f} s, first fold {fold_s:.1f} s, {ckpt_rows:,} rows")
            closed, close_s = close_due(url, end) if args.rebuild_closes else ([], 0.0)
            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM standings_checkpoint WHERE NOT period = ANY(%s)", (closed,)
                ).fetchone()
            open_rows = int(row[0]) if row else 0
            print(
                f"{n:,} events: {len(closed)} due period(s) closed in {close_s:.0f} s;"
                f" {open_rows:,} checkpoint rows in open periods (what a rebuild loads)",
                flush=True,
            )
            with RedisServer() as server:
                r = redis.Redis.from_url(server.url)
                env = dict(os.environ)
                env.update(
                    {
                        "LEADERBOARD_DATABASE_URL": url,
                        "LEADERBOARD_REDIS_URL": server.url,
                        "LEADERBOARD_REDIS_PREFIX": f"g{RUN}",
                        "LEADERBOARD_LOG_LEVEL": "WARNING",
                    }
                )
                results: dict[str, list[tuple[float, ...]]] = {"rebuild": [], "verify": []}
                jobs = [
                    ("rebuild", ["rebuild", "--from", "postgres"]),
                    ("verify", ["verify", "--attempts", "1"]),
                ]
                if closed:
                    # A deployment that has not rebuilt since its closes still holds their live copies
                    # (retention_days), which verify compares with period_standings: measured apart.
                    jobs.append(("copy", []))
                    jobs.append(("verify with closed copies", ["verify", "--attempts", "1"]))
                    # Each copy is compared whole once per generation and version, then by its size.
                    jobs.append(("verify again (copies compared before)", ["verify", "--attempts", "1"]))
                    results["verify with closed copies"] = []
                    results["verify again (copies compared before)"] = []
                for run in range(args.runs):
                    for job, argv in jobs:
                        if job == "copy":
                            copy_closed(url, r, f"g{RUN}", closed)
                            continue
                        load = os.getloadavg()[0]
                        pg0, r0 = postmaster_cpu(pg), redis_cpu(r)
                        wall, rss, cpu = child([*cli, *argv], env, args.timeout)
                        results[job].append(
                            (wall, rss, cpu, postmaster_cpu(pg) - pg0, redis_cpu(r) - r0, load)
                        )
                        # As it goes: one measurement at the sizes can take many minutes.
                        print(
                            f"{job} at {n:,} events, run {run + 1}: {wall:.1f} s, {rss:.2f} GB, CPU job"
                            f" {cpu:.1f} s, postgres {results[job][-1][3]:.1f} s, redis"
                            f" {results[job][-1][4]:.1f} s, load {load:.1f}",
                            flush=True,
                        )
                r.close()
        finally:
            pg.cleanup()
        for job, runs in results.items():
            cols = list(zip(*runs, strict=True))
            rows.append(
                [
                    job,
                    f"{n:,}",
                    f"{ckpt_rows:,}",
                    f"{len(closed)} ({close_s:.0f} s)",
                    f"{open_rows:,}",
                    f"{median(cols[0]):.1f} s",
                    ", ".join(f"{w:.1f}" for w in cols[0]),
                    f"{median(cols[2]):.1f} / {median(cols[3]):.1f} / {median(cols[4]):.1f}",
                    f"{median(cols[1]):.2f} GB",
                    ", ".join(f"{x:.1f}" for x in cols[5]),
                    f"{fold_s:.0f} s",
                ]
            )
    return table(
        f"Rebuild and verify ({args.players:,} players, {args.days} days, private PostgreSQL and Redis)",
        [
            "job",
            "stored events",
            "checkpoint rows",
            "periods closed first (time)",
            "rows in open periods",
            "time (median)",
            "runs (s)",
            "CPU s job / postgres / redis (median)",
            "peak RSS",
            "load avg at start",
            "first fold (once)",
        ],
        rows,
    )


def copy_closed(url: str, r: redis.Redis, prefix: str, closed: Sequence[str]) -> None:
    """Put the closed periods' Redis copies into the live generation, as the live keys a close leaves."""
    keys = Keys(prefix)
    gen = int(r.hget(keys.meta(BOARD.id), "active") or 0)
    with psycopg.connect(url, autocommit=True) as conn:
        for period in closed:
            scores = list(period_store.redis_scores(conn, BOARD, period).items())
            for i in range(0, len(scores), 10_000):
                r.zadd(keys.board(BOARD.id, gen, period), dict(scores[i : i + 10_000]))
            r.sadd(keys.periods(BOARD.id, gen), period)


def close_due(url: str, now: datetime) -> tuple[list[str], float]:
    """Close every period due at ``now``, as the scheduler would have done as they came due (each once in
    a deployment's life): (the periods closed, seconds)."""
    t0 = time.perf_counter()
    done = []
    with psycopg.connect(url, autocommit=True) as conn:
        for period in closing.due_periods(conn, BOARD, now):
            if closing.close_one(conn, BOARD, period) is not None:
                done.append(period)
    return done, time.perf_counter() - t0


# -- redis -----------------------------------------------------------------------------------------------


READS = ("top10", "around")


def reader(url: str, prefix: str, period: str, players: int, ready: Any, stop: Any, queue: Any) -> None:  # noqa: PLR0917
    """Times top-10 and around-me (radius 5) reads in turn until ``stop``, each one EVALSHA of the API's
    own read script (query_api.store); sends {kind: latencies in s}."""
    r = redis.Redis.from_url(url)
    keys = Keys(prefix)
    declared = [
        keys.meta(BOARD.id),
        keys.board(BOARD.id, 1, period),
        keys.stats(BOARD.id, 1, period),
        keys.periods(BOARD.id, 1),
        keys.names(),
    ]
    scripts = {k: r.register_script(script_text("top" if k == "top10" else k)) for k in READS}
    rng = random.Random(3)
    out: dict[str, list[float]] = {k: [] for k in READS}
    r.ping()
    ready.set()
    i = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while not stop.is_set():
        kind = READS[i % 2]
        i += 1
        args: list[str | int] = ["1", 0, 10] if kind == "top10" else ["1", f"p{rng.randrange(players)}", 5]
        t0 = time.perf_counter()
        reply = scripts[kind](keys=declared, args=args)
        out[kind].append(time.perf_counter() - t0)
        if b'"s":"ok"' not in reply:
            raise RuntimeError(f"{kind} read did not answer ok: {reply[:200]!r}")
        time.sleep(0.002)
    # The reader's own CPU share: a reader starved of a core on a shared machine shows up here, not in Redis.
    out["cpu"] = [(time.process_time() - cpu0) / (time.perf_counter() - wall0)]
    queue.put(out)


def redis_cpu(r: redis.Redis) -> float:
    """CPU seconds Redis' main thread has used (user + system): what the scripts cost, preemption aside
    (SLOWLOG's wall time also counts the time the thread waited for a core)."""
    info = cast("dict[str, float]", r.info("cpu"))
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


def plan_batches(sink: RedisSink, batches: Sequence[list[Canonical]]) -> tuple[list[list[Body]], float]:
    """The apply.lua payloads RedisSink.apply would send for each batch, and the CPU seconds planning took
    (fold, chunking, JSON): the consumer's share of the cost of a call budget."""
    t0 = time.process_time()
    out = []
    for batch in batches:
        ordered = sorted(batch, key=lambda r: (r.partition, r.offset))
        pos: dict[int, int] = {}
        for rec in ordered:
            pos[rec.partition] = rec.offset
        parts = chunks(BOARD, ordered, sink._max)
        out.append(sink._bodies(BOARD, parts, None, pos))
    return out, time.process_time() - t0


def bench_redis(args: argparse.Namespace) -> str:
    """Read latency on a large board while batches are applied at ``--updates`` events/s, per call budget.

    The payloads are planned before each window (their CPU cost is measured on its own), so the window only
    sends script calls, paced: the read latencies then show what the scripts do to Redis, not whether the
    planning process kept up on a shared machine. ``idle`` is the same reader with nothing applied.
    """
    budgets, trips = args.budgets, args.trips
    variants: list[tuple[int, int] | None] = [None, *itertools.product(budgets, trips)]
    rows = []
    per: dict[str, dict[str, list[float]]] = {}
    now = datetime.now(UTC)
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url)
        apply_sha = r.register_script(script("apply")).sha.encode()  # SLOWLOG entries of the writer's calls
        r.config_set("slowlog-log-slower-than", 0)
        r.config_set("slowlog-max-len", 1_000_000)
        keys = Keys(f"g{RUN}")
        r.hset(keys.meta(BOARD.id), mapping={"active": 1, "writing": 1})
        all_time = BOARD.period_keys(now)[0]
        big = [keys.board(BOARD.id, 1, k) for k in BOARD.period_keys(now)]
        rng = random.Random(2)
        for zkey in big[:2]:  # all-time and this month hold every player
            for lo in range(0, args.board_players, 10_000):
                members = range(lo, min(args.board_players, lo + 10_000))
                r.zadd(
                    zkey,
                    {f"p{i}": scoring.pack(rng.randint(1, 5000), rng.randrange(1 << 20)) for i in members},
                )
        rate = args.updates
        offset = 0
        for run in range(args.runs):
            for variant in variants:
                budget, trip = variant or (None, 1)
                label = (
                    "idle"
                    if budget is None
                    else ("one call per batch" if budget >= 10**6 else f"<= {budget}")
                    + (", one pipeline per batch" if trip >= 10**6 else f", {trip} per trip")
                )
                n_batches = max(1, int(args.seconds * rate / BATCH))
                batches = []
                for _ in range(n_batches):
                    batches.append(
                        events(BATCH, args.board_players, now - timedelta(minutes=5), 300, 0, offset, rng)
                    )
                    offset += BATCH
                sink = RedisSink(r, keys, [BOARD], max_updates=budget or 1, calls_per_trip=trip)
                bodies, plan_cpu = plan_batches(sink, batches) if budget is not None else ([], 0.0)
                ready, stop = mp.Event(), mp.Event()
                queue: mp.Queue[dict[str, list[float]]] = mp.Queue()
                proc = mp.Process(
                    target=reader,
                    args=(server.url, f"g{RUN}", all_time, args.board_players, ready, stop, queue),
                )
                proc.start()
                if not ready.wait(60):
                    raise RuntimeError("reader process did not start within 60 s")
                r.slowlog_reset()
                cpu0 = redis_cpu(r)
                load0 = os.getloadavg()[0]
                t0 = time.perf_counter()
                stamp = str(int(time.time() * 1000))
                updates = 0
                if budget is None:
                    time.sleep(args.seconds)
                for i, calls in enumerate(bodies):
                    wait = t0 + i * BATCH / rate - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    queued = [(BOARD, b) for b in calls]
                    replies = sink.send(r.pipeline(transaction=False), queued, None, stamp)
                    updates += sum(int(res[1]) for res in replies)
                window_s = time.perf_counter() - t0
                cpu_s = redis_cpu(r) - cpu0
                stop.set()
                lat = queue.get(timeout=60)
                proc.join(30)
                scripts = [
                    e["duration"] / 1000
                    for e in r.slowlog_get(1_000_000)
                    if e["command"].lower().startswith(b"evalsha " + apply_sha)  # not the reader's scripts
                ]
                applied = 0 if budget is None else n_batches * BATCH / window_s
                cells = {
                    "applied ev/s": applied,
                    "updates/s": updates / window_s,
                    "script p99 ms": pct(scripts, 0.99) if scripts else 0.0,
                    "script max ms": max(scripts, default=0.0),
                    "script ms/1k ev": sum(scripts) / (n_batches * BATCH / 1000) if scripts else 0.0,
                    "redis CPU ms/1k ev": cpu_s * 1000 / (n_batches * BATCH / 1000) if budget else 0.0,
                    "plan ms/1k ev": plan_cpu * 1000 / (n_batches * BATCH / 1000) if budget else 0.0,
                    "top10 p50 ms": pct(lat["top10"], 0.5) * 1000,
                    "top10 p99 ms": pct(lat["top10"], 0.99) * 1000,
                    "around p50 ms": pct(lat["around"], 0.5) * 1000,
                    "around p99 ms": pct(lat["around"], 0.99) * 1000,
                    "reader CPU %": lat["cpu"][0] * 100,
                }
                for k, v in cells.items():
                    per.setdefault(label, {}).setdefault(k, []).append(v)
                rows.append(
                    [label, run + 1, len(scripts), f"{load0:.1f}"] + [f"{v:,.2f}" for v in cells.values()]
                )
        r.close()
    head = ["calls", "run", "script calls", "load avg", *list(next(iter(per.values())))]
    title = (
        f"Redis: {args.board_players:,}-player board, {rate:,} events/s offered in batches of {BATCH:,}"
        f" ({args.seconds:g} s windows), per call budget (sorted-set updates per apply.lua call)"
    )
    medians = [
        [label, "median", "", ""] + [f"{median(v):,.2f}" for v in cells_.values()]
        for label, cells_ in per.items()
    ]
    return table(title, head, rows) + "\n" + table(f"{title}: medians of {args.runs} runs", head, medians)


# -- close -----------------------------------------------------------------------------------------------


def writer(url: str, seconds: float, rate: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    """Commits batches of today's events at ``rate``/s; sends the commit instants."""
    rng = random.Random(5)
    now = datetime.now(UTC)
    commits: list[float] = []
    per = max(1, rate // 10)
    with psycopg.connect(url) as conn:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < seconds:
            wait = t0 + i * per / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            pg_sink.write_batch(
                conn, events(per, 10_000, now - timedelta(minutes=10), 300, 77, i * per, rng), [BOARD]
            )
            commits.append(time.monotonic())
            i += 1
    queue.put(commits)


def bench_close(args: argparse.Namespace, schemas: Schemas) -> str:
    rows = []
    for run in range(args.runs):
        url = schemas.new(f"c{run}")
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        fill(url, args.close_events, args.players, 1, end=today)  # every one in yesterday's daily period
        day = (today - timedelta(days=1)).strftime("%Y-%m-%d")
        queue: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        proc = mp.Process(target=writer, args=(url, args.seconds * 3, 5000, queue))
        proc.start()
        time.sleep(2)
        with psycopg.connect(url, autocommit=True) as conn:
            # What the scheduler does every LEADERBOARD_CLOSE_INTERVAL_S, here all of the day at once: the
            # close then folds only the tail.
            f0 = time.monotonic()
            checkpoints.advance(conn, BOARD)
            f1 = time.monotonic()
            t0 = time.monotonic()
            closing.close_one(conn, BOARD, f"daily:{day}")
            t1 = time.monotonic()
        commits = queue.get(timeout=args.seconds * 3 + 120)
        proc.join(30)
        gaps = [b - a for a, b in itertools.pairwise(commits)]
        during = [b - a for a, b in itertools.pairwise(commits) if b >= t0 and a <= t1]
        folding = [b - a for a, b in itertools.pairwise(commits) if b >= f0 and a <= f1]
        if not commits or commits[-1] < t1:
            raise RuntimeError("the writer stopped before the close ended: raise --seconds")
        rows.append(
            [
                run + 1,
                f"{f1 - f0:.1f} s",
                f"{max(folding, default=0):.2f} s",
                f"{t1 - t0:.1f} s",
                f"{max(during, default=0):.2f} s",
                f"{max(gaps):.2f} s",
            ]
        )
    return table(
        f"Close a day of {args.close_events:,} events while 5,000 events/s are written",
        [
            "run",
            "checkpoint fold of the whole day first (the scheduler's work)",
            "longest commit gap during the fold",
            "close time (freeze, fold of the tail, standings)",
            "longest commit gap during close",
            "longest gap overall",
        ],
        rows,
    )


# One player of a closed period as query_api/snapshots.py read it before PLAYER_SQL: two counts of the period.
_PLAYER_BY_COUNTS = """
SELECT s.rank, s.player_id, s.score, s.reached_at, p.display_name,
       (SELECT count(*) FROM period_standings t
        WHERE t.board = s.board AND t.period = s.period AND t.rank > s.rank),
       (SELECT count(*) FROM period_standings t
        WHERE t.board = s.board AND t.period = s.period AND t.position < s.position)
FROM period_standings s LEFT JOIN players p ON p.player_id = s.player_id
WHERE s.board = %s AND s.period = %s AND s.player_id = %s
"""


def bench_snapshot(args: argparse.Namespace, schemas: Schemas) -> str:
    """A player's rank in a closed period of ``--players`` players as the API reads it from PostgreSQL
    (after a rebuild, or past the period's Redis retention): this tree's PLAYER_SQL and the counting query
    it replaced, in alternation on the same rows (scores 1-1000: ties of ~1,000 players)."""
    url = schemas.new("snap")
    rng = random.Random(7)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        conn.execute(
            "INSERT INTO closed_periods (board, period, closed_at, players, standings_at)"
            " VALUES ('global', 'daily:2026-11-01', now(), %s, now())",
            (args.players,),
        )
        conn.execute(
            "INSERT INTO period_standings (board, period, rank, position, player_id, score, reached_at)"
            " SELECT 'global', 'daily:2026-11-01', rank() OVER (ORDER BY score DESC),"
            " row_number() OVER (ORDER BY score DESC, g), 'p' || g, score, '2026-11-01'"
            " FROM (SELECT g, 1 + (g * 7919) %% 1000 AS score FROM generate_series(1::bigint, %s) g) x",
            (args.players,),
        )
        conn.execute("VACUUM (ANALYZE) period_standings")
        times: dict[str, list[float]] = {"PLAYER_SQL (this tree)": [], "two count(*) (before)": []}
        for _ in range(args.reads):
            player = f"p{rng.randrange(1, args.players + 1)}"
            answers = []
            for name, sql in (
                ("PLAYER_SQL (this tree)", PLAYER_SQL),
                ("two count(*) (before)", _PLAYER_BY_COUNTS),
            ):
                t0 = time.perf_counter()
                row = conn.execute(sql, ("global", "daily:2026-11-01", player)).fetchone()
                times[name].append((time.perf_counter() - t0) * 1000)
                answers.append(row)
            if answers[0] != answers[1]:
                raise RuntimeError(f"{player}: the queries disagree: {answers}")
    new, old = (median(v) for v in times.values())
    rows = [[name, f"{median(v):.2f} ms", f"{pct(v, 99):.2f} ms", len(v)] for name, v in times.items()]
    rows.append(["ratio (before / this tree), medians", f"{old / new:.0f}x", "", ""])
    return table(
        f"A player's rank in a closed period of {args.players:,} players, from PostgreSQL",
        ["query", "median", "p99", "reads"],
        rows,
    )


# -- main ------------------------------------------------------------------------------------------------


def setting(text: str) -> str:
    """--pg-set: one ``name=value`` line of postgresql.conf."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip().replace("_", "").isalnum() or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE (e.g. shared_buffers=2GB)")
    return f"{name.strip()} = '{value.strip()}'"


def counts(text: str) -> list[int]:
    """A comma list of whole numbers >= 1 (--budgets, --trips)."""
    try:
        out = [int(x) for x in text.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of whole numbers >= 1")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000_000, help="large stored size (small = a tenth)")
    p.add_argument("--players", type=int, default=1_000_000)
    p.add_argument("--days", type=int, default=60, help="days the stored events span (rebuild)")
    p.add_argument("--board-players", type=int, default=5_000_000)
    p.add_argument("--updates", type=int, default=25_000, help="events/s offered to Redis")
    p.add_argument(
        "--budgets",
        type=counts,
        default="1000000000,2000,1000,500,250",
        help="sorted-set updates per apply.lua call to compare (redis scenario)",
    )
    p.add_argument(
        "--trips",
        type=counts,
        default="1",
        help="apply.lua calls per round trip to compare (redis; 1000000 = all)",
    )
    p.add_argument("--write-rows", type=int, default=200_000, help="rows per write-rate run")
    p.add_argument("--close-events", type=int, default=5_000_000)
    p.add_argument("--seconds", type=float, default=10.0, help="length of a timed load window")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--reads", type=int, default=200, help="snapshot: player reads per query")
    p.add_argument("--timeout", type=float, default=1800.0, help="bound on one child process")
    p.add_argument("--before-ref", default="d0b7a21", help="git ref whose write path is 'before'")
    # One add_argument per option (duplicates reports their common shape: argparse's, not shared logic).
    p.add_argument(
        "--pg-set",
        type=setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="write, rebuild: a postgresql.conf line for the private server after the stack's (repeatable)",
    )
    p.add_argument(
        "--rebuild-closes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rebuild: close the periods due at the fill's end first, as a running deployment has",
    )
    p.add_argument(
        "--write-history-days",
        type=int,
        default=60,
        help="write: days the stored events span up to now (1: all in the month the runs write to)",
    )
    p.add_argument(
        "--stored-before",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write: fill a log of --events for the --before-ref tree too",
    )
    p.add_argument(
        "--write-end",
        type=lambda text: datetime.fromisoformat(text).replace(tzinfo=UTC),
        default=None,
        help="write: the stored events end here (UTC, e.g. 2026-11-29; default now), the runs write a day"
        " before it: later in a month, so that --write-history-days of history share the runs' month",
    )
    p.add_argument("--only", default="write,convert,rebuild,redis,close,snapshot")
    args = p.parse_args()
    config = settings_mod.load()
    schemas = Schemas(config.database_url)
    out = [f"## Growth benchmark {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `{' '.join(sys.argv[1:])}`\n"]
    try:
        for name in args.only.split(","):
            t0 = time.perf_counter()
            if name == "write":
                out.append(bench_write(args))
            elif name == "convert":
                out.append(bench_convert(args, schemas))
            elif name == "rebuild":
                out.append(bench_rebuild(args, schemas))
            elif name == "redis":
                out.append(bench_redis(args))
            elif name == "close":
                out.append(bench_close(args, schemas))
            elif name == "snapshot":
                out.append(bench_snapshot(args, schemas))
            else:
                raise SystemExit(f"--only: unknown scenario {name!r}")
            print(out[-1], flush=True)
            print(f"({name}: {time.perf_counter() - t0:.0f} s)\n", flush=True)
    finally:
        schemas.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
