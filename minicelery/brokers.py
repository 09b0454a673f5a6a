"""Which transport serves a broker URL: the one place that names the implementations of the seam.

``memory://`` is the in-process broker (:mod:`minicelery.memory`); every AMQP URL is RabbitMQ through
pika (:mod:`minicelery.amqp`). The app calls :func:`open_transport` for its ``broker`` and its worker's
connection; everything else talks to the :mod:`~minicelery.transport` protocols. Celery's counterpart
is kombu's transport aliases (``kombu.transport.TRANSPORT_ALIASES``), which load classes by dotted name.
"""

from __future__ import annotations

from typing import Any

from .transport import Transport
from .urls import transport_scheme

__all__ = ["open_transport"]


def open_transport(url: str | None, conf: Any) -> Transport:
    """A new transport for ``url`` with the connection settings of ``conf`` (nothing connects yet).

    Raises:
        ImproperlyConfigured: the URL is neither AMQP nor ``memory://``.
    """
    if transport_scheme(url) == "memory":
        from .memory import MemoryTransport  # deferred like amqp: only the transport in use is loaded

        return MemoryTransport(url)
    from .amqp import AmqpTransport  # deferred so that `import minicelery` never loads pika

    return AmqpTransport(url, heartbeat=conf.broker_heartbeat, connect_timeout=conf.broker_connection_timeout,
                         transport_options=conf.broker_transport_options)
