"""``leaderboard dlq show|redrive``: inspect the dead-letter topic; send chosen letters back for another try.

``show`` reads the topic from its beginning to the end offsets it had at start (read_committed, bounded
time) and prints counts by reason, then up to N letters. ``redrive`` re-publishes the chosen letters'
ORIGINAL key and value bytes to the main topic with a ``redriven-from`` header. The event_id inside is
unchanged, so the consumer's PostgreSQL de-duplication makes a redrive safe to repeat: an event already
counted is never counted again, and a record that is still invalid is simply dead-lettered again.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
from confluent_kafka import KafkaError, Message, Producer

from consumers import dlq
from leaderboard.errors import UserError
from leaderboard.progress import Progress
from leaderboard.settings import Settings
from leaderboard.topic_reader import read_to_end

HELP = "inspect the dead-letter topic (show) or re-publish dead letters to the main topic (redrive)"
HEADER_REDRIVEN = "redriven-from"
_PREVIEW = 200
_FLUSH_S = 60.0


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter: where it sits in the DLQ, why it is there, and the original bytes."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def reason(self) -> str:
        return self.headers.get(dlq.HEADER_REASON, "?")

    def summary(self) -> dict[str, object]:
        value = (self.value or b"").decode("utf-8", "replace")
        return {
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "reason": self.reason,
            "detail": self.headers.get(dlq.HEADER_DETAIL, ""),
            "source_partition": _int_or_none(self.headers.get(dlq.HEADER_PARTITION)),
            "source_offset": _int_or_none(self.headers.get(dlq.HEADER_OFFSET)),
            "key": None if self.key is None else self.key.decode("utf-8", "replace"),
            "value": value[:_PREVIEW],
        }


def _int_or_none(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def read_letters(
    config: Settings,
    ranges: dict[int, tuple[int, int]] | None = None,
    timeout_s: float = 120.0,
    progress: bool = True,
) -> Iterator[Letter]:
    """Dead letters from the beginning (or ``ranges``: partition -> [first, end)) up to today's end offsets.

    read_committed: letters of aborted consumer transactions are never shown. Raises UserError if the end
    is not reached within ``timeout_s`` (TopicReadError, from the shared reader).
    """
    meter = Progress("dead letters read") if progress else None

    def advanced(done: int, total: int) -> None:
        if meter is not None:
            meter.total = total
            meter.update(done)

    for r in read_to_end(config, config.dlq_topic, timeout_s, ranges, advanced):
        yield Letter(r.partition, r.offset, r.key, r.value, r.headers)
    if meter is not None and meter.total is not None:
        meter.finish()


# -- show ------------------------------------------------------------------------------------------------


def show(config: Settings, args: argparse.Namespace) -> int:
    counts: Counter[str] = Counter()
    shown: list[Letter] = []
    for letter in read_letters(config, timeout_s=args.timeout, progress=not args.json):
        counts[letter.reason] += 1
        if (args.reason is None or letter.reason == args.reason) and len(shown) < args.limit:
            shown.append(letter)
    if args.json:
        doc = {"topic": config.dlq_topic, "counts": dict(counts), "records": [x.summary() for x in shown]}
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"dead-letter topic {config.dlq_topic}: {sum(counts.values())} record(s)")
    for reason, n in counts.most_common():
        print(f"  {reason:<24} {n:>10,}")
    if shown:
        print()
    for x in shown:
        s = x.summary()
        print(
            f"{s['dlq_partition']}:{s['dlq_offset']}  {s['reason']}  "
            f"(from partition {s['source_partition']} offset {s['source_offset']})"
        )
        print(f"    detail: {s['detail']}")
        print(f"    value:  {s['value']!r}")
    wanted = counts[args.reason] if args.reason is not None else sum(counts.values())
    if wanted > len(shown):
        print(f"({wanted - len(shown)} more not shown; raise --limit)", file=sys.stderr)
    return 0


# -- redrive ------------------------------------------------------------------------------------------------


def parse_at(text: str) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        p, sep, o = item.partition(":")
        if not sep or not p.isdigit() or not o.isdigit():
            raise UserError(f"--at {item!r}: expected PARTITION:OFFSET, e.g. --at 0:17,2:5")
        out.add((int(p), int(o)))
    if not out:
        raise UserError("--at: give at least one PARTITION:OFFSET")
    return out


def _chosen(config: Settings, args: argparse.Namespace) -> list[Letter]:
    if args.at is None:
        return [x for x in read_letters(config, timeout_s=args.timeout) if x.reason == args.reason]
    wanted = parse_at(args.at)
    ranges: dict[int, tuple[int, int]] = {}
    for p, o in wanted:
        lo, hi = ranges.get(p, (o, o + 1))
        ranges[p] = (min(lo, o), max(hi, o + 1))
    found = [
        x for x in read_letters(config, ranges, timeout_s=args.timeout) if (x.partition, x.offset) in wanted
    ]
    missing = wanted - {(x.partition, x.offset) for x in found}
    if missing:
        raise UserError(
            f"no dead letter at {', '.join(f'{p}:{o}' for p, o in sorted(missing))} in {config.dlq_topic}"
        )
    return found


def redrive_letters(config: Settings, letters: list[Letter]) -> int:
    """Publish the letters' original key and value to the main topic; returns how many were acknowledged."""
    producer = Producer(
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",  # as the producer SDK: same key, same partition
            **config.kafka_common(),
        }
    )
    errors: list[str] = []
    acked = 0

    def delivered(err: KafkaError | None, msg: Message) -> None:
        nonlocal acked
        if err is None:
            acked += 1
        else:
            errors.append(f"{msg.key()!r}: {err}")

    meter = Progress("redriven", len(letters))
    for i, x in enumerate(letters, start=1):
        producer.produce(
            config.topic,
            x.value,
            x.key,
            headers=[(HEADER_REDRIVEN, f"{x.partition}/{x.offset}".encode())],
            on_delivery=delivered,
        )
        producer.poll(0)
        meter.update(i)
    left = producer.flush(_FLUSH_S)
    meter.finish()
    if left or errors:
        raise UserError(
            f"{acked} of {len(letters)} redriven; {left} still queued, {len(errors)} failed "
            f"(first: {errors[:1]}). Redriving again is safe: events are de-duplicated by event_id"
        )
    return acked


