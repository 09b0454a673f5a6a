"""Exchanges and routing: direct, fanout, topic and headers; bindings are (queue, routing key, arguments).

The default exchange ``''`` is not an object here: the broker routes it to the queue named by the routing
key (every queue is implicitly bound to it by name, and it cannot be bound or declared). A message that
matches several bindings of one queue is enqueued once, so :meth:`Exchange.route` returns a set of names.
RabbitMQ's counterpart is ``rabbit_exchange_type_*``; exchange-to-exchange bindings are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

TYPES = ("direct", "fanout", "topic", "headers")


@dataclass
class Exchange:
    """A named exchange and its bindings."""

    name: str
    type: str
    durable: bool = False
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    #: (queue name, routing key) -> binding arguments
    bindings: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def bind(self, queue: str, routing_key: str, arguments: dict[str, Any]) -> None:
        """Add a binding; binding again is a no-op (as in RabbitMQ)."""
        self.bindings.setdefault((queue, routing_key), dict(arguments))

    def unbind(self, queue: str, routing_key: str) -> None:
        """Remove a binding; a missing one is not an error."""
        self.bindings.pop((queue, routing_key), None)

    def unbind_queue(self, queue: str) -> None:
        """Remove every binding of ``queue`` (it was deleted)."""
        for key in [key for key in self.bindings if key[0] == queue]:
            del self.bindings[key]

    def route(self, routing_key: str, headers: dict[str, Any] | None = None) -> set[str]:
        """The names of the queues a message with ``routing_key`` (and ``headers``) goes to."""
        if self.type == "fanout":
            return {queue for queue, _ in self.bindings}
        if self.type == "direct":
            return {queue for queue, key in self.bindings if key == routing_key}
        if self.type == "topic":
            return {queue for queue, key in self.bindings if topic_matches(key, routing_key)}
        return {queue for (queue, _), args in self.bindings.items() if headers_match(args, headers or {})}


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: words split on ``.``, ``*`` is one word, ``#`` is zero or more."""
    return _match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


@lru_cache(maxsize=4096)
def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        # '#' swallows zero words, or one word and stays
        return _match(rest, words) or (bool(words) and _match(pattern, words[1:]))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


def headers_match(arguments: dict[str, Any], headers: dict[str, Any]) -> bool:
    """The headers exchange: ``x-match`` ``all`` (default) or ``any`` of the non-``x-`` binding arguments."""
    wanted = {key: value for key, value in arguments.items() if not key.startswith("x-")}
    mode = arguments.get("x-match", "all")

    def same(key: str) -> bool:
        value = wanted[key]
        return key in headers and (value is None or (type(headers[key]) is type(value)
                                                     and headers[key] == value))
    if mode in ("any", "any-with-x"):
        return any(same(key) for key in wanted)
    return all(same(key) for key in wanted)
