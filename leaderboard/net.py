"""Local TCP ports: one free now, or whether a given one is free (demo, tests and benchmarks bind them)."""

from __future__ import annotations

import random
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be bound now (SO_REUSEADDR: a port in TIME_WAIT counts as free)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_cluster_block(size: int, host: str = "127.0.0.1") -> int:
    """A base port with ``size`` consecutive free ports and their Redis Cluster bus ports (+10000), all below
    the kernel's ephemeral range (32768..): there an outgoing connection may take a port between this check
    and the node's bind (a bench run saw a node abort on its bus port so)."""
    for _ in range(100):
        base = random.randrange(20_000, 22_700)
        if all(port_free(host, p) for i in range(size) for p in (base + i, base + i + 10_000)):
            return base
    raise RuntimeError("no block of free ports found")
