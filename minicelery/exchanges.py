"""How an AMQP exchange routes a message to the queues bound to it: direct, fanout and topic.

A direct exchange routes to the bindings whose key equals the routing key; a fanout exchange to every
binding, whatever the key; a topic exchange matches dot-separated words, ``*`` standing for exactly one
word and ``#`` for zero or more (https://www.rabbitmq.com/tutorials/amqp-concepts#exchanges). The
in-process broker (:mod:`minicelery.memory`) routes with these rules; RabbitMQ has its own.
Remote control broadcasts on a fanout exchange, monitoring events travel on a topic exchange.
"""

from __future__ import annotations

__all__ = ["routes", "topic_matches"]


def routes(exchange_type: str, binding_key: str, routing_key: str) -> bool:
    """Whether an exchange of ``exchange_type`` routes ``routing_key`` to a binding with ``binding_key``
    (an unknown type routes as direct)."""
    if exchange_type == "fanout":
        return True
    if exchange_type == "topic":
        return topic_matches(binding_key, routing_key)
    return binding_key == routing_key


def topic_matches(pattern: str, key: str) -> bool:
    """Whether a topic binding ``pattern`` matches ``key`` (``*``: one word, ``#``: zero or more)."""
    return _words_match(pattern.split("."), key.split("."))


def _words_match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, words[skip:]) for skip in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _words_match(rest, words[1:])
