"""``leaderboard demo``: the whole pipeline on one machine, on top of the stack ``make up`` started.

Two consumers (metrics on LEADERBOARD_CONSUMER_METRICS_PORT + 1 and + 2: 9401 and 9402 by default, the ports
deploy/prometheus/prometheus.yml scrapes), the API and a simulator; prints the URLs, then a live top 10 and
one status line every 2 s until Ctrl-C, SIGTERM or ``--duration``. A bounded run (``--duration``, as in CI)
then stops the simulator and fails unless events were applied and the API serves a top-N board with players
the simulator wrote. Everything it started is stopped before it returns (and dies with it if it is killed).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final

from prometheus_client.parser import text_string_to_metric_families

from leaderboard.errors import UserError
from leaderboard.net import free_port, port_free
from leaderboard.settings import Settings

# Tuning constants of the demo itself (not settings: nothing to configure per deployment).
HELP: Final = "run consumers, API and simulator together and show a live top 10 (after `make up`)"
CONSUMERS: Final = 2
REFRESH_S: Final = 2.0
READY_TIMEOUT_S: Final = 90.0
STOP_TIMEOUT_S: Final = 15.0
SERVED_TIMEOUT_S: Final = 30.0
"""A bounded run waits this long after the simulator stopped for events to be applied and served."""
APPLIED: Final = "leaderboard_consumer_events_applied_total"
_PR_SET_PDEATHSIG: Final = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=200.0, help="simulated events/s (default 200)")
    parser.add_argument("--players", type=int, default=2000, help="distinct simulated players (default 2000)")
    parser.add_argument("--duration", type=float, help="stop by itself after this many seconds (CI)")


class _Stop(Exception):
    """SIGTERM, turned into an exception so the same cleanup path runs as for Ctrl-C."""


def _die_with_parent() -> None:
    # Runs in the child before exec: if the demo is SIGKILLed, the kernel sends the child SIGTERM.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes] = field(repr=False)


@dataclass
class Demo:
    config: Settings
    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, *args: str) -> Child:
        log_path = self.log_dir / f"demo-{name}.log"
        log = log_path.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "leaderboard.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Own session: Ctrl-C reaches only the demo, which then stops children in order.
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        child = Child(name, proc, log_path, log)
        self.children.append(child)
        return child

    def check_alive(self, but: Child | None = None) -> None:
        for c in self.children:
            if c is not but and c.proc.poll() is not None:
                lines = c.log_path.read_text(errors="replace")[-4000:].strip().splitlines()
                last = lines[-1][:300] if lines else "no output"
                raise UserError(f"{c.name} exited with {c.proc.returncode} ({last}); see {c.log_path}")

    def stop(self, only: Child | None = None) -> None:
        """SIGTERM in reverse start order (simulator first), wait, then SIGKILL whatever is left."""
        chosen = [c for c in reversed(self.children) if only is None or c is only]
        for c in chosen:
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for c in chosen:
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"demo: {c.name} ignored SIGTERM for {STOP_TIMEOUT_S:.0f}s; killing", file=sys.stderr)
                c.proc.kill()
                c.proc.wait(5)
            if not c.log.closed:
                c.log.close()


def _http(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http URLs we build
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def consumer_ports(config: Settings) -> tuple[int, ...]:
    """The consumers' metrics ports: the configured consumer port + 1, + 2 (0: free ports, for tests)."""
    base = config.consumer_metrics_port
    if base == 0:
        return tuple(free_port() for _ in range(CONSUMERS))
    return tuple(base + i for i in range(1, CONSUMERS + 1))


def _preflight(ports: Collection[int], api_host: str) -> None:
    """The CLI has checked Kafka, Redis and PostgreSQL already; the ports the demo binds must be free."""
    busy = [p for p in ports if not port_free(api_host, p)]
    if busy:
        raise UserError(f"port(s) {', '.join(map(str, busy))} already in use: is another demo running?")