def redrive(config: Settings, args: argparse.Namespace) -> int:
    letters = _chosen(config, args)
    reasons = Counter(x.reason for x in letters)
    what = ", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "none"
    if not letters:
        print(f"nothing to redrive: no matching dead letters in {config.dlq_topic}", file=sys.stderr)
        return 0
    if args.dry_run:
        for x in letters:
            s = x.summary()
            print(f"would redrive {s['dlq_partition']}:{s['dlq_offset']}  {s['reason']}  {s['value']!r}")
        print(f"dry run: {len(letters)} letter(s) ({what}) would go to {config.topic}", file=sys.stderr)
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise UserError(f"{len(letters)} letter(s) ({what}) chosen: pass --yes to redrive them")
        answer = input(f"redrive {len(letters)} letter(s) ({what}) to {config.topic}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing redriven", file=sys.stderr)
            return 1
    acked = redrive_letters(config, letters)
    print(f"redriven {acked} letter(s) ({what}) to {config.topic} with header {HEADER_REDRIVEN}")
    print(
        "the consumer de-duplicates by event_id: events already counted will not count again; "
        "records that are still invalid (or feed a period still closed) will be dead-lettered again "
        "with their reason",
        file=sys.stderr,
    )
    return 0


# -- CLI ----------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    show_p = sub.add_parser("show", help="counts by reason and the first records")
    show_p.add_argument("--reason", help="only records with this reason (counts still cover all)")
    show_p.add_argument("--limit", type=int, default=20, help="records to print (default 20)")
    show_p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    re_p = sub.add_parser("redrive", help="re-publish dead letters' original bytes to the main topic")
    choose = re_p.add_mutually_exclusive_group(required=True)
    choose.add_argument("--reason", help="every dead letter with this reason")
    choose.add_argument("--at", metavar="P:O[,P:O...]", help="these dead-letter partition:offset pairs")
    re_p.add_argument("--dry-run", action="store_true", help="list what would be redriven")
    re_p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    for p in (show_p, re_p):
        p.add_argument("--timeout", type=float, default=120.0, help="seconds allowed to read the topic")


def run(config: Settings, args: argparse.Namespace) -> int:
    if args.dlq_command == "show":
        if args.limit < 0:
            raise UserError("--limit must be >= 0")
        return show(config, args)
    return redrive(config, args)
