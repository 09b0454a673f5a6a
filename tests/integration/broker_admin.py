"""Plain pika helpers the integration tests share: a connection that waits out a broker restart, queue
depths, and deleting what a test declared."""

from __future__ import annotations

from collections.abc import Iterable

import pika

HOST, PORT = "127.0.0.1", 5672
BROKER_URL = f"amqp://guest:guest@{HOST}:{PORT}//"


def plain_connection() -> pika.BlockingConnection:
    """A plain pika connection; pika retries for up to 30 s, as the broker may be finishing a restart."""
    return pika.BlockingConnection(pika.ConnectionParameters(
        HOST, PORT, connection_attempts=150, retry_delay=0.2, socket_timeout=5))


def ready_count(queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare: fast, but blind to unacked messages)."""
    connection = plain_connection()
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def delete_queues(names: Iterable[str]) -> None:
    """Delete the queues and the exchanges of the same name (a worker declares both); missing is fine."""
    names = list(names)
    if not names:
        return
    connection = plain_connection()
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
            channel.exchange_delete(name)
    finally:
        connection.close()
