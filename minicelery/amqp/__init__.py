"""Talking AMQP 0-9-1 to RabbitMQ with pika: the only package that imports pika.

:class:`Broker` (an app's client side: publish tasks, receive ``rpc://`` replies, one lazy connection per
process and thread) and :class:`WorkerConnection` (the worker's consuming connection), both over
``link._Link`` (one connection and its channel). Pika errors become ``OperationalError`` here, with the
URL's password masked.

Celery's counterparts: kombu's ``Connection``/``Producer``/``Consumer`` over py-amqp, the rpc backend's
``ResultConsumer``. Left out: pools, back-off retries (one reconnect, then fail fast), failover, non-AMQP.
"""

from __future__ import annotations

from ..transport import Delivery, QueueSpec, Reply
from .broker import Broker
from .connection import WorkerConnection

__all__ = ["QueueSpec", "Reply", "Delivery", "Broker", "WorkerConnection"]
