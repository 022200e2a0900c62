"""Redis CPU per applied update of apply.lua: this tree's script against a git ref's, side by side.

    .venv/bin/python bench/apply_cost.py [--before-ref main] [--players 2000000] [--batches 6] [--runs 3]
        [--aggregation sum|best|last] [--budget 250] [--after-budget N] [--after-file experiment.lua]

On a private redis-server, a board whose all-time and monthly sets hold ``--players`` players; the same
``--batches`` batches of 5,000 events (planned once by RedisSink at ``--budget`` sorted-set updates per
call) are applied by each script, batch by batch in alternating order, ``--runs`` times. Before each batch
the watermarks, positions, stats (and a ``last`` board's latest-event hashes) are deleted, so both scripts
write the same updates onto boards of the same size. Per script and run: Redis' own time in EVALSHA per
update (INFO commandstats), the main thread's CPU per update (INFO cpu: includes reading the calls off the
socket), and the longest and p99 single call (SLOWLOG, Redis' clock). Before timing, both scripts apply
the batches to two empty boards and every key they wrote is compared: a script that changed a result
stops the benchmark. Not a test; figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from growth import events  # noqa: E402

from consumers.plan import Canonical  # noqa: E402
from consumers.redis_sink import Body, RedisSink, chunks  # noqa: E402
from leaderboard import keys as keys_mod  # noqa: E402
from leaderboard import lua_scripts, scoring  # noqa: E402
from leaderboard.boards import Board  # noqa: E402
from leaderboard.keys import Keys  # noqa: E402
from tests.services import RedisServer  # noqa: E402

BATCH = 5000


def old_script(ref: str) -> str:
    """apply.lua of git ``ref`` behind that ref's guard (the key and score preludes are this tree's)."""

    def show(path: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:{path}"], check=True, capture_output=True, text=True
        ).stdout

    mod = types.ModuleType("old_lua_scripts")
    exec(compile(show("leaderboard/lua_scripts.py"), "old_lua_scripts.py", "exec"), mod.__dict__)
    guard = cast("str", mod.GUARD)
    return guard + scoring.lua_prelude() + keys_mod.lua_prelude() + show("leaderboard/lua/apply.lua")


def plan(sink: RedisSink, board: Board, batches: Sequence[list[Canonical]], budget: int) -> list[list[Body]]:
    """What RedisSink.apply sends for each batch: its chunks' payloads."""
    out = []
    for batch in batches:
        ordered = sorted(batch, key=lambda r: (r.partition, r.offset))
        pos = {r.partition: r.offset for r in ordered}
        out.append(sink._bodies(board, chunks(board, ordered, budget), None, pos))
    return out


def apply(
    r: redis.Redis, sha: str, sink: RedisSink, board: Board, bodies: list[list[Body]], *, now: str
) -> int:
    """Each batch's calls in one pipeline, as the sink sends them; the updates applied."""
    updates = 0
    for calls in bodies:
        pipe = r.pipeline(transaction=False)
        for body in calls:
            keys, writing = sink.declared(board, body.periods, None)
            pipe.evalsha(sha, len(keys), *keys, sink._keys.base(board.id), body.data, now, *writing)
        for res in pipe.execute():
            if res[0] != b"ok" or len(res) > 3:
                raise RuntimeError(f"apply.lua answered {res[:4]!r}, not a clean ok")
            updates += int(res[1])
    return updates


def state_keys(keys: Keys, board: Board, bodies: list[list[Body]]) -> list[str]:
    periods = sorted({p for calls in bodies for body in calls for p in body.periods})
    return keys.generation(board.id, 1, periods, latest=board.aggregation == "last")


def dump(r: redis.Redis, key: str) -> object:
    kind = r.type(key)
    if kind == b"zset":
        return r.zrange(key, 0, -1, withscores=True)
    if kind == b"hash":
        return sorted(r.hgetall(key).items())
    if kind == b"set":
        return sorted(r.smembers(key))
    return kind


def same_results(
    r: redis.Redis, shas: dict[str, str], board: Board, bodies: dict[str, list[list[Body]]]
) -> None:
    """Both scripts from empty boards, then every key compared (``updated_ms`` is the same ``now``)."""
    states = []
    for name, sha in shas.items():
        keys = Keys(f"parity-{name}")
        r.hset(keys.meta(board.id), mapping={"active": 1, "writing": 1})
        sink = RedisSink(r, keys, [board])
        apply(r, sha, sink, board, bodies[name], now="1")
        apply(r, sha, sink, board, bodies[name][:1], now="1")  # a redelivery: skipped whole
        states.append([dump(r, k) for k in state_keys(keys, board, bodies[name])])
    if states[0] != states[1]:
        raise RuntimeError("the two scripts wrote different boards")


def fill(r: redis.Redis, keys: Keys, board: Board, players: int, now: datetime) -> None:
    rng = random.Random(2)
    for zkey in [keys.board(board.id, 1, k) for k in board.period_keys(now)][:2]:  # all-time, month
        for lo in range(0, players, 10_000):
            members = range(lo, min(players, lo + 10_000))
            r.zadd(
                zkey, {f"p{i}": scoring.pack(rng.randint(1, 5000), rng.randrange(1 << 20)) for i in members}
            )


