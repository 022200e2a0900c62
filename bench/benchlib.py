"""Helpers for bench/run.py: child processes that always stop, Prometheus text, wrk output, statistics.

Not part of the product. Every wait here has a deadline; every process started through :class:`Procs`
runs in its own session and is stopped (SIGTERM, then SIGKILL of its process group) by ``Procs.close``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg
import redis
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which."""


@dataclass
class Procs:
    """Processes this benchmark started; ``close`` stops them all (their whole process groups)."""

    logdir: Path
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"{name}.log").open("ab")
        self._logs.append(log)
        proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=dict(env) if env is not None else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 8.0) -> None:
        """SIGTERM the process group, wait up to ``grace_s``, then SIGKILL it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace_s)
        # Children (uvicorn workers, forked baseline servers) share the group; make sure none survive.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2)
        if proc in self.running:
            self.running.remove(proc)

    def close(self) -> None:
        for proc in list(self.running):
            self.stop(proc, grace_s=5.0)
        for log in self._logs:
            log.close()


def run_cmd(argv: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None) -> str:
    """Run to completion (killed at the deadline) and return stdout; raises BenchError on failure."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=ROOT,
            env=dict(env) if env is not None else None,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{argv[0]} did not finish within {timeout_s:.0f}s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).decode(errors="replace")[-800:]
        raise BenchError(f"{' '.join(argv[:3])} ... exited {done.returncode}: {tail}")
    return done.stdout.decode(errors="replace")


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except BenchError:
            raise
        except Exception:  # not up yet (connection refused, half-started)
            pass
        time.sleep(every_s)
    raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def remove_world(
    admin: AdminClient,
    r: redis.Redis,
    database_url: str,
    *,
    groups: Sequence[str],
    topics: Sequence[str],
    key_match: str,
    schema: str,
) -> None:
    """Best effort, each step on its own (one failing must not keep the others from running): a benchmark's
    consumer groups, topics, Redis keys matching ``key_match`` (for at most 120 s) and PostgreSQL schema."""
    with contextlib.suppress(Exception):
        if groups:
            for fut in admin.delete_consumer_groups(list(groups), request_timeout=30).values():
                with contextlib.suppress(Exception):
                    fut.result(30)
    with contextlib.suppress(Exception):
        if topics:
            for fut in admin.delete_topics(list(topics), operation_timeout=30).values():
                with contextlib.suppress(Exception):
                    fut.result(60)
    with contextlib.suppress(Exception):
        deadline = time.monotonic() + 120
        batch: list[bytes] = []
        for key in r.scan_iter(match=key_match, count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                r.unlink(*batch)
                batch = []
            if time.monotonic() > deadline:
                break
        if batch:
            r.unlink(*batch)
    with (
        contextlib.suppress(Exception),
        psycopg.connect(database_url, autocommit=True, connect_timeout=5) as c,
    ):
        c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- Prometheus text ---------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_prom(text: str) -> Samples:
    out: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def scrape(port: int) -> Samples:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics", 3.0)
    if status != 200:
        raise BenchError(f"metrics on port {port} answered {status}")
    return parse_prom(body.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def add_samples(many: Sequence[Samples]) -> Samples:
    out: Samples = {}
    for s in many:
        for k, v in s.items():
            out[k] = out.get(k, 0.0) + v
    return out


def sub_samples(after: Samples, before: Samples) -> Samples:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def histogram_quantile(samples: Samples, name: str, q: float) -> float | None:
    """Prometheus-style quantile (linear inside the bucket) of a ``<name>_bucket`` histogram."""
    buckets: list[tuple[float, float]] = []
    for (n, labels), v in samples.items():
        if n == f"{name}_bucket":
            le_text = dict(labels)["le"]
            buckets.append((float("inf") if le_text == "+Inf" else float(le_text), v))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return buckets[-1][0]


# -- wrk -----------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _duration(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if m is None:
        raise BenchError(f"unreadable wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_s: float
    p99_s: float
    requests: int
    bad: int
    """Non-2xx/3xx responses plus socket errors."""


def parse_hey(text: str) -> WrkResult:
    """`hey` output (fixed-rate runs) in the same shape as wrk's."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"50% in ([\d.]+) secs", text)
    p99 = re.search(r"99% in ([\d.]+) secs", text)
    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)
    errors = re.search(r"Error distribution:\n((?:\s+\[\d+\].*\n?)+)", text)
    if not (rps and p50 and p99 and codes):
        raise BenchError(f"unreadable hey output: {text[-400:]}")
    bad = sum(int(n) for code, n in codes if not code.startswith(("2", "3")))
    if errors:
        bad += sum(int(n) for n in re.findall(r"\[(\d+)\]", errors.group(1)))
    return WrkResult(
        rps=float(rps.group(1)),
        p50_s=float(p50.group(1)),
        p99_s=float(p99.group(1)),
        requests=sum(int(n) for _, n in codes),
        bad=bad,
    )


def parse_wrk(text: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.MULTILINE)
    total = re.search(r"(\d+) requests in", text)
    if not (rps and p50 and p99 and total):
        raise BenchError(f"unreadable wrk output: {text[-400:]}")
    bad = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if non2xx:
        bad += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        bad += sum(int(x) for x in sock.groups())
    return WrkResult(
        float(rps.group(1)), _duration(p50.group(1)), _duration(p99.group(1)), int(total.group(1)), bad
    )


# -- CPU accounting ------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields[:8]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / _TICK, sum(ticks) / _TICK


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    rest = stat[stat.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / _TICK


def cpu_by_command(names: Sequence[str]) -> dict[str, float]:
    """CPU seconds so far of every live process whose command name is in ``names`` (read-only /proc scan)."""
    out = dict.fromkeys(names, 0.0)
    # A /proc scan like tests/services.py's PostgresServer._pids on purpose: the bench does not import tests.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm in out:
            rest = stat[stat.rindex(")") + 2 :].split()
            out[comm] += (int(rest[11]) + int(rest[12])) / _TICK
    return out


# -- statistics and formatting ------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def fmt_num(x: float | None, digits: int = 0) -> str:
    if x is None or x != x:  # noqa: PLR0124 - NaN check
        return "n/a"
    return f"{x:,.{digits}f}"


def fmt_ms(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:  # noqa: PLR0124
        return "n/a"
    return f"{seconds * 1000:.1f} ms" if seconds >= 0.01 else f"{seconds * 1000:.2f} ms"


def fmt_runs(values: Sequence[float], digits: int = 0) -> str:
    return ", ".join(fmt_num(v, digits) for v in values)


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or a != a or b != b or b == 0:  # noqa: PLR0124
        return "n/a"
    return f"{a / b:.2f}x" if a / b < 10 else f"{a / b:.1f}x"
