"""``leaderboard consume``: one process of the consumer group, with its health and metrics port."""

from __future__ import annotations

import argparse
import logging

from consumers.health import HealthServer
from consumers.metrics import ConsumerMetrics
from consumers.processor import Processor
from leaderboard import boards as boards_mod
from leaderboard.settings import Settings

HELP = "run one consumer-group member: Kafka -> PostgreSQL + Redis, exactly once"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="override LEADERBOARD_CONSUMER_METRICS_PORT"
    )
    parser.add_argument("--metrics-host", default="127.0.0.1")


def run(config: Settings, args: argparse.Namespace) -> int:
    boards = boards_mod.load(config.boards_file)
    metrics = ConsumerMetrics()
    processor = Processor(config, boards, metrics)
    processor.install_signals()
    port = config.consumer_metrics_port if args.metrics_port is None else args.metrics_port
    health = HealthServer(args.metrics_host, port, metrics.registry, lambda: processor.problem)
    health.start()
    log.info("health endpoint listening", extra={"port": health.port})
    try:
        processor.run()
    finally:
        health.stop()
    return 0
