"""Progress lines for long operations: at most one a second on stderr, and a final one."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, what: str, total: int | None = None, every_s: float = 1.0) -> None:
        self.what = what
        self.total = total
        self.every_s = every_s
        self.done = 0
        self._start = time.monotonic()
        self._next = self._start + every_s

    def update(self, done: int, extra: str = "") -> None:
        self.done = done
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every_s
            self._print(now, extra)

    def finish(self, extra: str = "") -> float:
        now = time.monotonic()
        self._print(now, extra, final=True)
        return now - self._start

    def _print(self, now: float, extra: str, final: bool = False) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.what}: {self.done:,}"]
        if self.total:
            left = max(self.total - self.done, 0)
            parts[0] += f"/{self.total:,} ({100 * self.done / self.total:.0f}%)"
            if not final and rate > 0:
                parts.append(f"ETA {left / rate:.0f} s")
        parts.append(f"{rate:,.0f}/s")
        parts.append(f"{elapsed:.1f} s")
        if extra:
            parts.append(extra)
        print(("done " if final else "") + ", ".join(parts), file=sys.stderr, flush=True)
