"""minicelery's embedded AMQP 0-9-1 broker: ``python -m minicelery broker``, zero setup on one machine.

A single-node, single-vhost (``/``) server in one asyncio thread that speaks the protocol subset pika,
py-amqp (Celery, kombu), Dramatiq and minicelery use, with RabbitMQ's observable semantics: direct, fanout,
topic and headers exchanges; durable, exclusive, auto-delete and expiring queues with TTLs, priorities and
dead-lettering; prefetch, acks, requeue in publish order, publisher confirms; RabbitMQ's reply codes.
Durable by default (a segmented journal with group commit, :mod:`.journal`). RabbitMQ's counterpart is
RabbitMQ itself; left out: clustering, TLS, other vhosts, quorum and stream queues, transactions,
exchange-to-exchange bindings, ``direct_reply_to``, consumer priorities, paging messages to disk.
It imports nothing of minicelery's app or worker; only the command line imports it.
Reading order: frames → methods → content → exchange → queue → vhost → channel → connection → journal →
server. ``docs/broker.md`` states the guarantees and every deviation from RabbitMQ.
"""

from .server import Broker, Config, run, serve

__all__ = ["Broker", "Config", "run", "serve"]
