"""The watchdog's decisions, the readiness it reports and bounded calls (a fake clock, no services)."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from hypothesis import given
from hypothesis import strategies as st

from consumers.bounded import GRACE_S, CallStuck, bounded
from consumers.health import Readiness
from consumers.metrics import ConsumerMetrics
from consumers.watchdog import Progress, Watchdog, assess, overdue, spans_of

BOUND = 15.0


def sample(metrics: ConsumerMetrics, name: str) -> float:
    """One series of the registry, through prometheus-client's public API; raises when it is missing."""
    value = metrics.registry.get_sample_value(name)
    if value is None:
        raise AssertionError(f"no series {name}")
    return value


def progress(now: float = 0.0) -> Progress:
    return Progress(now)


def test_a_batch_younger_than_the_bound_is_no_stall() -> None:
    p = progress()
    p.begin(100.0, 50, {0: (10, 60)})
    verdict = assess(p, None, 114.0, BOUND)
    assert verdict.stall is None
    assert verdict.batch_age == 14.0


def test_a_batch_older_than_the_bound_is_a_stall_named_once_per_batch() -> None:
    p = progress()
    p.begin(100.0, 50, {0: (10, 60)})
    first = assess(p, None, 116.0, BOUND)
    later = assess(p, None, 130.0, BOUND)
    assert first.stall == "stalled: a batch of 50 record(s) not committed for 16 s"
    assert first.episode == later.episode == ("batch", 100.0)
    p.end(131.0, committed=True)
    p.begin(131.5, 7, {1: (0, 7)})
    assert assess(p, None, 147.0, BOUND).episode == ("batch", 131.5)


def test_a_loop_that_stopped_beating_is_a_stall_even_between_batches() -> None:
    p = progress(0.0)
    p.alive(10.0)
    assert assess(p, None, 25.0, BOUND).stall is None
    verdict = assess(p, None, 25.5, BOUND)
    assert verdict.stall == "stalled: the batch loop has been blocked for 16 s"
    assert verdict.batch_age == 0.0


def test_records_waiting_without_a_commit_for_the_bound_is_a_stall() -> None:
    p = progress(0.0)
    p.alive(100.0)
    # records started waiting at 90, the last commit was at 0: counted from 90
    assert assess(p, 90.0, 105.0, BOUND).stall is None
    late = assess(p, 90.0, 106.0, BOUND)
    assert late.stall == "stalled: records have waited 16 s and nothing was committed"
    assert late.episode == ("idle", 90.0)
    # a commit since restarts the clock; nothing waiting is never a stall
    p.end(100.0, committed=True)
    assert assess(p, 90.0, 106.0, BOUND).stall is None
    assert assess(p, None, 106.0, BOUND).stall is None


def test_a_rebuild_in_progress_is_no_stall_while_it_progresses() -> None:
    p = progress(0.0)
    p.begin(0.0, 5, {0: (0, 5)})
    p.alive(100.0)  # rebuild chunks beat
    assert assess(p, 0.0, 110.0, BOUND, recovering=True).stall is None
    assert assess(p, 0.0, 110.0, BOUND).stall is not None
    stuck = assess(p, 0.0, 116.0, BOUND, recovering=True)
    assert stuck.stall == "stalled: the batch loop has been blocked for 16 s"


def test_a_batch_given_up_does_not_count_as_a_commit() -> None:
    p = progress(0.0)
    p.begin(50.0, 3, {0: (0, 3)})
    p.end(51.0, committed=False)
    assert p.committed_at == 0.0
    assert p.batch is None


def test_overdue() -> None:
    assert not overdue(None, 100.0, 12.0)
    assert not overdue(90.0, 102.0, 12.0)
    assert overdue(90.0, 102.5, 12.0)


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 10_000)), max_size=200))
def test_spans_cover_exactly_the_offsets_seen(pairs: list[tuple[int, int]]) -> None:
    spans = spans_of(pairs)
    assert set(spans) == {p for p, _ in pairs}
    for partition, (first, end) in spans.items():
        offsets = [o for p, o in pairs if p == partition]
        assert (first, end) == (min(offsets), max(offsets) + 1)


def test_readiness_joins_every_part_and_drives_the_gauge() -> None:
    metrics = ConsumerMetrics()
    r = Readiness(metrics.ready)
    assert r.problem() == "starting"
    assert sample(metrics, "leaderboard_consumer_ready") == 0
    r.set("start", None)
    assert r.problem() is None
    assert sample(metrics, "leaderboard_consumer_ready") == 1
    r.set("batch", "postgres unavailable: retrying")
    r.set("watchdog", "stalled: x")
    assert r.problem() == "postgres unavailable: retrying; stalled: x"
    assert r.problem("watchdog") == "stalled: x"
    assert sample(metrics, "leaderboard_consumer_ready") == 0
    r.set("batch", None)
    assert sample(metrics, "leaderboard_consumer_ready") == 0  # the watchdog still has a problem
    r.set("watchdog", None)
    assert r.problem() is None
    assert sample(metrics, "leaderboard_consumer_ready") == 1