def _metrics(port: int) -> dict[str, float] | None:
    """Sums per sample name of one consumer's /metrics; None if it does not answer."""
    status, body = _http(f"http://127.0.0.1:{port}/metrics", timeout=1.0)
    if status != 200:
        return None
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


def _status_line(ports: Collection[int], started: float) -> str:
    per = [_metrics(p) or {} for p in ports]
    total = {
        key: sum(m.get(key, 0.0) for m in per)
        for key in (
            APPLIED,
            "leaderboard_consumer_events_duplicate_total",
            "leaderboard_consumer_events_dead_lettered_total",
            "leaderboard_consumer_lag_messages",
        )
    }
    ready = sum(int(m.get("leaderboard_consumer_ready", 0)) for m in per)
    return (
        f"applied {total[APPLIED]:,.0f}"
        f" · duplicates {total['leaderboard_consumer_events_duplicate_total']:,.0f}"
        f" · dead letters {total['leaderboard_consumer_events_dead_lettered_total']:,.0f}"
        f" · lag {total['leaderboard_consumer_lag_messages']:,.0f}"
        f" · consumers ready {ready}/{len(ports)}"
        f" · up {time.monotonic() - started:,.0f}s"
    )


def _top_page(base: str, limit: int = 10) -> tuple[int, dict[str, Any]]:
    """(status, page) of the first board's default period through the API; status 0 when nothing answers."""
    status, body = _http(f"{base}/v1/leaderboards")
    if status != 200:
        return status, {}
    board: dict[str, Any] = json.loads(body)["boards"][0]
    period = board["default_period"]
    status, body = _http(f"{base}/v1/leaderboards/{board['id']}/entries?limit={limit}&period={period}")
    return status, (json.loads(body) if status == 200 else {})


def _top10(base: str) -> list[str]:
    status, page = _top_page(base)
    if status == 503:
        return ["rebuilding — data will be back shortly"]
    if status != 200:
        return [f"(API answered {status or 'nothing'})"]
    lines = [f"Top 10 · board {page['board']} · {page['period']} · {page['total']:,} players"]
    for e in page["entries"]:
        name = e["display_name"] or e["player_id"]
        lines.append(f"  {e['rank']:>4}  {name[:32]:<32} {e['score']:>10,}")
    if not page["entries"]:
        lines.append("  (no scores yet)")
    return lines


