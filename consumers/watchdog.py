"""The batch watchdog: a thread that notices a member that stopped committing, while its loop is blocked.

librdkafka's and libpq's blocking calls hold the batch loop's thread, so whatever reports and bounds them
must run on another one. Every half second the watchdog
(1) marks the member not-ready and counts a stall when a batch has not committed within the bound, when the
    loop stopped beating, or when records have waited on owned partitions that long with no commit (a
    member that stopped fetching);
(2) breaks the PostgreSQL connection when one stretch of work on it outlives its bound: a frozen server
    (SIGSTOP) never enforces its own statement_timeout and the kernel still ACKs, so only the client can
    end the wait;
(3) exports lag and batch age, so both stay visible while the batch is stuck.
The decisions are pure functions (``assess``, ``overdue``, ``spans_of``); the thread samples and acts.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from consumers.health import Readiness
from consumers.metrics import ConsumerMetrics

log = logging.getLogger(__name__)

STALL_AFTER_S = 15.0
"""A batch not committed within this (or a loop that has not beaten for this long) is a stall."""
PERIOD_S = 0.5


@dataclass(frozen=True)
class Batch:
    started: float
    records: int
    spans: dict[int, tuple[int, int]]
    """Partition -> (first offset, last offset + 1) of the batch's records."""


def spans_of(records: Iterable[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """(first, last + 1) offsets per partition of (partition, offset) pairs, any order."""
    out: dict[int, tuple[int, int]] = {}
    for partition, offset in records:
        have = out.get(partition)
        if have is None:
            out[partition] = (offset, offset + 1)
        elif offset < have[0] or offset >= have[1]:
            out[partition] = (min(have[0], offset), max(have[1], offset + 1))
    return out


class Progress:
    """Where the batch loop is. Written by the loop, read by the watchdog: each field is one atomic store."""

    def __init__(self, now: float) -> None:
        self.batch: Batch | None = None
        """The batch waiting to commit; None between batches."""
        self.beat = now
        """Last time the loop showed it is running (each poll, each retry wait, each rebuild chunk)."""
        self.committed_at = now
        """Last commit (or the start)."""

    def begin(self, now: float, records: int, spans: dict[int, tuple[int, int]]) -> None:
        self.batch = Batch(now, records, spans)
        self.beat = now

    def end(self, now: float, committed: bool) -> None:
        self.batch = None
        self.beat = now
        if committed:
            self.committed_at = now

    def alive(self, now: float) -> None:
        self.beat = now


@dataclass(frozen=True)
class Verdict:
    batch_age: float
    """Seconds the current batch has waited to commit; 0 between batches."""
    stall: str | None
    """Why the member is stalled (the readiness reason), or None."""

    episode: tuple[str, float] | None = None
    """Identifies one stall (its kind and start), so each is counted once."""


def assess(
    progress: Progress,
    waiting_since: float | None,
    now: float,
    stall_after: float,
    recovering: bool = False,
) -> Verdict:
    """Stalled when the batch in progress is older than ``stall_after``, when the loop has not beaten for
    that long, or when records have waited (since ``waiting_since``) that long with no commit.

    While boards are being rebuilt (``recovering``, already a not-ready reason) a batch may wait for
    minutes: only a loop that stopped beating (no rebuild progress either) is a stall then.
    """
    batch = progress.batch
    age = 0.0 if batch is None else max(0.0, now - batch.started)
    if batch is not None and age > stall_after and not recovering:
        why = f"stalled: a batch of {batch.records} record(s) not committed for {age:.0f} s"
        return Verdict(age, why, ("batch", batch.started))
    silent = now - progress.beat
    if silent > stall_after:
        why = f"stalled: the batch loop has been blocked for {silent:.0f} s"
        return Verdict(age, why, ("loop", progress.beat))
    if waiting_since is not None and not recovering:
        since = max(waiting_since, progress.committed_at)
        if now - since > stall_after:
            why = f"stalled: records have waited {now - since:.0f} s and nothing was committed"
            return Verdict(age, why, ("idle", since))
    return Verdict(age, None)


def overdue(busy_since: float | None, now: float, bound: float) -> bool:
    """Whether work that has kept a connection busy since ``busy_since`` has outlived ``bound``."""
    return busy_since is not None and now - busy_since > bound


class Watchdog:
    """Samples ``Progress`` every ``period`` seconds in a daemon thread and acts on the verdicts.

    ``pg_busy`` tells whether the batch connection has work in flight; ``pg_break`` makes that work fail
    now (the loop then reconnects and retries the batch, which is idempotent); ``export`` refreshes the lag
    series and returns the records waiting on owned partitions.
    """

    def __init__(
        self,
        progress: Progress,
        readiness: Readiness,
        metrics: ConsumerMetrics,
        *,
        pg_busy: Callable[[], bool],
        pg_break: Callable[[], None],
        pg_bound: float,
        export: Callable[[], int],
        stall_after: float = STALL_AFTER_S,
        period: float = PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.progress = progress
        self.readiness = readiness
        self.metrics = metrics
        self._pg_busy, self._pg_break, self._pg_bound = pg_busy, pg_break, pg_bound
        self._export = export
        self.stall_after, self.period, self.clock = stall_after, period, clock
        self._loop_thread = threading.main_thread().ident
        """The batch loop's thread, whose stack a stall report shows."""
        self._counted: tuple[str, float] | None = None
        """The last stall episode counted (each counts once)."""
        self._busy_since: float | None = None
        self._waiting_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.check()
            except Exception:  # the watchdog must outlive whatever it watches
                log.exception("watchdog check failed")

    def check(self) -> Verdict:
        """One round: readiness, stall counter, batch age, the PostgreSQL bound, lag."""
        now = self.clock()
        if self._export() == 0:
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = now
        recovering = self.readiness.problem("recovery") is not None
        verdict = assess(self.progress, self._waiting_since, now, self.stall_after, recovering)
        self.metrics.batch_age.set(verdict.batch_age)
        if verdict.episode is not None and verdict.episode != self._counted:
            self._counted = verdict.episode
            self.metrics.stalls.inc()
            log.warning(
                "member stalled; reporting not-ready",
                extra={"reason": verdict.stall, "where": self._where()},
            )
        self.readiness.set("watchdog", verdict.stall)
        busy = self._pg_busy()
        if not busy:
            self._busy_since = None
        elif self._busy_since is None:
            self._busy_since = now
        if overdue(self._busy_since, now, self._pg_bound):
            log.warning(
                "postgresql call outlived its bound; breaking the connection",
                extra={"seconds": round(now - (self._busy_since or now), 1)},
            )
            self._pg_break()
            self._busy_since = None
        return verdict

    def _where(self) -> list[str]:
        """The innermost frames of the batch loop: which call is blocked."""
        frame = sys._current_frames().get(self._loop_thread or 0)
        if frame is None:
            return []
        return [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_stack(frame)[-6:]]
