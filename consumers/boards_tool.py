"""``leaderboard boards``: boards managed at runtime (docs/boards.md, "Boards managed at runtime").

``list | show ID | plan FILE | apply FILE | diff ID | activate ID | retire ID``. A TOML file stays the
configuration as code: ``plan`` prints what ``apply`` would do and writes nothing; ``apply`` stores each new
or changed ``[[board]]`` as the board's next version, a draft, and builds it from the whole event log while
the live version keeps serving; ``diff`` compares the draft with the live version; ``activate`` switches it
live. Every failure is one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from consumers.board_ops import DEFAULT_TOP, Ops, diff_doc, read_file
from leaderboard.settings import Settings

HELP = "boards managed at runtime: list, show, plan FILE, apply FILE, diff, activate, retire"
SERVICES = {
    "list": "postgres",
    "show": "postgres",
    "plan": "postgres",
    "apply": "both",
    "diff": "both",
    "activate": "both",
    "retire": "both",
}
"""What each action needs: PostgreSQL only, or PostgreSQL and Redis (leaderboard.cli.needs reads it)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="every board: state, live and draft versions")
    show = sub.add_parser("show", help="a board's state and every stored version of its definition")
    show.add_argument("board")
    for name, text in (
        ("plan", "what apply would do with a boards file (writes nothing)"),
        ("apply", "store the file's new or changed definitions as drafts and build them"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("file", type=Path)
    diff = sub.add_parser(
        "diff", help="the draft against the live version: top-N entering/leaving, rank moves"
    )
    diff.add_argument("board")
    diff.add_argument("--period", help="period spec (default: all_time, or the board's first period kind)")
    diff.add_argument(
        "--top", type=int, default=DEFAULT_TOP, help=f"size of the top compared (default {DEFAULT_TOP})"
    )
    diff.add_argument("--json", action="store_true", help="the whole comparison as JSON")
    for name, text in (
        ("activate", "make the built draft the live version"),
        ("retire", "stop feeding the board; its periods stay readable"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("board")


def run(config: Settings, args: argparse.Namespace) -> int:
    ops = Ops(config)
    {
        "list": _list,
        "show": _show,
        "plan": _plan,
        "apply": _apply,
        "diff": _diff,
        "activate": _activate,
        "retire": _retire,
    }[args.action](ops, args)
    return 0


def _list(ops: Ops, args: argparse.Namespace) -> None:
    for row in ops.boards():
        built = " (built)" if row.get("draft_built") else ""
        print(
            f"{row['id']:<32} {row['state']:<8} {row['source']:<8}"
            f" live={_v(row['live_version'])} draft={_v(row['draft_version'])}{built}"
        )


def _show(ops: Ops, args: argparse.Namespace) -> None:
    print(json.dumps(ops.show(args.board), indent=2, ensure_ascii=False))


def _plan(ops: Ops, args: argparse.Namespace) -> None:
    changes = ops.plan(read_file(args.file))
    for ch in changes:
        print(ch.line())
    n = sum(1 for ch in changes if ch.action != "unchanged")
    print(f"plan: {n} board(s) would get a new draft version; nothing was written")


def _apply(ops: Ops, args: argparse.Namespace) -> None:
    applied = ops.apply(read_file(args.file), progress=lambda line: print(line, flush=True))
    for a in applied:
        if a.built is None:
            print(a.change.line())
    built = sum(1 for a in applied if a.built is not None)
    print(f"applied: {built} draft(s) built; next: `leaderboard boards diff ID`, then `activate ID`")


def _diff(ops: Ops, args: argparse.Namespace) -> None:
    period, d = ops.diff(args.board, args.period, args.top)
    if args.json:
        print(json.dumps(diff_doc(period, d), indent=2))
        return
    print(f"board {args.board}, period {period}: {d.players_before:,} live, {d.players_after:,} in the draft")
    print(f"entering the top {d.top}: {', '.join(d.entering) or 'none'}")
    print(f"leaving the top {d.top}: {', '.join(d.leaving) or 'none'}")
    print(f"rank changes: {len(d.moves):,}")
    for m in d.moves[: max(args.top, 20)]:
        print(f"  {m.player}: {_v(m.before)} -> {_v(m.after)}")


def _activate(ops: Ops, args: argparse.Namespace) -> None:
    print(ops.activate(args.board))


def _retire(ops: Ops, args: argparse.Namespace) -> None:
    if ops.retire(args.board):
        print(f"board {args.board}: retired; no longer fed, its periods stay readable")
    else:
        print(f"board {args.board}: was already retired")


def _v(value: object) -> str:
    return "-" if value is None else str(value)