class Fake:
    """The watchdog's collaborators: a clock, a PostgreSQL connection that may be busy, lag."""

    def __init__(self) -> None:
        self.now = 0.0
        self.busy = False
        self.broken = 0
        self.waiting = 0

    def clock(self) -> float:
        return self.now

    def pg_break(self) -> None:
        self.broken += 1
        self.busy = False


def watchdog(fake: Fake) -> tuple[Watchdog, Progress, Readiness, ConsumerMetrics]:
    metrics = ConsumerMetrics()
    readiness = Readiness(metrics.ready)
    readiness.set("start", None)
    p = Progress(fake.now)
    dog = Watchdog(
        p,
        readiness,
        metrics,
        pg_busy=lambda: fake.busy,
        pg_break=fake.pg_break,
        pg_bound=12.0,
        export=lambda: fake.waiting,
        stall_after=BOUND,
        clock=fake.clock,
    )
    return dog, p, readiness, metrics


def test_watchdog_reports_a_stuck_batch_counts_it_once_and_clears_after_the_commit() -> None:
    fake = Fake()
    dog, p, readiness, metrics = watchdog(fake)
    p.begin(0.0, 10, {0: (0, 10)})
    for t in range(1, 31):
        fake.now = float(t)
        if t < 5:  # the loop is blocked from t=5 on
            p.alive(fake.now)
        dog.check()
        if t <= 15:
            assert readiness.problem() is None, t
    assert readiness.problem() == "stalled: a batch of 10 record(s) not committed for 30 s"
    assert sample(metrics, "leaderboard_consumer_ready") == 0
    assert sample(metrics, "leaderboard_consumer_stalls_total") == 1
    assert sample(metrics, "leaderboard_consumer_batch_age_seconds") == 30.0
    p.end(31.0, committed=True)
    fake.now = 31.5
    dog.check()
    assert readiness.problem() is None
    assert sample(metrics, "leaderboard_consumer_ready") == 1
    assert sample(metrics, "leaderboard_consumer_batch_age_seconds") == 0.0
    assert sample(metrics, "leaderboard_consumer_stalls_total") == 1


def test_watchdog_breaks_a_postgresql_call_that_outlives_its_bound_once() -> None:
    fake = Fake()
    dog, p, _, _ = watchdog(fake)
    fake.busy = True
    for t in range(0, 13):
        fake.now = float(t)
        p.alive(fake.now)
        dog.check()
    assert fake.broken == 0  # busy for exactly 12 s: within the bound
    fake.now = 12.5
    dog.check()
    assert fake.broken == 1
    fake.now = 13.0
    dog.check()  # not busy any more (the call failed): nothing more to break
    assert fake.broken == 1


def test_watchdog_short_busy_stretches_never_break_the_connection() -> None:
    fake = Fake()
    dog, p, _, _ = watchdog(fake)
    for t in range(0, 100):
        fake.now = t / 2
        p.alive(fake.now)
        fake.busy = t % 10 != 0  # 4.5 s of work, then idle for a moment
        dog.check()
    assert fake.broken == 0


def test_watchdog_flags_records_waiting_with_no_commit() -> None:
    fake = Fake()
    dog, p, readiness, metrics = watchdog(fake)
    fake.waiting = 500
    # Ticks the fake clock as the stuck-batch test does: each watchdog test drives its own scenario.
    for t in range(0, 17):
        fake.now = float(t)
        p.alive(fake.now)
        dog.check()
        if t <= 15:
            assert readiness.problem() is None, t
    assert readiness.problem() == "stalled: records have waited 16 s and nothing was committed"
    assert sample(metrics, "leaderboard_consumer_stalls_total") == 1
    fake.waiting = 0
    fake.now = 17.0
    p.alive(fake.now)
    dog.check()
    assert readiness.problem() is None


def test_bounded_returns_results_and_raises_what_the_call_raises() -> None:
    assert bounded("add", 1.0, lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(KafkaException, match="boom"):
        bounded("fail", 1.0, _raise, KafkaException(KafkaError(KafkaError._FAIL, "boom")))


def test_bounded_gives_up_on_a_call_that_ignores_its_timeout() -> None:
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(CallStuck) as caught:
        bounded("stuck", 0.1, release.wait, 30.0)
    took = time.monotonic() - started
    release.set()
    assert 0.1 + GRACE_S <= took < 0.1 + GRACE_S + 1.0
    err = caught.value.args[0]
    assert err.code() == KafkaError._TIMED_OUT
    assert err.retriable()


def _raise(exc: BaseException) -> None:
    raise exc
