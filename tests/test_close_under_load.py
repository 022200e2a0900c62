"""Closing a period never stops ingestion: while a steady stream flows, the consumer keeps committing.

A day with many events is closed by the operator's command while another day's events stream in; the
consumer's last-commit metric, polled every 50 ms, must never lag the clock by more than COMMIT_GAP_S.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from leaderboard.settings import Settings
from tests.conftest import env_of
from tests.procs import ConsumerProcess, caught_up, wait_until
from tests.test_close_period import event, publish

COMMIT_GAP_S = 2.0
DAY = "daily:2026-10-05"


def _stream(cfg: Settings, stop: threading.Event, sent: list[int]) -> None:
    """About 500 events/s for another day until ``stop``."""
    producer = Producer({**cfg.kafka_common(), "enable.idempotence": True, "linger.ms": 5})
    i = 0
    while not stop.is_set():
        for _ in range(25):
            key, value = event(f"s{i % 700}", f"2026-11-20T{(i // 60) % 24:02d}:{i % 60:02d}:00Z", 1)
            producer.produce(cfg.topic, value, key)
            i += 1
        producer.poll(0)
        time.sleep(0.05)
    assert producer.flush(30) == 0
    sent.append(i)


@pytest.mark.slow
def test_commits_never_pause_while_a_period_closes(config: Settings, tmp_path: Path) -> None:
    boards = tmp_path / "boards.toml"
    boards.write_text('[[board]]\nid = "global"\nperiods = ["all_time", "daily"]\ngrace_seconds = 60\n')
    cfg = replace(config, boards_file=boards)
    players = 5000
    publish(
        cfg,
        [
            event(f"p{i % players}", f"2026-10-05T{(i // 60) % 24:02d}:{i % 60:02d}:00Z", 1 + i % 7)
            for i in range(40_000)
        ],
    )
    consumer = ConsumerProcess(cfg, tmp_path)
    stop = threading.Event()
    sent: list[int] = []
    streamer = threading.Thread(target=_stream, args=(cfg, stop, sent), daemon=True)
    try:
        consumer.wait_ready()
        wait_until(lambda: caught_up(cfg), 120, "the day's events consumed")
        streamer.start()
        time.sleep(2)  # the stream is flowing and committing
        gaps: list[float] = []
        closer = subprocess.Popen(
            [sys.executable, "-m", "leaderboard.cli", "close-period", "--period", DAY],
            env=env_of(cfg),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started = time.monotonic()
        while closer.poll() is None or time.monotonic() - started < 3:
            gaps.append(time.time() - consumer.metric("leaderboard_consumer_last_commit_timestamp_seconds"))
            assert time.monotonic() - started < 120, "close-period did not finish within 120 s"
            time.sleep(0.05)
        took = time.monotonic() - started
        out, err = closer.communicate(timeout=10)
        assert closer.returncode == 0, err
        assert out.split() == ["global", DAY]
        stop.set()
        streamer.join(60)
        assert sent
        assert sent[0] > 0
        wait_until(lambda: caught_up(cfg), 60, "the stream consumed")
        assert len(gaps) > 20, "too few samples to say anything about commit pauses"
        assert max(gaps) < COMMIT_GAP_S, f"commits paused {max(gaps):.2f} s while the period closed"
        print(f"close took {took:.1f} s; longest commit gap {max(gaps):.3f} s over {len(gaps)} samples")
        # Checked in PostgreSQL as test_auto_close does, each test with the query its own claim needs.
        with psycopg.connect(cfg.database_url) as conn:
            row = conn.execute(
                "SELECT players, standings_at IS NOT NULL FROM closed_periods WHERE board = 'global'"
                " AND period = %s",
                (DAY,),
            ).fetchone()
            assert row == (players, True)
            stored = conn.execute(
                "SELECT count(*) FROM period_standings WHERE board = 'global' AND period = %s", (DAY,)
            ).fetchone()
            assert stored == (players,)
    finally:
        stop.set()
        consumer.stop()
