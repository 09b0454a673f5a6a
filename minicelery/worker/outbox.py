"""Result messages on their way to the clients' reply queues, kept until the connection has written them.

A result handed to the connection leaves in its next wait; if the connection is lost before that, the
result is handed to the next connection instead, so a broker outage loses no result (a client may then
see one twice, which the rpc backend ignores: the first ready state wins). Celery's counterpart is the
rpc backend's ``store_result`` publishing through the worker's producer pool, which has no such buffer.
"""

from __future__ import annotations

from typing import NamedTuple

from ..transport import Connection

__all__ = ["Outbox", "Result"]


class Result(NamedTuple):
    """One result message: where it goes, and its encoded body."""

    reply_to: str
    correlation_id: str
    content_type: str
    content_encoding: str
    body: bytes


class Outbox:
    """Results waiting to be published, and results published but not yet known to be written."""

    def __init__(self) -> None:
        self._waiting: list[Result] = []
        self._unwritten: list[Result] = []

    def __len__(self) -> int:
        return len(self._waiting) + len(self._unwritten)

    def add(self, reply_to: str, correlation_id: str, reply: tuple[str, str, bytes]) -> None:
        """Queue an encoded result (``(content_type, content_encoding, body)``) for ``reply_to``."""
        self._waiting.append(Result(reply_to, correlation_id, *reply))

    def publish(self, connection: Connection) -> None:
        """Hand every waiting result to ``connection`` (Celery's properties for an rpc result)."""
        for result in self._waiting:
            connection.publish(result.body, {"content_type": result.content_type,
                                             "content_encoding": result.content_encoding,
                                             "correlation_id": result.correlation_id, "delivery_mode": 1,
                                             "priority": 0, "headers": {}},
                               exchange="", routing_key=result.reply_to)
        self._unwritten += self._waiting
        self._waiting = []

    def written(self) -> None:
        """The connection waited since the last :meth:`publish`: what it was given has left."""
        self._unwritten = []

    def connection_lost(self) -> None:
        """The connection died: what it may not have written waits for the next one, first in line."""
        self._waiting[:0] = self._unwritten
        self._unwritten = []
