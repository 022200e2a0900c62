"""Poison input against the real services: no record stops the pipeline, every bad one is dead-lettered once.

The corpus holds every class of record that once crashed or stalled a consumer (issue 12): invalid UTF-8 in
each text field, deep nesting, huge numbers, NUL and other control characters in each text field, a future
date, and a record valid for the schema that PostgreSQL refuses (a CHECK constraint of this test's own
schema: validation now catches everything PostgreSQL itself would refuse). They are published among valid
events; a consumer process must stay up, dead-letter each exactly once with its precise reason, build the
board an independent fold of the valid events predicts, and leave no partition behind. The same corpus
through HTTP ingest must give 4xx problem documents and publish nothing.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from confluent_kafka import Producer

from consumers.migrate import migrate
from leaderboard.settings import Settings
from schemas.model import Reason
from tests.procs import (
    ApiProcess,
    ConsumerProcess,
    caught_up,
    end_offsets,
    leaderboard_cli,
    read_topic,
    wait_until,
)
from tests.test_consumer import board

TEXT_FIELDS = ("event_id", "match_id", "player_id", "game", "occurred_at", "mode", "region", "display_name")
CONTROLS = {"nul": "\x00", "escape": "\x1b", "newline": "\n", "del": "\x7f", "c1": "\x85"}
TOKEN = "poison-test-token"
CHECK = "ALTER TABLE events ADD CONSTRAINT no_cheaters CHECK (player_id NOT LIKE 'cheater%')"


@dataclass(frozen=True)
class Poison:
    name: str
    value: bytes
    reason: Reason
    through_ingest: bool = True
    """False for what only the consumer can refuse (the sink's own constraint)."""


def event(player: str, points: int = 1, **fields: Any) -> dict[str, Any]:
    eid = str(uuid.uuid4())
    return {
        "event_id": eid,
        "match_id": f"m-{eid[:8]}",
        "player_id": player,
        "game": "chess",
        "mode": "ranked",
        "region": "eu",
        "points": points,
        "occurred_at": "2026-11-20T10:00:00Z",
        "display_name": f"Name {player}",
        **fields,
    }


def raw(doc: dict[str, Any]) -> bytes:
    """Non-ASCII characters as raw UTF-8 (DEL and C1 unescaped), the way most producers send them."""
    return json.dumps(doc, ensure_ascii=False).encode()


def corpus(now: datetime) -> list[Poison]:
    out: list[Poison] = []
    for field in TEXT_FIELDS:
        base = event("victim")
        marker = "\u2603"  # replaced by bytes that are not UTF-8
        doc = {**base, field: base[field][:2] + marker + base[field][2:]}
        out.append(Poison(f"latin1-{field}", raw(doc).replace(marker.encode(), b"\xe9"), Reason.UNDECODABLE))
        for name, char in CONTROLS.items():
            base = event("victim")
            doc = {**base, field: base[field][:2] + char + base[field][2:]}
            out.append(Poison(f"{name}-{field}", raw(doc), Reason.SCHEMA_VIOLATION))
    out.append(
        Poison(
            "latin1-extra",
            raw(event("victim", extra="caf\u2603")).replace("\u2603".encode(), b"\xe9"),
            Reason.UNDECODABLE,
        )
    )
    out.append(
        Poison(
            "surrogate-bytes",
            raw(event("victim\u2603")).replace("\u2603".encode(), b"\xed\xa0\x80"),
            Reason.UNDECODABLE,
        )
    )
    for depth in (1_000, 100_000):
        nested = raw(event("victim"))[:-1] + b', "extra": ' + b"[" * depth + b"]" * depth + b"}"
        out.append(Poison(f"nested-{depth}", nested, Reason.SCHEMA_VIOLATION))
    for name, number in (("digits", b"1" + b"0" * 400), ("exponent", b"1e400"), ("negative", b"-1e400")):
        body = raw(event("victim"))[:-1] + b', "points": ' + number + b"}"
        out.append(Poison(f"huge-points-{name}", body, Reason.SCHEMA_VIOLATION))
    future = (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out.append(Poison("future", raw(event("time-traveller", 100, occurred_at=future)), Reason.FUTURE))
    out.append(
        Poison(
            "far-future", raw(event("time-traveller", 100, occurred_at="2049-12-31T00:00:00Z")), Reason.FUTURE
        )
    )
    for i in range(3):
        out.append(Poison(f"sink-rejected-{i}", raw(event(f"cheater-{i}", 50)), Reason.SINK_REJECTED, False))
    return out


def valid_stream(now: datetime, n: int, seed: int) -> list[dict[str, Any]]:
    """Valid events, some of them near the edges the poison crosses."""
    rnd = random.Random(seed)
    out = [event(f"p{rnd.randint(0, 40)}", rnd.randint(1, 9)) for _ in range(n)]
    soon = (now + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")  # within the 300 s skew: counts
    out.append(event("punctual", 7, occurred_at=soon))
    out.append(event("p1", 3, display_name="Jos\u00e9 \u2603 \U0001f600"))  # non-ASCII text is fine
    out.append({**event("p2", 4), "extra": [1, 10**300, [[["deep but fine"]]]], "more": 1e300})
    return out


def test_poison_is_dead_lettered_once_and_never_stops_the_consumer(
    config: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with psycopg.connect(config.database_url, autocommit=True) as conn:
        migrate(conn)
        conn.execute(CHECK)  # a refusal no validation knows of: proves the bisect path end to end
    now = datetime.now(UTC)
    poison = corpus(now)
    valid = valid_stream(now, 1500, seed=12)
    stream: list[tuple[bytes | None, bytes]] = [(e["player_id"].encode(), raw(e)) for e in valid]
    stream += [(None if i % 3 == 0 else b"poison", p.value) for i, p in enumerate(poison)]
    random.Random(3).shuffle(stream)
    assert len({v for _, v in stream}) == len(stream), "every record distinct, so letters map to records"
    truth: defaultdict[str, int] = defaultdict(int)
    for e in valid:
        truth[e["player_id"]] += e["points"]

    consumer = ConsumerProcess(config, tmp_path, LEADERBOARD_BATCH_SIZE="200")
    try:
        consumer.wait_ready()
        producer = Producer({**config.kafka_common(), "enable.idempotence": True, "linger.ms": 5})
        for key, value in stream:
            producer.produce(config.topic, value, key)
            producer.poll(0)
        assert producer.flush(30) == 0
        wait_until(lambda: caught_up(config) or not consumer.alive(), 90, "every partition committed")
        assert consumer.alive(), consumer.tail()
        dead = Counter(p.reason.value for p in poison)

        def counted() -> dict[str, float]:
            name = "leaderboard_consumer_events_dead_lettered_total"
            return {r: consumer.metric(name, f'{{reason="{r}"}}') for r in dead}

        # Metrics move just after the commit that caught_up sees: wait for them, bounded.
        wait_until(lambda: counted() == dead, 10, f"dead-letter counters to read {dict(dead)}")
        wait_until(lambda: consumer.get("/readyz")[0] == 200, 10, "consumer ready")
        assert consumer.metric("leaderboard_consumer_sink_errors_total", '{sink="postgres"}', unset=0) == 0
    finally:
        assert consumer.stop() == 0

    assert board(redis_client, config, "all_time") == dict(truth)
    # A replay decides as the live run did (the broker's timestamps, the sink's refusals): same board.
    rebuilt = leaderboard_cli(config, "rebuild", "--from", "kafka", timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert "Traceback" not in rebuilt.stderr
    assert board(redis_client, config, "all_time") == dict(truth)
    with psycopg.connect(config.database_url) as conn:
        stored = conn.execute("SELECT count(*) FROM events").fetchone()
        cheaters = conn.execute("SELECT count(*) FROM events WHERE player_id LIKE 'cheater%'").fetchone()
    assert stored == (len(valid),)
    assert cheaters == (0,)

    letters = read_topic(config, config.dlq_topic)
    expected = {p.value: p for p in poison}
    got = Counter(value for _, value, _ in letters)
    assert set(got) == set(expected), "each poison record dead-lettered, nothing else"
    assert max(got.values()) == 1, "each exactly once"
    for _, letter, headers in letters:
        assert letter is not None
        want = expected[letter]
        assert headers["reason"] == want.reason.value, (want.name, headers)
        assert headers["detail"], want.name
        assert headers["source-topic"] == config.topic
    details = {expected[v].name: h["detail"] for _, v, h in letters if v is not None}
    assert "no_cheaters" in details["sink-rejected-0"]
    assert details["sink-rejected-0"].startswith("postgres: ")
    assert "broker timestamp" in details["future"]
    assert details["nested-100000"] == details["nested-1000"]
    for field in TEXT_FIELDS:
        assert f"$.{field}" in details[f"nul-{field}"], details[f"nul-{field}"]
        assert details[f"latin1-{field}"].startswith("not UTF-8"), details[f"latin1-{field}"]


def test_the_same_poison_through_http_ingest_is_4xx_and_publishes_nothing(
    config: Settings, tmp_path: Path
) -> None:
    cfg = replace(config, ingest_token=TOKEN)
    consumer = ConsumerProcess(cfg, tmp_path)  # the API is ready once boards exist in Redis
    api: ApiProcess | None = None
    try:
        consumer.wait_ready()
        api = ApiProcess(cfg, tmp_path)
        api.wait_ready()
        before = end_offsets(cfg, cfg.topic)
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        poison = [p for p in corpus(datetime.now(UTC)) if p.through_ingest]
        good = raw(event("p1"))
        with httpx.Client(base_url=api.url, headers=auth, timeout=30) as client:
            for p in poison:
                for path, body in (
                    ("/v1/scores", p.value),
                    ("/v1/scores:batch", b"[" + good + b"," + p.value + b"]"),
                ):
                    response = client.post(path, content=body)
                    assert 400 <= response.status_code < 500, (
                        p.name,
                        path,
                        response.status_code,
                        response.text,
                    )
                    assert response.headers["content-type"] == "application/problem+json", p.name
                    problem = response.json()
                    assert problem["status"] == response.status_code
                    assert problem["detail"], p.name
                    reasons = {e["reason"] for e in problem.get("errors", [])} | {problem.get("reason")}
                    assert p.reason.value in reasons, (p.name, problem)
            assert end_offsets(cfg, cfg.topic) == before, "a refused request published nothing"
            accepted = client.post("/v1/scores", content=good)  # positive control: the path does publish
            assert accepted.status_code == 202, accepted.text
        after = end_offsets(cfg, cfg.topic)
        assert sum(after.values()) == sum(before.values()) + 1
        log = api.log_path.read_text()
        assert "Traceback" not in log, log[-3000:]
    finally:
        if api is not None:
            api.stop()
        consumer.stop()
