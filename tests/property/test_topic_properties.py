"""memory://'s exchanges (``exchanges.routes``) match routing keys as RabbitMQ does (an independent regex oracle)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from minicelery.exchanges import routes, topic_matches

word = st.sampled_from(["task", "worker", "heartbeat", "a", "b"])
pattern_word = st.sampled_from(["task", "worker", "heartbeat", "a", "*", "#"])


def oracle(pattern: str, key: str) -> bool:
    """RabbitMQ's rule as one regex over ``"." + key``: each pattern word is ``.word``, ``*`` is one
    ``.word``, ``#`` any number of them."""
    regex = "".join(r"(?:\.[^.]+)*" if part == "#" else r"\.[^.]+" if part == "*" else r"\." + re.escape(part)
                    for part in pattern.split("."))
    return re.fullmatch(regex, "." + key) is not None


@given(pattern=st.lists(pattern_word, min_size=1, max_size=4).map(".".join),
       key=st.lists(word, min_size=1, max_size=4).map(".".join))
def test_topic_matching_agrees_with_the_oracle(pattern, key):
    assert topic_matches(pattern, key) == oracle(pattern, key)


@given(binding=st.lists(word, min_size=1, max_size=3).map(".".join),
       key=st.lists(word, min_size=1, max_size=3).map(".".join))
def test_direct_routes_equal_keys_and_fanout_routes_all(binding, key):
    assert routes("direct", binding, key) == (binding == key)
    assert routes("fanout", binding, key)
    assert routes("topic", binding, key) == (binding == key)  # no wildcard: a topic is a direct


def test_examples_from_the_rabbitmq_tutorial():
    assert topic_matches("*.orange.*", "quick.orange.rabbit")
    assert topic_matches("lazy.#", "lazy.orange.male.rabbit")
    assert not topic_matches("*.*.rabbit", "quick.orange.male.rabbit")
    assert topic_matches("#", "anything.at.all") and topic_matches("worker.#", "worker")
    assert not topic_matches("*.heartbeat", "heartbeat")
