"""A Redis lock that renews itself on a timer for as long as a job runs, and says loudly when it is lost.

Check-and-renew and check-and-release are single Lua calls, so a holder whose lease lapsed can never extend
or delete the lock a successor took. The job calls :meth:`Lease.check` between steps: once a renewal found
the lock gone (or failed for longer than the lease), it raises :class:`LockLost` and the job stops.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from leaderboard.lua_scripts import GUARD
from leaderboard.redis_client import FAILURES, SyncClient

log = logging.getLogger(__name__)

LEASE_MS = 30_000
RENEW_EVERY_S = LEASE_MS / 1000 / 3

_RENEW = (
    GUARD
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
)
_RELEASE = (
    GUARD
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)


class LockLost(RuntimeError):
    """Another process may now hold the lock: the job must stop, or two rebuilds would race."""


class Lease:
    """Hold ``key`` while the job runs: ``with Lease.take(...) as lease: ...; lease.check()``."""

    def __init__(self, client: SyncClient, key: str, token: str, lease_ms: int = LEASE_MS) -> None:
        self._r = client
        self.key = key
        self.token = token
        self._lease_ms = lease_ms
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._lost: str | None = None
        self._stop = threading.Event()
        self._renewed = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"lease {key}", daemon=True)

    @classmethod
    def take(cls, client: SyncClient, key: str, lease_ms: int = LEASE_MS) -> Lease | None:
        """The lease, renewing itself from now on; None if someone else holds the lock."""
        token = uuid.uuid4().hex
        if not client.set(key, token, nx=True, px=lease_ms):
            return None
        lease = cls(client, key, token, lease_ms)
        lease._thread.start()
        return lease

    def _run(self) -> None:
        every = self._lease_ms / 1000 / 3
        while not self._stop.wait(every):
            try:
                kept = self._renew(keys=[self.key], args=[self.token, self._lease_ms])
            except FAILURES as exc:
                if time.monotonic() - self._renewed > self._lease_ms / 1000:
                    self._lost = f"could not renew {self.key} for longer than the lease: {exc}"
                    return
                continue
            if not kept:
                self._lost = f"lock {self.key} was taken over or expired"
                log.error("lock lost", extra={"key": self.key})
                return
            self._renewed = time.monotonic()

    def check(self) -> None:
        """Raise LockLost if the lock is no longer ours."""
        if self._lost is not None:
            raise LockLost(self._lost)

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._release(keys=[self.key], args=[self.token])
        except FAILURES:
            log.warning("lock release failed; it expires by itself", extra={"key": self.key})

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def held(client: SyncClient, key: str) -> bool:
    """Whether anyone holds the lock now."""
    return bool(client.exists(key))