class Tally:
    """One script's sums over a run's batches."""

    def __init__(self) -> None:
        self.updates = 0
        self.usec = 0.0
        self.cpu_s = 0.0
        self.calls: list[float] = []

    def row(self) -> dict[str, float]:
        calls = sorted(self.calls)
        return {
            "updates": self.updates,
            "calls": len(calls),
            "evalsha us/update": self.usec / self.updates,
            "main-thread CPU us/update": self.cpu_s * 1e6 / self.updates,
            "call p50 ms": calls[len(calls) // 2],
            "call p99 ms": calls[min(len(calls) - 1, int(0.99 * len(calls)))],
            "call max ms": calls[-1],
        }


def main_cpu(r: redis.Redis) -> float:
    cpu = cast("dict[str, float]", r.info("cpu"))
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def measure(  # noqa: PLR0917 - one batch of one script
    r: redis.Redis, sha: str, sink: RedisSink, board: Board, calls: list[Body], reset: list[str], into: Tally
) -> None:
    """One batch from the same state (watermarks gone): Redis' time, its main thread's CPU, each call."""
    r.delete(*reset)
    r.config_resetstat()
    r.slowlog_reset()
    cpu0 = main_cpu(r)
    into.updates += apply(r, sha, sink, board, [calls], now=str(int(time.time() * 1000)))
    into.cpu_s += main_cpu(r) - cpu0
    stats = r.info("commandstats")["cmdstat_evalsha"]
    durations = [
        e["duration"] / 1000 for e in r.slowlog_get(1_000_000) if e["command"].lower().startswith(b"evalsha")
    ]
    if len(durations) != int(stats["calls"]):
        raise RuntimeError(f"SLOWLOG kept {len(durations)} of {stats['calls']} calls")
    into.usec += float(stats["usec"])
    into.calls += durations


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-ref", default="main", help="git ref whose apply.lua is the baseline")
    ap.add_argument("--players", type=int, default=2_000_000, help="members of the all-time and month sets")
    ap.add_argument("--batches", type=int, default=6, help="batches of 5,000 events per application")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--aggregation", choices=["sum", "best", "last"], default="sum")
    ap.add_argument("--budget", type=int, default=250, help="sorted-set updates per call (MAX_UPDATES)")
    ap.add_argument("--after-budget", type=int, help="the after variant's budget (default --budget)")
    ap.add_argument("--after-file", type=Path, help="experiments: this apply.lua instead of the tree's one")
    args = ap.parse_args()

    t_start = time.perf_counter()
    now = datetime.now(UTC)
    board = Board(id="global", aggregation=args.aggregation)
    rng = random.Random(1)
    batches = [
        events(BATCH, args.players, now - timedelta(minutes=5), 300, 0, i * BATCH, rng)
        for i in range(args.batches)
    ]
    sources = {"before": old_script(args.before_ref), "after": lua_scripts.script("apply")}
    if args.after_file:
        sources["after"] = lua_scripts.prelude() + args.after_file.read_text(encoding="utf-8")
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url)
        print(f"private redis-server pid {r.info('server')['process_id']} at {server.url}", file=sys.stderr)
        r.config_set("slowlog-log-slower-than", 0)
        r.config_set("auto-aof-rewrite-percentage", 0)  # a rewrite's fork would copy pages under the runs
        r.config_set("slowlog-max-len", 1_000_000)
        shas = {name: r.script_load(src) for name, src in sources.items()}
        keys = Keys("cost")
        r.hset(keys.meta(board.id), mapping={"active": 1, "writing": 1})
        sink = RedisSink(r, keys, [board], max_updates=args.budget)
        budgets = {"before": args.budget, "after": args.after_budget or args.budget}
        bodies = {name: plan(sink, board, batches, budget) for name, budget in budgets.items()}
        same_results(r, shas, board, bodies)
        fill(r, keys, board, args.players, now)
        reset = [k for k in state_keys(keys, board, bodies["after"]) if r.type(k) != b"zset"]
        # Warm-up: the day's and week's sets get their members once, so every timed run updates, not inserts.
        apply(r, shas["after"], sink, board, bodies["after"], now="0")
        results: dict[str, list[dict[str, float]]] = {name: [] for name in shas}
        for _ in range(args.runs):
            # Batch by batch in alternating order, so a neighbour's burst on the shared cores hits both.
            tallies = {name: Tally() for name in shas}
            for i in range(len(batches)):
                for name in list(shas) if i % 2 == 0 else list(reversed(shas)):
                    measure(r, shas[name], sink, board, bodies[name][i], reset, tallies[name])
            for name, tally in tallies.items():
                results[name].append(tally.row())
        info = r.info("server")
        r.close()

    names = list(shas)
    metrics = [m for m in results[names[0]][0] if m not in {"updates", "calls"}]
    label = {
        "before": args.before_ref,
        "after": "this tree" if args.after_file is None else args.after_file.name,
    }
    per = "; ".join(
        f"{name}: <= {budgets[name]} updates per call, {results[name][0]['calls']:.0f} calls"
        for name in names
    )
    print(
        f"### apply.lua cost: {args.aggregation} board, {args.players:,} players in all-time and month,"
        f" {args.batches} x {BATCH:,} events ({results[names[0]][0]['updates']:,.0f} updates) per run; {per};"
        f" redis {info['redis_version']}; medians of {args.runs}\n"
    )
    print(
        f"| metric | before ({label['before']}) | after ({label['after']}) | after / before | runs before",
        end="",
    )
    print(" | runs after |")
    print("|---|---|---|---|---|---|")
    for m in metrics:
        b = [x[m] for x in results["before"]]
        a = [x[m] for x in results["after"]]
        mb, ma = statistics.median(b), statistics.median(a)
        print(
            f"| {m} | {mb:.2f} | {ma:.2f} | {ma / mb:.2f} | {', '.join(f'{x:.2f}' for x in b)} |"
            f" {', '.join(f'{x:.2f}' for x in a)} |"
        )
    for name in names:
        if len({x["updates"] for x in results[name]}) != 1:
            raise RuntimeError(f"{name}: the runs applied different numbers of updates")
    print(f"\n({time.perf_counter() - t_start:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
