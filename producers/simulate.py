"""``leaderboard simulate``: a load generator standing in for many game servers.

Same ``--seed`` and ``--start`` give the same records in the same order (event_ids included: UUIDv7
layouts from the seeded Random and a simulated clock), so a run can be replayed and compared.
``--truth`` is what every board's all-time total must become: it is computed from the records Kafka
acknowledged (sent minus failed, counted once per distinct event_id) and written after the final flush,
so SIGINT/SIGTERM still give a consistent file; SIGKILL writes nothing, but ``--acked-log`` (appended
once a second) lists the event_ids acknowledged so far - each is on the topic. ``--acked-log`` costs speed:
it needs a report per record, where normally librdkafka reports failures only.
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
from collections import Counter
from collections.abc import Iterator
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
    add("--rate", type=float, default=1000.0, help="events/s; 0 = as fast as possible (default 1000)")
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


_VARIANT: Final = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_MILLIS: Final = [f"{i:03d}" for i in range(1000)]


class _Stream:
    """Deterministic record generator: all randomness comes from one seeded Random.

    The hot path builds each record with one f-string from pre-rendered fragments (player, game,
    per-second timestamp, per-millisecond UUIDv7 prefix): JSON encoders cost more than the rest.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.rng = random.Random(args.seed)
        self.games = _names(args.games, "games")
        if not self.games:
            raise UserError("--games: give at least one game")
        self.modes = _names(args.modes, "modes")
        self.regions = _names(args.regions, "regions")
        self.players = [f"p{k}" for k in range(1, args.players + 1)]
        self.max_points = args.max_points
        self.clock_us = _start_us(args.start, args.spread)
        self.step_us = 1_000_000 / args.rate if args.rate else 100.0  # simulated time, not wall time
        self.spread_us = int(args.spread * 1_000_000)
        self.run_tag = f"{self.rng.getrandbits(32):08x}"
        self.cumulative = list(itertools.accumulate(1.0 / k**args.skew for k in range(1, args.players + 1)))
        self.keys = [p.encode() for p in self.players]
        named = args.display_names
        self.player_part = [
            f'"player_id":"{p}","display_name":"Player {p[1:]}"' if named else f'"player_id":"{p}"'
            for p in self.players
        ]
        self.game_part = [f'"game":"{g}"' for g in self.games]
        self.extra_parts = [
            f"{mode}{region}"
            for mode in ([f',"mode":"{m}"' for m in self.modes] or [""])
            for region in ([f',"region":"{r}"' for r in self.regions] or [""])
        ]
        self.next_valid = self._generate().__next__
        """() -> (key, value, player index, game index, points) of the next valid event."""

    def _generate(self) -> Iterator[tuple[bytes, bytes, int, int, int]]:
        rnd, randbytes, bisect_left = self.rng.random, self.rng.randbytes, bisect.bisect_left
        cumulative, keys, player_part = self.cumulative, self.keys, self.player_part
        game_part, extra_parts = self.game_part, self.extra_parts
        total, last = cumulative[-1], len(self.players) - 1
        n_games, n_extra = len(self.games), len(extra_parts)
        max_points, spread_us = self.max_points, self.spread_us
        variant, millis, tag = _VARIANT, _MILLIS, self.run_tag
        seconds: dict[int, str] = {}
        clock, step = float(self.clock_us), self.step_us
        last_ms, prefix, n = -1, "", 0
        while True:
            n += 1
            clock += step
            now_ms = int(clock) // 1000
            if now_ms != last_ms:  # UUIDv7: 48-bit unix ms, version 7, 74 seeded random bits
                last_ms, prefix = now_ms, f"{now_ms >> 16:08x}-{now_ms & 0xFFFF:04x}-7"
            pi = bisect_left(cumulative, rnd() * total)
            pi = min(pi, last)
            gi = int(rnd() * n_games)
            extra = extra_parts[int(rnd() * n_extra)] if n_extra > 1 else extra_parts[0]
            points = int(rnd() * max_points) + 1 if max_points > 1 else 1
            occurred_ms = (int(clock) - int(rnd() * spread_us)) // 1000 if spread_us else now_ms
            second = occurred_ms // 1000
            stamp = seconds.get(second)
            if stamp is None:
                if len(seconds) > 4096:
                    seconds.clear()
                stamp = seconds[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            h = randbytes(10).hex()
            value = (
                f'{{"event_id":"{prefix}{h[:3]}-{variant[h[3]]}{h[4:7]}-{h[7:19]}","match_id":"m-{tag}-{n}",'
                f'{player_part[pi]},{game_part[gi]}{extra},"points":{points},'
                f'"occurred_at":"{stamp}{millis[occurred_ms % 1000]}Z"}}'
            ).encode()
            yield keys[pi], value, pi, gi, points

    def invalid(self) -> tuple[bytes, bytes]:
        """A record the consumer must dead-letter: a mix of the ways game servers get it wrong."""
        key, value, *_ = self.next_valid()
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


def _event_id(value: bytes) -> bytes:
    return value[_ID_START : _ID_START + 36]


class _Run:
    """Counters, failure bookkeeping and the acked-id log of one run (all on the main thread)."""

    def __init__(self, n_players: int, n_games: int, acked_log: IO[bytes] | None) -> None:
        self.sent = self.duplicates = self.invalid = self.valid = 0
        self.totals = [[0] * n_players for _ in range(n_games)]
        self.failed_values: list[bytes] = []
        self.duplicate_ids: list[bytes] = []  # event_ids re-sent, to tell a lost event from a lost copy
        self.errors: list[str] = []
        self.acked_ids: list[bytes] = []
        self.acked_log = acked_log
        self.stop_signal: int | None = None

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """Failures always; successes only with --acked-log (otherwise librdkafka skips them)."""
        if err is None:
            value = msg.value() or b""
            if value.startswith(b'{"event_id":"'):  # not the malformed ones without an id
                self.acked_ids.append(_event_id(value))
            return
        self.failed_values.append(msg.value() or b"")
        if len(self.errors) < 5:
            self.errors.append(str(err))

    def write_acked(self) -> None:
        if self.acked_log is not None and self.acked_ids:
            self.acked_log.write(b"\n".join(self.acked_ids) + b"\n")
            self.acked_log.flush()
            self.acked_ids.clear()

    def truth(self, stream: _Stream, acked: int, failed: int) -> dict[str, Any]:
        """Expected totals over distinct acknowledged valid events.

        An event is lost only if its first send and every duplicate of it failed.
        """
        by_game = {
            game: {stream.players[i]: pts for i, pts in enumerate(row) if pts}
            for game, row in zip(stream.games, self.totals, strict=True)
        }
        copies = Counter(self.duplicate_ids)
        failures: Counter[bytes] = Counter()
        lost: dict[bytes, model.MatchWon] = {}
        for value in self.failed_values:
            event = model.decode(value)
            if isinstance(event, model.MatchWon):
                key = event.event_id.encode()
                failures[key] += 1
                lost[key] = event
        events = self.valid
        for key, event in lost.items():
            if failures[key] == 1 + copies[key]:
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
            "acked": acked,
            "failed": failed,
        }


