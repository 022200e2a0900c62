"""Publish simulator-shaped match-won records at a steady rate (bench only; not part of the product).

``leaderboard simulate --rate R`` did not hold its rate on this machine (asked 5,000/s, sent ~20,000/s:
its pacing waits in ``Producer.poll``, which returns early), so the latency benchmark paces here instead:
every 10 ms it sends what is due, with the producer SDK's settings (``PRODUCER_DEFAULTS``). Prints a JSON
summary on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import time

from confluent_kafka import KafkaError, Message, Producer

from leaderboard import settings
from leaderboard.settings import PRODUCER_DEFAULTS

_TICK_S = 0.01


def record(n: int, ms: int, rng: random.Random, players: int) -> tuple[bytes, bytes]:
    """Same fields and size as the simulator's records; players skewed (Pareto)."""
    player = f"p{int(rng.paretovariate(1.1)) % players + 1}"
    stamp = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    h = os.urandom(9).hex()
    event_id = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7{h[:3]}-{'89ab'[int(h[3], 16) & 3]}{h[4:7]}-{h[7:18]}0"
    body = (
        f'{{"event_id":"{event_id}","match_id":"m-paced-{n}","player_id":"{player}",'
        f'"game":"chess","points":{rng.randint(1, 10)},"occurred_at":"{stamp}Z"}}'
    )
    return player.encode(), body.encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--players", type=int, default=100_000)
    args = parser.parse_args()
    failed = 0

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        nonlocal failed
        del msg
        if err is not None:
            failed += 1

    producer = Producer({**settings.load().kafka_common(), **PRODUCER_DEFAULTS})
    rng = random.Random()
    sent = 0
    started = time.monotonic()
    end = started + args.duration
    while (now := time.monotonic()) < end:
        due = int((now - started) * args.rate)
        ms = int(time.time() * 1000)
        while sent < due:
            key, value = record(sent, ms, rng, args.players)
            producer.produce(args.topic, value, key, on_delivery=on_delivery)
            sent += 1
        producer.poll(0)
        time.sleep(max(0.0, _TICK_S - (time.monotonic() - now)))
    elapsed = time.monotonic() - started
    left = producer.flush(30)
    print(
        json.dumps(
            {"sent": sent, "acked": sent - failed - left, "rate": round(sent / elapsed), "failed": failed}
        )
    )


if __name__ == "__main__":
    main()
