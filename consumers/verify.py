"""``leaderboard verify``: compare every Redis board with the standings checkpoint plus the log's tail.

The comparison itself is :func:`consumers.compare.differences` (streaming, bounded memory).
"""

from __future__ import annotations

import argparse
import sys
import time

import psycopg
import redis

from consumers.compare import differences
from consumers.rebuild import select_boards
from leaderboard.errors import UserError
from leaderboard.keys import Keys
from leaderboard.settings import Settings

HELP = "compare Redis boards with PostgreSQL ground truth; exit 1 on any difference"
_SHOW = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", help="only this board")
    parser.add_argument("--period", help="only this period key (e.g. monthly:2026-11)")
    parser.add_argument("--attempts", type=int, default=3, help="re-check differences this often (live lag)")


def run(config: Settings, args: argparse.Namespace) -> int:
    boards = select_boards(config, args.board)
    client = redis.Redis.from_url(config.redis_url)
    keys = Keys(config.redis_prefix)
    try:
        with psycopg.connect(config.database_url, autocommit=True) as conn:
            for attempt in range(max(args.attempts, 1)):
                lines: list[str] = []
                compared = 0
                for board in boards:
                    found, n = differences(client, conn, keys, board, args.period)
                    lines += found
                    compared += n
                if not lines:
                    print(f"ok: {len(boards)} board(s), {compared} period(s) equal PostgreSQL")
                    return 0
                if attempt + 1 < args.attempts:
                    time.sleep(1.0)
    except (psycopg.OperationalError, redis.ConnectionError) as exc:
        raise UserError(f"cannot reach a sink: {exc}") from exc
    finally:
        client.close()
    for line in lines[:_SHOW]:
        print(line, file=sys.stderr)
    print(f"DIFFERENT: {len(lines)} difference(s) (first {min(len(lines), _SHOW)} shown)", file=sys.stderr)
    return 1