def run(config: Settings, args: argparse.Namespace) -> int:
    _check(args)
    stream = _Stream(args)
    log_file = args.acked_log.open("ab") if args.acked_log else None
    state = _Run(len(stream.players), len(stream.games), log_file)
    publisher = Publisher(
        config,
        topic=args.topic,
        poll_thread=False,
        on_delivery=state.on_delivery,
        report_success=log_file is not None,
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        state.stop_signal = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    try:
        _loop(args, stream, state, publisher, started)
        remaining = publisher.flush(60.0)
        elapsed = time.monotonic() - started
        state.write_acked()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if log_file is not None:
            log_file.close()
    failed = publisher.failed + remaining
    if args.truth:
        truth = state.truth(stream, publisher.acked(), failed)
        args.truth.write_text(json.dumps(truth, separators=(",", ":")) + "\n")
    _summary(args, state, publisher, failed, elapsed)
    return 1 if failed else 0


def _loop(
    args: argparse.Namespace, stream: _Stream, state: _Run, publisher: Publisher, started: float
) -> None:
    rnd = stream.rng.random
    next_valid = stream.next_valid
    publish = publisher.publish_raw
    totals = state.totals
    duplicate_ids = state.duplicate_ids
    dup_ratio = args.duplicate_ratio
    odd_ratio = args.duplicate_ratio + args.invalid_ratio
    ring: list[tuple[bytes, bytes]] = []
    ring_size = 4096
    count = args.count if args.count is not None else sys.maxsize
    rate = args.rate
    chunk = max(1, min(512, int(rate / 100))) if rate else 512
    deadline = started + args.duration if args.duration else float("inf")
    next_tick, last_sent, last_time = started + 1.0, 0, started
    sent = valid = 0
    while sent < count and state.stop_signal is None:
        for _ in range(min(chunk, count - sent)):
            r = rnd() if odd_ratio else 1.0
            if r < dup_ratio and ring:
                key, value = ring[int(rnd() * len(ring))]
                publish(key, value)
                duplicate_ids.append(_event_id(value))
            elif r < odd_ratio:
                key, value = stream.invalid()
                publish(key, value)
                state.invalid += 1
            else:
                key, value, pi, gi, points = next_valid()
                publish(key, value)
                totals[gi][pi] += points
                valid += 1
                if dup_ratio:
                    if len(ring) < ring_size:
                        ring.append((key, value))
                    else:
                        ring[int(rnd() * ring_size)] = (key, value)
            sent += 1
        state.sent, state.valid, state.duplicates = sent, valid, len(duplicate_ids)
        now = time.monotonic()
        if now >= deadline:
            break
        if rate:
            # poll() returns early whenever it served an event, so keep waiting until the schedule is due.
            while (ahead := started + sent / rate - now) > 0 and state.stop_signal is None:
                publisher.poll(min(ahead, 0.1))  # wait usefully: serve delivery reports meanwhile
                now = time.monotonic()
        if now >= next_tick:
            publisher.poll(0)
            state.write_acked()
            print(
                f"simulate: sent={sent} acked={publisher.acked()} failed={publisher.failed} "
                f"rate={(sent - last_sent) / (now - last_time):,.0f}/s",
                file=sys.stderr,
                flush=True,
            )
            next_tick, last_sent, last_time = now + 1.0, sent, now


def _summary(
    args: argparse.Namespace, state: _Run, publisher: Publisher, failed: int, elapsed: float
) -> None:
    summary: dict[str, Any] = {
        "topic": publisher.topic,
        "sent": state.sent,
        "acked": publisher.acked(),
        "failed": failed,
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
