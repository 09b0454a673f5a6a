"""RabbitMQ through pika, public API only: the only package that imports pika.

:class:`AmqpConnection` is one connection: a ``SelectConnection`` on minicelery's own I/O loop, whose
socket sends a loop step's frames together; the worker waits in that loop. :class:`AmqpTransport` is
an app's client side (``app.broker``: publish tasks, read ``rpc://`` replies), one ``AmqpConnection``
per process and thread. They implement the protocols of :mod:`minicelery.transport`; pika's errors
become ``OperationalError`` in ``wire``.

Celery's counterparts: kombu's ``Connection``/``Producer``/``Consumer`` over py-amqp, the rpc backend's
``ResultConsumer``. Left out: connection pools, failover, transports other than AMQP.
"""

from __future__ import annotations

from .client import AmqpTransport
from .connection import AmqpConnection

__all__ = ["AmqpTransport", "AmqpConnection"]
