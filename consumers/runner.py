"""``leaderboard consume``: one process of the consumer group, with its health and metrics port."""

from __future__ import annotations

import argparse
import logging

from consumers.health import HealthServer
from consumers.metrics import ConsumerMetrics
from consumers.processor import Processor
from leaderboard import boards as boards_mod
from leaderboard.errors import UserError
from leaderboard.settings import Settings

HELP = "run one consumer-group member: Kafka -> PostgreSQL + Redis, exactly once"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="override LEADERBOARD_CONSUMER_METRICS_PORT"
    )
    parser.add_argument("--metrics-host", default="127.0.0.1")
    parser.add_argument(
        "--until-caught-up",
        action="store_true",
        help="exit 0 once the group committed every record the topic held at start (on the partitions this "
        "member owns, at least one); for tests and batch jobs",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="with --until-caught-up: give up after S seconds (non-zero exit with one line)",
    )


def run(config: Settings, args: argparse.Namespace) -> int:
    """Run until stopped (or caught up). The CLI checked Kafka, Redis and PostgreSQL just before (bounded,
    one line if not); an outage that begins later is the processor's to ride out (backoff, not-ready)."""
    if args.timeout is not None and not args.until_caught_up:
        raise UserError("--timeout bounds --until-caught-up; give both")
    if args.timeout is not None and args.timeout <= 0:
        raise UserError(f"--timeout must be positive seconds, not {args.timeout}")
    boards = boards_mod.load(config.boards_file)
    metrics = ConsumerMetrics()
    port = config.consumer_metrics_port if args.metrics_port is None else args.metrics_port
    if not 0 <= port <= 65535:
        raise UserError(f"--metrics-port {port}: expected a port in [0, 65535]")
    processors: list[Processor] = []  # the health server binds first: a busy port fails before Kafka work
    try:
        health = HealthServer(
            args.metrics_host,
            port,
            metrics.registry,
            lambda: processors[0].problem if processors else "starting",
        )
    except OSError as exc:
        raise UserError(
            f"cannot listen on {args.metrics_host}:{port} for /metrics ({exc.strerror or exc}): "
            "set LEADERBOARD_CONSUMER_METRICS_PORT or --metrics-port (0 picks a free port)"
        ) from None
    processor = Processor(config, boards, metrics)
    processors.append(processor)
    processor.install_signals()
    health.start()
    log.info("health endpoint listening", extra={"port": health.port})
    try:
        # An error from close() is no longer swallowed after a signal: its cause (the revoke callback asking
        # the closing consumer for its assignment: _DESTROY) is gone, and with --until-caught-up the stop
        # flag is also the timeout's, whose NotCaughtUp must exit non-zero.
        processor.run(args.until_caught_up, args.timeout)
    finally:
        health.stop()
    return 0
