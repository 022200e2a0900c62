"""``leaderboard demo``: the whole pipeline on one machine, on top of the stack ``make up`` started.

Two consumers (metrics on 9401 and 9402, the ports deploy/prometheus/prometheus.yml scrapes), the API and a
simulator; prints the URLs, then a live top 10 and one status line every 2 s until Ctrl-C, SIGTERM or
``--duration``. Everything it started is stopped before it returns (and dies with it if it is killed).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final

from prometheus_client.parser import text_string_to_metric_families

from leaderboard.errors import UserError
from leaderboard.settings import Settings

HELP: Final = "run consumers, API and simulator together and show a live top 10 (after `make up`)"
CONSUMER_PORTS: Final = (9401, 9402)
REFRESH_S: Final = 2.0
READY_TIMEOUT_S: Final = 90.0
STOP_TIMEOUT_S: Final = 15.0
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

    def check_alive(self) -> None:
        for c in self.children:
            if c.proc.poll() is not None:
                lines = c.log_path.read_text(errors="replace")[-4000:].strip().splitlines()
                last = lines[-1][:300] if lines else "no output"
                raise UserError(f"{c.name} exited with {c.proc.returncode} ({last}); see {c.log_path}")

    def stop(self) -> None:
        """SIGTERM in reverse start order (simulator first), wait, then SIGKILL whatever is left."""
        for c in reversed(self.children):
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for c in reversed(self.children):
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"demo: {c.name} ignored SIGTERM for {STOP_TIMEOUT_S:.0f}s; killing", file=sys.stderr)
                c.proc.kill()
                c.proc.wait(5)
            c.log.close()


def _http(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http URLs we build
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _preflight(config: Settings, api_host: str) -> None:
    """The CLI has checked Kafka, Redis and PostgreSQL already; the ports the demo binds must be free."""
    busy = [p for p in (*CONSUMER_PORTS, config.api_port) if not _port_free(api_host, p)]
    if busy:
        raise UserError(f"port(s) {', '.join(map(str, busy))} already in use: is another demo running?")


def _metrics(port: int) -> dict[str, float]:
    """Sums per sample name of one consumer's /metrics (empty if it does not answer)."""
    status, body = _http(f"http://127.0.0.1:{port}/metrics", timeout=1.0)
    out: dict[str, float] = {}
    if status != 200:
        return out
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


def _status_line(started: float) -> str:
    per = [_metrics(p) for p in CONSUMER_PORTS]
    total = {
        key: sum(m.get(key, 0.0) for m in per)
        for key in (
            "leaderboard_consumer_events_applied_total",
            "leaderboard_consumer_events_duplicate_total",
            "leaderboard_consumer_events_dead_lettered_total",
            "leaderboard_consumer_lag_messages",
        )
    }
    ready = sum(int(m.get("leaderboard_consumer_ready", 0)) for m in per)
    return (
        f"applied {total['leaderboard_consumer_events_applied_total']:,.0f}"
        f" · duplicates {total['leaderboard_consumer_events_duplicate_total']:,.0f}"
        f" · dead letters {total['leaderboard_consumer_events_dead_lettered_total']:,.0f}"
        f" · lag {total['leaderboard_consumer_lag_messages']:,.0f}"
        f" · consumers ready {ready}/{len(CONSUMER_PORTS)}"
        f" · up {time.monotonic() - started:,.0f}s"
    )


def _top10(base: str) -> list[str]:
    status, body = _http(f"{base}/v1/leaderboards")
    if status != 200:
        return [f"(API answered {status or 'nothing'} for /v1/leaderboards)"]
    board: dict[str, Any] = json.loads(body)["boards"][0]
    period = board["default_period"]
    status, body = _http(f"{base}/v1/leaderboards/{board['id']}/entries?limit=10&period={period}")
    if status == 503:
        return ["rebuilding — data will be back shortly"]
    if status != 200:
        return [f"(API answered {status or 'nothing'})"]
    page: dict[str, Any] = json.loads(body)
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


def run(config: Settings, args: argparse.Namespace) -> int:
    if args.rate <= 0 or args.players < 1:
        raise UserError("--rate must be > 0 and --players >= 1")
    host = config.api_host
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{shown_host}:{config.api_port}"
    _preflight(config, host)
    log_dir = Path(os.environ.get("LEADERBOARD_STACK_DIR", ".stack")) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    demo = Demo(config, log_dir)

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, on_term)
    tty = sys.stdout.isatty()
    try:
        for i, port in enumerate(CONSUMER_PORTS, 1):
            demo.start(f"consumer-{i}", "consume", "--metrics-port", str(port))
        demo.start("api", "api")
        consumer_ready = [f"http://127.0.0.1:{p}/readyz" for p in CONSUMER_PORTS]
        _wait_ready(demo, consumer_ready)  # the first consumer creates the boards' generations
        _wait_ready(demo, [f"{base}/readyz"])
        demo.start(
            "simulator",
            *("simulate", "--rate", str(args.rate), "--players", str(args.players), "--display-names"),
            *("--duplicate-ratio", "0.02", "--invalid-ratio", "0.01"),
        )
        print(
            "\n".join(
                [
                    "Leaderboard demo is running:",
                    f"  live page         {base}/",
                    f"  API docs          {base}/docs",
                    f"  OpenAPI           {base}/openapi.json",
                    f"  API metrics       {base}/metrics",
                    *(f"  consumer metrics  http://127.0.0.1:{p}/metrics" for p in CONSUMER_PORTS),
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
            block = [*_top10(base), "", _status_line(started)]
            if tty:
                # Repaint below the URLs: cursor save/restore keeps them on screen.
                sys.stdout.write("\x1b[J" + "\n".join(block) + f"\x1b[{len(block)}A\r")
            else:
                sys.stdout.write("\n".join(block) + "\n\n")
            sys.stdout.flush()
            time.sleep(REFRESH_S)
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
