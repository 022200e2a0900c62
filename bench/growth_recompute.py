"""Cost of the recompute jobs as the event log grows: ``rebuild --from postgres`` and ``verify``.

    .venv/bin/python bench/growth_recompute.py [--sizes 500000,2000000] [--players 50000] [--runs 3]
        [--old REF]

Fills a private PostgreSQL schema (``growth_<run>``) with N synthetic stored events (generate_series: 12
partitions, 30 days of November 2026, skewed players) and times each command as a child process, with
its peak RSS (``wait4``). ``--old REF`` also times the code of a git ref (exported with ``git archive``)
against the same data. The first rebuild of the current code also folds the checkpoint (once in a log's
life) and is reported apart; the medians are over ``--runs`` later runs. Redis keys use a private prefix;
schema and keys are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumers.migrate import migrate  # noqa: E402
from leaderboard import settings as settings_mod  # noqa: E402

_FILL = """
INSERT INTO events (event_id, match_id, player_id, game, points, occurred_at, kafka_partition, kafka_offset)
SELECT gen_random_uuid(), 'm', 'p' || floor(%(players)s * power(random(), 3))::int, 'chess',
       1 + (i %% 5), timestamptz '2026-11-01' + (i %% 2592000) * interval '1 second', i %% 12, i / 12
FROM generate_series(%(lo)s, %(hi)s - 1) AS i
"""


def run_child(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one child process; raises if it fails."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.monotonic() - started
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err[-500:]}")
    return took, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="500000,2000000")
    parser.add_argument("--players", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--old", help="also time this git ref's code (e.g. main)")
    args = parser.parse_args()
    base = settings_mod.load()
    tag = uuid.uuid4().hex[:8]
    schema = f"growth_{tag}"
    sep = "&" if "?" in base.database_url else "?"
    db_url = f"{base.database_url}{sep}options=-csearch_path%3D{schema}"
    env = dict(os.environ)
    env.update(
        LEADERBOARD_DATABASE_URL=db_url,
        LEADERBOARD_REDIS_PREFIX=f"growth{tag}",
        LEADERBOARD_LOG_LEVEL="WARNING",
    )
    old_dir: Path | None = None
    if args.old:
        old_dir = Path(tempfile.mkdtemp(prefix="growth-old-"))
        data = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.old], capture_output=True, check=True
        ).stdout
        archive = old_dir / "src.tar"
        archive.write_bytes(data)
        with tarfile.open(archive) as tar:
            tar.extractall(old_dir, filter="data")
    code = {"new": ROOT} | ({"old": old_dir} if old_dir else {})
    rows: list[str] = []
    with psycopg.connect(base.database_url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            migrate(conn)
            have = 0
            for size in (int(s) for s in args.sizes.split(",")):
                conn.execute(_FILL, {"players": args.players, "lo": have, "hi": size})
                conn.execute("ANALYZE events")
                have = size
                for name, src in code.items():
                    child_env = dict(env, PYTHONPATH=str(src))
                    cli = [sys.executable, "-m", "leaderboard.cli"]
                    if name == "new":
                        conn.execute("DELETE FROM checkpoint_boards")  # cold: the fold of the whole log, once
                        conn.execute("DELETE FROM standings_checkpoint")
                        took, rss = run_child([*cli, "rebuild", "--from", "postgres"], child_env, src)
                        first = "new, first rebuild (folds the checkpoint)"
                        rows.append(f"| {size:,} | {first} | {took:.1f} | {rss:.0f} |")
                        print(rows[-1], flush=True)
                    for job in (["rebuild", "--from", "postgres"], ["verify", "--attempts", "1"]):
                        samples = [run_child([*cli, *job], child_env, src) for _ in range(args.runs)]
                        t = statistics.median(s[0] for s in samples)
                        m = statistics.median(s[1] for s in samples)
                        rows.append(f"| {size:,} | {name}, `{job[0]}` | {t:.1f} | {m:.0f} |")
                        print(rows[-1], flush=True)
    finally:
        with psycopg.connect(base.database_url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
        client = redis.Redis.from_url(base.redis_url)
        keys = list(client.scan_iter(match=f"growth{tag}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.unlink(*keys[i : i + 500])
        client.close()
    print(f"\n{args.players:,} players, medians of {args.runs}\n")
    print("| stored events | code, job | seconds | peak RSS MB |\n|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
