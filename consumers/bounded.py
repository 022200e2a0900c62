"""Kafka calls with a bound the process enforces, not only the one librdkafka is asked to keep.

After a broker restart, librdkafka's ``send_offsets_to_transaction`` was seen blocking for minutes past its
timeout (issue 12: until max.poll.interval.ms). A blocking call therefore runs on a short-lived daemon
thread while the caller waits at most its timeout plus a grace; if it has not returned by then the caller
gets a retriable KafkaException and the transactional producer is abandoned (the batch loop creates a new
one and retries the batch, which is idempotent). The abandoned call's thread and client are left to
finish or to die with the process: rare, and far cheaper than a member stuck for good.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

log = logging.getLogger(__name__)

GRACE_S = 2.0
T = TypeVar("T")


class CallStuck(KafkaException):
    """A Kafka call did not return within its bound; the client that made it must not be used again."""


def bounded(what: str, timeout: float, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a daemon thread; raises CallStuck if it has not returned after timeout + GRACE_S."""
    result: list[T] = []
    error: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            result.append(fn(*args))
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name=f"kafka-{what}", daemon=True).start()
    if not done.wait(timeout + GRACE_S):
        log.warning("kafka call did not return within its bound", extra={"call": what, "bound_s": timeout})
        raise CallStuck(
            KafkaError(
                KafkaError._TIMED_OUT,
                f"{what} did not return within {timeout + GRACE_S:.0f} s",
                retriable=True,
            )
        )
    if error:
        raise error[0]
    return result[0]


class TransactionalProducer:
    """A transactional producer whose blocking calls are ``bounded``; unusable once one of them got stuck.

    The same methods the batch loop uses on confluent_kafka.Producer, so the loop does not change.
    """

    def __init__(self, conf: dict[str, Any], init_timeout: float) -> None:
        self._producer = Producer(conf)
        self.stuck = False
        self._call("init_transactions", init_timeout, self._producer.init_transactions, init_timeout)

    def _call(self, what: str, timeout: float, fn: Callable[..., T], *args: Any) -> T:
        if self.stuck:
            raise KafkaException(KafkaError(KafkaError._STATE, "producer abandoned after a stuck call"))
        try:
            return bounded(what, timeout, fn, *args)
        except CallStuck:
            self.stuck = True
            raise

    def begin_transaction(self) -> None:
        if self.stuck:
            raise KafkaException(KafkaError(KafkaError._STATE, "producer abandoned after a stuck call"))
        self._producer.begin_transaction()

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
    ) -> None:
        self._producer.produce(topic, value, key, headers=headers)

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], group_metadata: object, timeout: float
    ) -> None:
        self._call(
            "send_offsets_to_transaction",
            timeout,
            self._producer.send_offsets_to_transaction,
            offsets,
            group_metadata,
            timeout,
        )

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit_transaction", timeout, self._producer.commit_transaction, timeout)

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort_transaction", timeout, self._producer.abort_transaction, timeout)

    def flush(self, timeout: float) -> int:
        """Records still queued (all of them when the producer was abandoned)."""
        if self.stuck:
            return len(self._producer)
        return self._call("flush", timeout, self._producer.flush, timeout)
