"""``leaderboard simulate``: a load generator standing in for many game servers.

Same ``--seed`` and ``--start`` give the same records in the same order (event_ids included: UUIDv7
layouts from the seeded Random and a simulated clock), so a run can be replayed and compared.
``--truth`` is what every board's all-time total must become: it is computed from the records Kafka
acknowledged (sent minus failed, counted once per distinct event_id) and written after the final flush,
so SIGINT/SIGTERM still give a consistent file; SIGKILL writes nothing, but ``--acked-log`` (appended
once a second) lists every event_id acknowledged so far.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
import re
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final

import orjson
from confluent_kafka import KafkaError, Message

from leaderboard.errors import UserError
from leaderboard.settings import Settings
from producers.publisher import Publisher
from schemas import model

HELP: Final = "publish simulated match-won events (skewed players, duplicates, malformed records)"

_IDENT = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z")
_ID_START: Final = len('{"event_id":"')
"""Every simulated valid record starts with its event_id: callbacks slice it out without parsing."""
_INVALID_KINDS: Final = (
    "malformed_json",
    "not_an_object",
    "points_zero",
    "points_float",
    "missing_player_id",
    "bad_game",
    "schema_version_2",
    "no_offset",
    "out_of_range",
    "bad_uuid",
    "control_char_player",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--rate", type=float, default=1000.0, help="events per second; 0 = as fast as possible (default 1000)")
    add("--count", type=int, help="stop after this many records (all kinds)")
    add("--duration", type=float, help="stop after this many seconds")
    add("--players", type=int, default=10_000, help="number of distinct players (default 10000)")
    add("--skew", type=float, default=1.1, help="Zipf exponent of who wins; 0 = uniform (default 1.1)")
    add("--games", default="chess,go", help="comma list of games (default chess,go)")
    add("--modes", default="", help="comma list of modes (default: no mode field)")
    add("--regions", default="", help="comma list of regions (default: no region field)")
    add("--max-points", type=int, default=10, help=f"points uniform in [1, N], N <= {model.MAX_POINTS}")
    add("--duplicate-ratio", type=float, default=0.0, help="share of records re-sending an earlier event")
    add("--invalid-ratio", type=float, default=0.0, help="share of malformed or contract-breaking records")
    add("--seed", type=int, help="seed for a reproducible stream (with --start)")
    add("--start", help="ISO time where the simulated clock starts (default: now)")
    add("--spread", type=float, default=0.0, help="occurred_at jitter: up to this many seconds back")
    add("--display-names", action="store_true", help="add display_name to events")
    add("--truth", type=Path, help="write expected per-player totals (distinct acknowledged events) here")
    add("--acked-log", type=Path, help="append acknowledged event_ids here once a second")
    add("--topic", help="topic to publish to (default: LEADERBOARD_TOPIC)")
    add("--json", action="store_true", help="print the final summary as JSON on stdout")


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if not _IDENT.match(name):
            raise UserError(f"--{what}: {name!r} is not a valid id (lower-case letters, digits, '_', '-')")
    return names


def _start_us(text: str | None, spread: float) -> int:
    if text is None:
        start = datetime.now(UTC)
    else:
        try:
            start = datetime.fromisoformat(text)
        except ValueError:
            raise UserError(f"--start {text!r}: expected an ISO time like 2024-05-01T12:00:00Z") from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    if not model.EARLIEST.timestamp() + spread <= start.timestamp() < model.LATEST.timestamp() - 86_400:
        raise UserError("--start minus --spread must lie within [2020-01-01, 2049-12-31) UTC")
    return int(start.timestamp()) * 1_000_000 + start.microsecond


def _check(args: argparse.Namespace) -> None:
    if args.rate < 0:
        raise UserError("--rate must be >= 0")
    if args.count is not None and args.count < 0:
        raise UserError("--count must be >= 0")
    if args.duration is not None and args.duration <= 0:
        raise UserError("--duration must be > 0")
    if args.count is None and args.duration is None and args.rate == 0:
        raise UserError("--rate 0 needs --count or --duration")
    if args.players < 1:
        raise UserError("--players must be >= 1")
    if not 1 <= args.max_points <= model.MAX_POINTS:
        raise UserError(f"--max-points must be in [1, {model.MAX_POINTS}]")
    if args.duplicate_ratio < 0 or args.invalid_ratio < 0 or args.duplicate_ratio + args.invalid_ratio > 1:
        raise UserError("--duplicate-ratio and --invalid-ratio must be >= 0 and sum to <= 1")
    if args.spread < 0 or args.skew < 0:
        raise UserError("--spread and --skew must be >= 0")


class _Stream:
    """Deterministic record generator: all randomness comes from one seeded Random."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.rng = random.Random(args.seed)
        self.games = _names(args.games, "games")
        if not self.games:
            raise UserError("--games: give at least one game")
        modes = _names(args.modes, "modes")
        regions = _names(args.regions, "regions")
        self.players = [f"p{k}" for k in range(1, args.players + 1)]
        weights = [1.0 / k**args.skew for k in range(1, args.players + 1)]
        self.cumulative = list(itertools.accumulate(weights))
        self.keys = [p.encode() for p in self.players]
        self.player_part = [
            f'"player_id":"{p}","display_name":"Player {p[1:]}"' if args.display_names else f'"player_id":"{p}"'
            for p in self.players
        ]
        self.game_part = [f'"game":"{g}"' for g in self.games]
        self.mode_part = [f',"mode":"{m}"' for m in modes] or [""]
        self.region_part = [f',"region":"{r}"' for r in regions] or [""]
        self.max_points = args.max_points
        self.clock_us = _start_us(args.start, args.spread)
        self.step_us = 1_000_000 / args.rate if args.rate else 100.0
        self.spread_us = int(args.spread * 1_000_000)
        self.run_tag = f"{self.rng.getrandbits(32):08x}"
        self.n = 0
        self._seconds: dict[int, str] = {}

    def _timestamp(self, us: int) -> str:
        sec, frac = divmod(us, 1_000_000)
        prefix = self._seconds.get(sec)
        if prefix is None:
            if len(self._seconds) > 4096:
                self._seconds.clear()
            prefix = self._seconds[sec] = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{prefix}.{frac:06d}Z"

    def _event_id(self, ms: int) -> str:
        rand = self.rng.getrandbits(74)  # UUIDv7: 48-bit ms, version 7, 12+62 random bits, variant 10
        n = ms << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | (rand & 0x3FFF_FFFF_FFFF_FFFF)
        h = f"{n:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def valid(self) -> tuple[bytes, bytes, int, int, int]:
        """(key, value, player index, game index, points) of the next valid event."""
        rnd = self.rng.random
        self.n += 1
        self.clock_us += self.step_us
        now = int(self.clock_us)
        pi = bisect.bisect_left(self.cumulative, rnd() * self.cumulative[-1])
        if pi >= len(self.players):
            pi = len(self.players) - 1
        gi = int(rnd() * len(self.games))
        mode = self.mode_part[int(rnd() * len(self.mode_part))] if len(self.mode_part) > 1 else self.mode_part[0]
        region = (
            self.region_part[int(rnd() * len(self.region_part))]
            if len(self.region_part) > 1
            else self.region_part[0]
        )
        points = int(rnd() * self.max_points) + 1 if self.max_points > 1 else 1
        occurred = now - int(rnd() * self.spread_us) if self.spread_us else now
        value = (
            f'{{"event_id":"{self._event_id(now // 1000)}","match_id":"m-{self.run_tag}-{self.n}",'
            f'{self.player_part[pi]},{self.game_part[gi]}{mode}{region},'
            f'"points":{points},"occurred_at":"{self._timestamp(occurred)}"}}'
        ).encode()
        return self.keys[pi], value, pi, gi, points

    def invalid(self) -> tuple[bytes, bytes]:
        """A record the consumer must dead-letter: a mix of the ways game servers get it wrong."""
        key, value, *_ = self.valid()
        kind = _INVALID_KINDS[int(self.rng.random() * len(_INVALID_KINDS))]
        if kind == "malformed_json":
            return key, value[: len(value) // 2]
        if kind == "not_an_object":
            return key, b'["not", "an", "object"]'
        event: dict[str, Any] = orjson.loads(value)
        if kind == "points_zero":
            event["points"] = 0
        elif kind == "points_float":
            event["points"] = 1.5
        elif kind == "missing_player_id":
            del event["player_id"]
        elif kind == "bad_game":
            event["game"] = "Chess!"
        elif kind == "schema_version_2":
            event["schema_version"] = 2
        elif kind == "no_offset":
            event["occurred_at"] = event["occurred_at"].rstrip("Z")
        elif kind == "out_of_range":
            event["occurred_at"] = "2051-01-01T00:00:00Z"
        elif kind == "bad_uuid":
            event["event_id"] = "not-a-uuid"
        else:
            event["player_id"] = "bad\x07player"
        return key, orjson.dumps(event)


class _Run:
    """Counters and delivery callbacks; the callbacks run inside publish_raw/poll/flush (one thread)."""

    def __init__(self, n_players: int, n_games: int, acked_log: IO[bytes] | None) -> None:
        self.sent = self.acked = self.failed = self.duplicates = self.invalid = self.valid = 0
        self.totals = [[0] * n_players for _ in range(n_games)]
        self.failed_valid: list[bytes] = []  # values of first sends that failed
        self.dup_acked: set[bytes] = set()  # event_ids of duplicates Kafka acknowledged
        self.errors: list[str] = []
        self.acked_ids: list[bytes] = []
        self.acked_log = acked_log
        self.stop_signal: int | None = None
        log = acked_log is not None
        self.on_valid: Callable[[KafkaError | None, Message], None] = self._valid_log if log else self._valid
        self.on_duplicate: Callable[[KafkaError | None, Message], None] = self._duplicate

    def _fail(self, err: KafkaError) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(str(err))

    def _valid(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.acked += 1
        else:
            self._fail(err)
            self.failed_valid.append(msg.value())

    def _valid_log(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.acked += 1
            self.acked_ids.append(msg.value()[_ID_START : _ID_START + 36])
        else:
            self._fail(err)
            self.failed_valid.append(msg.value())

    def _duplicate(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.acked += 1
            self.dup_acked.add(msg.value()[_ID_START : _ID_START + 36])
            if self.acked_log is not None:
                self.acked_ids.append(msg.value()[_ID_START : _ID_START + 36])
        else:
            self._fail(err)

    def on_invalid(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.acked += 1
        else:
            self._fail(err)

    def write_acked(self) -> None:
        if self.acked_log is not None and self.acked_ids:
            self.acked_log.write(b"\n".join(self.acked_ids) + b"\n")
            self.acked_log.flush()
            self.acked_ids.clear()

    def truth(self, stream: _Stream) -> dict[str, Any]:
        """Expected totals over distinct acknowledged valid events."""
        by_game = {
            game: {stream.players[i]: pts for i, pts in enumerate(row) if pts}
            for game, row in zip(stream.games, self.totals, strict=True)
        }
        events = self.valid
        for value in self.failed_valid:
            event = model.decode(value)
            if isinstance(event, model.MatchWon) and event.event_id.encode() not in self.dup_acked:
                events -= 1
                board = by_game[event.game]
                board[event.player_id] -= event.points
                if not board[event.player_id]:
                    del board[event.player_id]
        players: dict[str, int] = {}
        for board in by_game.values():
            for player, pts in board.items():
                players[player] = players.get(player, 0) + pts
        return {
            "events": events,
            "players": players,
            "by_game": by_game,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "sent": self.sent,
            "acked": self.acked,
            "failed": self.failed,
        }


def run(config: Settings, args: argparse.Namespace) -> int:
    _check(args)
    stream = _Stream(args)
    log_file = args.acked_log.open("ab") if args.acked_log else None
    state = _Run(len(stream.players), len(stream.games), log_file)
    publisher = Publisher(config, topic=args.topic, poll_thread=False)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        state.stop_signal = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    try:
        _loop(args, stream, state, publisher, started)
        remaining = publisher.flush(60.0)
        elapsed = time.monotonic() - started
        state.failed += remaining
        state.write_acked()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if log_file is not None:
            log_file.close()
    if args.truth:
        args.truth.write_text(json.dumps(state.truth(stream), separators=(",", ":")) + "\n")
    _summary(args, state, publisher.topic, elapsed)
    return 1 if state.failed else 0


def _loop(args: argparse.Namespace, stream: _Stream, state: _Run, publisher: Publisher, started: float) -> None:
    rnd = stream.rng.random
    publish = publisher.publish_raw
    totals = state.totals
    dup_ratio = args.duplicate_ratio
    odd_ratio = args.duplicate_ratio + args.invalid_ratio
    ring: list[tuple[bytes, bytes]] = []
    ring_size = 4096
    count = args.count if args.count is not None else sys.maxsize
    rate = args.rate
    chunk = max(1, min(512, int(rate / 100))) if rate else 512
    deadline = started + args.duration if args.duration else float("inf")
    next_tick, last_sent, last_time = started + 1.0, 0, started
    sent = 0
    while sent < count and state.stop_signal is None:
        for _ in range(min(chunk, count - sent)):
            r = rnd() if odd_ratio else 1.0
            if r < dup_ratio and ring:
                key, value = ring[int(rnd() * len(ring))]
                publish(key, value, state.on_duplicate)
                state.duplicates += 1
            elif r < odd_ratio:
                key, value = stream.invalid()
                publish(key, value, state.on_invalid)
                state.invalid += 1
            else:
                key, value, pi, gi, points = stream.valid()
                publish(key, value, state.on_valid)
                totals[gi][pi] += points
                state.valid += 1
                if dup_ratio:
                    if len(ring) < ring_size:
                        ring.append((key, value))
                    else:
                        ring[int(rnd() * ring_size)] = (key, value)
            sent += 1
        state.sent = sent
        now = time.monotonic()
        if now >= deadline:
            break
        if rate:
            ahead = started + sent / rate - now
            if ahead > 0:
                publisher.poll(min(ahead, 0.1))  # wait usefully: serve delivery reports meanwhile
                now = time.monotonic()
        if now >= next_tick:
            state.write_acked()
            interval = now - last_time
            print(
                f"simulate: sent={sent} acked={state.acked} failed={state.failed} "
                f"rate={(sent - last_sent) / interval:,.0f}/s",
                file=sys.stderr,
                flush=True,
            )
            next_tick, last_sent, last_time = now + 1.0, sent, now
    state.sent = sent


def _summary(args: argparse.Namespace, state: _Run, topic: str, elapsed: float) -> None:
    summary: dict[str, Any] = {
        "topic": topic,
        "sent": state.sent,
        "acked": state.acked,
        "failed": state.failed,
        "valid": state.valid,
        "duplicates": state.duplicates,
        "invalid": state.invalid,
        "elapsed_s": round(elapsed, 3),
        "rate": round(state.sent / elapsed) if elapsed > 0 else 0,
    }
    if state.stop_signal is not None:
        summary["stopped_by"] = signal.Signals(state.stop_signal).name
    if state.errors:
        summary["errors"] = state.errors
    if args.json:
        print(json.dumps(summary))
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items() if k != "errors"))
        for error in state.errors:
            print(f"simulate: delivery failed: {error}", file=sys.stderr)
