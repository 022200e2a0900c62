"""``leaderboard consume``: one process of the consumer group, with its health and metrics port."""

from __future__ import annotations

import argparse
import logging
import sys

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


def run(config: Settings, args: argparse.Namespace) -> int:
    """Run until stopped. The CLI checked Kafka, Redis and PostgreSQL just before (bounded, one line if
    not); an outage that begins later is the processor's to ride out (backoff, not-ready)."""
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
        processor.run()
    except:  # noqa: E722 - librdkafka's close() can raise a KafkaError object that is no BaseException
        if not processor.stopping.is_set():
            raise
        # Stopping on a signal: every batch is committed (transactions), only leaving the group raced
        # librdkafka's termination (seen: on_revoke -> assignment() -> _DESTROY). Not a failure.
        log.warning("consumer close reported an error after the stop signal", extra={"error": _error()})
    finally:
        health.stop()
    return 0


def _error() -> str:
    return str(sys.exc_info()[1])[:300]
