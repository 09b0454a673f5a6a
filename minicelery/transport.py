"""The values that cross the broker seam: what to declare, what was delivered, what came back.

Plain frozen dataclasses with no pika in them, so the app and the worker can name queues and read
deliveries without loading the AMQP client; the ``amqp`` package turns them into pika calls and back. Celery's
counterparts are kombu's ``Queue``/``Exchange`` and ``Message``; left out: exchange types other than
direct, and message methods (acking goes through the connection).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QueueSpec", "Reply", "Delivery"]


@dataclass(frozen=True)
class QueueSpec:
    """A queue, its exchange (default: its name; ``''`` is never declared) and binding, as Celery's (§8.2)."""

    name: str
    exchange: str | None = None
    exchange_type: str = "direct"
    routing_key: str | None = None
    durable: bool = True
    auto_delete: bool = False
    exclusive: bool = False
    arguments: Mapping[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exchange", self.name if self.exchange is None else self.exchange)
        object.__setattr__(self, "routing_key", self.name if self.routing_key is None else self.routing_key)


@dataclass(frozen=True)
class Reply:
    """One message received on an rpc reply queue."""

    correlation_id: str | None
    content_type: str | None
    content_encoding: str | None
    body: bytes


@dataclass(frozen=True)
class Delivery:
    """One message delivered to a consumer; ``properties`` is a plain dict (``headers`` ``{}`` if absent)."""

    delivery_tag: int
    exchange: str
    routing_key: str
    redelivered: bool
    properties: dict[str, Any]
    body: bytes
