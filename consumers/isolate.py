"""Which records of a rejected batch does a sink refuse? Bisection, as pure logic: the sink is a callback.

A batch a sink refused for its data (not an outage) holds at least one record the sink refuses on its own.
Halving the failing part until single records remain finds every such record in about 2·k·log2(n)
attempts for k of them among n, and the parts that pass are written as they pass. Nothing here runs on the
happy path: the caller bisects only after the whole batch failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
E = TypeVar("E")


def refused(items: Sequence[T], attempt: Callable[[Sequence[T]], E | None], failed: E) -> list[tuple[T, E]]:
    """The items ``attempt`` refuses alone, each with its error, in input order.

    ``attempt(part)`` writes ``part`` and returns None, or the error that refused it (it raises for an
    outage, which ends the search). ``failed`` is the error of ``items`` as a whole, already attempted.
    Parts are tried front half first, so what passes is written in the original order.
    A part that fails while each of its halves passes (a refusal by combination) yields nothing: the halves
    are written, which is all the caller can ask for.
    """
    out: list[tuple[T, E]] = []
    pending: list[tuple[Sequence[T], E | None]] = [(items, failed)]
    while pending:
        part, error = pending.pop()
        if error is None:
            error = attempt(part)
            if error is None:
                continue
        if len(part) == 1:
            out.append((part[0], error))
            continue
        middle = len(part) // 2
        pending.append((part[middle:], None))
        pending.append((part[:middle], None))
    return out
