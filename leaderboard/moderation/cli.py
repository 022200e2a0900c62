"""``leaderboard moderate ...``: each action prints its action id and exits 0 once PostgreSQL holds it.

Bad input or a refused action: one line on stderr, exit 2 (leaderboard.cli prints UserError). Kafka being
away does not fail an action (it is durable already): a warning line says it is still to be published.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime

import uuid_utils

from leaderboard.errors import UserError
from leaderboard.moderation import rules, service, store
from leaderboard.settings import Settings
from schemas import moderation as m

HELP = "moderation: exclude, reinstate, void, unvoid, erase players' scores; list the audit trail"


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def _common(p: argparse.ArgumentParser, *, reason_required: bool, default_reason: str | None = None) -> None:
    p.add_argument(
        "--reason", required=reason_required, default=default_reason, help="why (kept in the audit trail)"
    )
    p.add_argument("--actor", default=None, help="who takes the action (default: cli:<login name>)")
    p.add_argument(
        "--action-id", default=None, help="idempotency key (UUID); give the same one to retry safely"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("exclude", help="hold a player off boards (all unless --board) until reinstated")
    p.add_argument("player")
    p.add_argument("--board", action="append", dest="boards", metavar="BOARD", help="repeat for several")
    _common(p, reason_required=True)
    p = sub.add_parser("reinstate", help="end a player's hold (all boards unless --board)")
    p.add_argument("player")
    p.add_argument("--board", action="append", dest="boards", metavar="BOARD")
    _common(p, reason_required=False, default_reason="reinstated")
    p = sub.add_parser("void", help="take events off every board: by event, by match, or a player's window")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--event", action="append", dest="events", metavar="EVENT_ID")
    group.add_argument("--match", action="append", dest="matches", metavar="MATCH_ID")
    group.add_argument("--player", help="with --from and --until: the player's events in [from, until)")
    p.add_argument("--from", dest="start", metavar="TIME", help="RFC 3339, e.g. 2024-05-01T00:00:00Z")
    p.add_argument("--until", dest="end", metavar="TIME", help="RFC 3339 (excluded)")
    _common(p, reason_required=True)
    p = sub.add_parser("unvoid", help="reverse a void by its action id")
    p.add_argument("target", metavar="ACTION_ID")
    _common(p, reason_required=False, default_reason="void reversed")
    p = sub.add_parser("erase", help="right to erasure: pseudonymise the player, delete their display names")
    p.add_argument("player")
    _common(p, reason_required=False, default_reason="erasure request")
    p = sub.add_parser("list", help="the audit trail, oldest first, one JSON object a line")
    p.add_argument("--player", default=None)
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="only actions after this seq")
    p.add_argument("--limit", type=int, default=100, help=f"at most this many (1-{store.MAX_LIST})")
    sub.add_parser("publish", help="send actions still waiting for Kafka (safe to repeat)")
    sub.add_parser(
        "forget-digests",
        help="clear erased ids' digests whose horizon (LEADERBOARD_ERASURE_HORIZON_S) passed",
    )


def document(args: argparse.Namespace) -> dict[str, object]:
    """The action the arguments describe (validated afterwards by schemas.moderation)."""
    doc: dict[str, object] = {
        "kind": args.action,
        "action_id": args.action_id or str(uuid_utils.uuid7()),
        "actor": args.actor or _actor(),
        "reason": args.reason,
        "at": m.utc_text(datetime.now(UTC)),
    }
    if args.action in ("exclude", "reinstate"):
        doc["player_id"] = args.player
        doc["boards"] = args.boards or m.ALL
    elif args.action == "erase":
        doc["player_id"] = args.player
    elif args.action == "unvoid":
        doc["target"] = args.target
    elif args.events:
        doc["event_ids"] = args.events
    elif args.matches:
        doc["match_ids"] = args.matches
    else:
        if args.start is None or args.end is None:
            raise UserError("void --player needs --from and --until")
        doc.update(player_id=args.player, **{"from": args.start, "until": args.end})
    if args.action == "void" and args.player is None and (args.start or args.end):
        raise UserError("--from and --until go with --player only")
    return doc


def run(config: Settings, args: argparse.Namespace) -> int:
    if args.action == "list":
        if not 1 <= args.limit <= store.MAX_LIST:
            raise UserError(f"--limit must be in [1, {store.MAX_LIST}]")
        if not 0 <= args.after < 2**63:
            raise UserError("--after must be a seq (0 or more)")
        if args.player is not None:
            try:
                m.player_id(args.player)
            except ValueError as exc:
                raise UserError(f"--player: {exc}") from None
        for e in service.entries(config, player=args.player, after=args.after, limit=args.limit):
            line = {
                "seq": e.seq,
                "recorded_at": m.utc_text(e.recorded_at),
                "published": e.published,
                **({"reversed_by": e.reversed_by} if e.reversed_by else {}),
                **e.record,
            }
            print(json.dumps(line, ensure_ascii=False))
        return 0
    if args.action == "forget-digests":
        print(f"{service.forget_digests(config)} digest(s) cleared")
        return 0
    if args.action == "publish":
        left = service.republish(config)
        print(f"{left} action(s) still unpublished")
        return 1 if left else 0
    try:
        action = m.validate(document(args))
    except ValueError as exc:
        raise UserError(f"invalid action: {exc}") from None
    try:
        outcome = service.submit(config, action)
    except rules.Refused as exc:
        raise UserError(exc.detail) from None
    print(outcome.recorded.action_id)
    if outcome.recorded.duplicate:
        print("leaderboard moderate: already recorded (same action_id): nothing changed", file=sys.stderr)
    if outcome.unpublished:
        print(
            f"leaderboard moderate: durable, but {outcome.unpublished} action(s) not yet on"
            f" {config.moderation_topic}; run `leaderboard moderate publish`",
            file=sys.stderr,
        )
    return 0
