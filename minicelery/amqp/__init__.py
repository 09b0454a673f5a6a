"""RabbitMQ through pika, public API only: the only package that imports pika.

:class:`AmqpTransport` is an app's client side (``app.broker``: publish tasks, read ``rpc://`` replies,
one ``BlockingConnection`` per process and thread); :class:`AmqpConnection` is a worker's consuming
connection (a ``SelectConnection`` whose I/O loop is where the worker waits). Both implement the
protocols of :mod:`minicelery.transport`; pika's errors become ``OperationalError`` in ``wire``.

Celery's counterparts: kombu's ``Connection``/``Producer``/``Consumer`` over py-amqp, the rpc backend's
``ResultConsumer``. Left out: connection pools, failover, transports other than AMQP.
"""

from __future__ import annotations

from .client import AmqpTransport
from .connection import AmqpConnection

__all__ = ["AmqpTransport", "AmqpConnection"]
