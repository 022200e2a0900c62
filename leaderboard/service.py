"""``leaderboard api``: the composition root, the one place the read API and HTTP ingest are put together.

The read API (query_api/) and the write path (producers/) do not import each other
(tests/test_boundaries.py); this module mounts the ingest router on the read API's app and closes its
Kafka producer at shutdown. It also mounts the runtime boards' admin routes (consumers/boards_admin.py:
they build and switch Redis generations, write-path work) behind the read API's admin auth.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from fastapi import FastAPI

from leaderboard.boards import Board
from leaderboard.settings import Settings
from producers.ingest import make_router
from producers.publisher import Publisher
from query_api import admin, server
from query_api.app import create_app

HELP = "serve the read API and HTTP ingest (OpenAPI at /docs)"


def build_app(config: Settings, boards: Sequence[Board] | None = None, *, fast_path: bool = True) -> FastAPI:
    """The API process's app: read routes plus POST /v1/scores (its Publisher made on first use)."""
    ingest = make_router(
        lambda: Publisher(config), token=config.ingest_token, max_future_skew_s=config.max_future_skew_s
    )
    # Imported here, not at the top: the write-path modules it brings stay out of the CLI's start-up check.
    from consumers.boards_admin import make_router as make_boards_router  # noqa: PLC0415

    boards_admin = make_boards_router(config, admin.authorizer(config))
    return create_app(
        config, boards, fast_path=fast_path, routers=(ingest, boards_admin), on_shutdown=(ingest.close,)
    )


def app_factory() -> FastAPI:
    """App factory for uvicorn workers: each worker process reads the settings itself."""
    from leaderboard import logs, settings  # noqa: PLC0415 - runs in the worker process

    config = settings.load()
    logs.setup(config.log_level)
    return build_app(config)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--host", help="bind address (default LEADERBOARD_API_HOST)")
    parser.add_argument("--port", type=int, help="port (default LEADERBOARD_API_PORT)")


def run(config: Settings, args: argparse.Namespace) -> int:
    return server.serve(
        config, f"{__name__}:app_factory", workers=int(args.workers), host=args.host, port=args.port
    )