def _wait_ready(demo: Demo, urls: list[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = list(urls)
    while pending:
        demo.check_alive()
        pending = [u for u in pending if _http(u)[0] != 200]
        if time.monotonic() > deadline:
            waiting = ", ".join(pending)
            raise UserError(f"not ready after {READY_TIMEOUT_S:.0f}s: {waiting}; see {demo.log_dir}")
        if pending:
            time.sleep(0.3)


def served_verdict(
    written: Collection[str], applied: Mapping[int, float | None], status: int, page: Mapping[str, Any]
) -> str | None:
    """Why a bounded demo proved nothing (one line), or None when it proved the pipeline end to end.

    ``written``: players the simulator's acknowledged events scored for; ``applied``: each consumer's
    events-applied counter by metrics port (None: it did not answer); ``status``/``page``: the API's answer
    for the first board's top N. The board must hold at least one of the simulator's players (other data on
    a developer's stack may rank too).
    """
    if not written:
        return "the simulator had no acknowledged event"
    silent = sorted(p for p, v in applied.items() if v is None)
    if silent:
        return f"consumer /metrics on port(s) {', '.join(map(str, silent))} did not answer"
    if sum(v or 0.0 for v in applied.values()) <= 0:
        return f"no event was applied ({APPLIED} is 0 on every consumer)"
    if status != 200:
        return f"the API answered {status or 'nothing'} for the top-N board"
    entries = page.get("entries") or []
    if not entries:
        return "the API served an empty top-N board"
    if not {e.get("player_id") for e in entries} & set(written):
        return "the API's top-N board holds none of the players the simulator wrote"
    return None


def _written(truth: Path) -> set[str]:
    """Players with points in the simulator's truth file (written when it stops); empty if it wrote none."""
    try:
        doc = json.loads(truth.read_text())
    except (OSError, ValueError):
        return set()
    return {player for player, points in doc.get("players", {}).items() if points > 0}


def await_served(
    written: Collection[str], ports: Collection[int], base: str, timeout: float = SERVED_TIMEOUT_S
) -> float:
    """Wait until ``served_verdict`` passes; the events applied, or UserError with its last verdict."""
    deadline = time.monotonic() + timeout
    while True:
        applied = {p: (m.get(APPLIED, 0.0) if (m := _metrics(p)) is not None else None) for p in ports}
        verdict = served_verdict(written, applied, *_top_page(base))
        if verdict is None:
            return sum(v or 0.0 for v in applied.values())
        if time.monotonic() > deadline:
            raise UserError(f"bounded demo failed after {timeout:.0f} s: {verdict}")
        time.sleep(0.5)


def _check_served(demo: Demo, simulator: Child, truth: Path, ports: Collection[int], base: str) -> None:
    """Stop the simulator (it writes the truth file), then require its events applied and served."""
    demo.stop(simulator)
    demo.check_alive(but=simulator)
    try:
        applied = await_served(_written(truth), ports, base)
    except UserError as exc:
        raise UserError(f"{exc}; see {demo.log_dir}") from None
    print(f"demo: check passed: {applied:,.0f} events applied, the API serves them", flush=True)


def run(config: Settings, args: argparse.Namespace) -> int:
    if args.rate <= 0 or args.players < 1:
        raise UserError("--rate must be > 0 and --players >= 1")
    host = config.api_host
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{shown_host}:{config.api_port}"
    ports = consumer_ports(config)
    _preflight((*ports, config.api_port), host)
    log_dir = config.stack_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    truth = log_dir / "demo-truth.json"
    truth.unlink(missing_ok=True)
    demo = Demo(config, log_dir)

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, on_term)
    tty = sys.stdout.isatty()
    try:
        for i, port in enumerate(ports, 1):
            demo.start(f"consumer-{i}", "consume", "--metrics-port", str(port))
        demo.start("api", "api")
        consumer_ready = [f"http://127.0.0.1:{p}/readyz" for p in ports]
        _wait_ready(demo, consumer_ready)  # the first consumer creates the boards' generations
        _wait_ready(demo, [f"{base}/readyz"])
        simulator = demo.start(
            "simulator",
            *("simulate", "--rate", str(args.rate), "--players", str(args.players), "--display-names"),
            *("--duplicate-ratio", "0.02", "--invalid-ratio", "0.01", "--truth", str(truth)),
        )
        print(
            "\n".join(
                [
                    "Leaderboard demo is running:",
                    f"  live page         {base}/",
                    f"  API docs          {base}/docs",
                    f"  OpenAPI           {base}/openapi.json",
                    f"  API metrics       {base}/metrics",
                    *(f"  consumer metrics  http://127.0.0.1:{p}/metrics" for p in ports),
                    f"  logs              {log_dir}/demo-*.log",
                    "Ctrl-C stops everything.",
                    "",
                ]
            ),
            flush=True,
        )
        started = time.monotonic()
        while args.duration is None or time.monotonic() - started < args.duration:
            demo.check_alive()
            block = [*_top10(base), "", _status_line(ports, started)]
            if tty:
                # Repaint below the URLs: cursor save/restore keeps them on screen.
                sys.stdout.write("\x1b[J" + "\n".join(block) + f"\x1b[{len(block)}A\r")
            else:
                sys.stdout.write("\n".join(block) + "\n\n")
            sys.stdout.flush()
            time.sleep(REFRESH_S)
        if args.duration is not None:
            if tty:
                sys.stdout.write("\x1b[J")
            _check_served(demo, simulator, truth, ports, base)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if tty:
            sys.stdout.write("\x1b[J")
        print("demo: stopping simulator, API and consumers …", flush=True)
        demo.stop()
    print("demo: stopped", flush=True)
    return 0
