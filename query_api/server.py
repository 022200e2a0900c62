"""Serve an app factory with uvicorn (uvloop + httptools with our limits, no access log).

The ``leaderboard api`` command itself lives in ``leaderboard.service``, which composes the read API with
HTTP ingest; this module knows nothing of the write path.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import shutil
import tempfile
from typing import Any, cast

import uvicorn

from leaderboard.settings import Settings
from query_api.limits import LimitedHttpToolsProtocol, Limits

FD_HEADROOM = 256
"""File descriptors besides client connections: Redis and PostgreSQL pools, Kafka (ingest), logs."""
log = logging.getLogger(__name__)


def _raise_fd_limit(connections: int) -> None:
    """Room for the connection limit plus as many refused connections lingering (1 s each) plus pools.

    Without it the default soft limit (often 1024) is hit before LEADERBOARD_API_MAX_CONNECTIONS, and
    accept() fails instead of clients getting their 503.
    """
    need = 2 * connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < need:
            log.warning(
                "open-file limit below what the connection limit needs",
                extra={"nofile": target, "needed": need, "max_connections": connections},
            )


def serve(
    config: Settings, factory: str, *, workers: int = 1, host: str | None = None, port: int | None = None
) -> int:
    """Run uvicorn until stopped; ``factory`` ("module:function") builds the app in each worker process."""
    _raise_fd_limit(config.api_max_connections)
    workers = max(1, workers)
    host = host or config.api_host
    port = port or config.api_port
    multiproc_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker counts in its own files; /metrics sums them (prometheus_client multiprocess mode).
        multiproc_dir = tempfile.mkdtemp(prefix="leaderboard-api-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    # httptools with our limits; a partial of a module-level class pickles into the worker processes.
    protocol = functools.partial(LimitedHttpToolsProtocol, limits=Limits.of(config))
    try:
        uvicorn.run(
            factory,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http=cast(Any, protocol),
            timeout_keep_alive=config.api_keep_alive_s,
            access_log=False,
            log_config=None,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
    finally:
        if multiproc_dir is not None:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
    return 0
