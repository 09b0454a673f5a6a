"""Fixtures of the embedded-broker tests.

* ``embedded``: one embedded broker (durable, in a temporary data directory) for the whole session, in a
  thread of the test process; at the end no exception may have escaped into its loop.
* ``target``: the port of the broker under test — parametrized over the embedded broker and RabbitMQ
  (``127.0.0.1:5672``, the oracle: the same check must give the same outcome on both, except the
  deviations docs/broker.md lists). A RabbitMQ that cannot be reached fails its half of the checks.
* ``names``: fresh queue/exchange names, deleted at teardown on the broker that was used.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator

import pytest
from embedded_support import RABBITMQ, ThreadBroker, connect


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadBroker]:
    """The session's embedded broker; fails the session if anything escaped into its event loop."""
    broker = ThreadBroker(str(tmp_path_factory.mktemp("broker-data")))
    yield broker
    broker.stop()
    assert broker.errors == [], f"exceptions escaped into the broker's loop: {broker.errors}"


@pytest.fixture(params=["embedded", "rabbitmq"])
def target(request: pytest.FixtureRequest) -> int:
    """The port of the broker under test (the embedded broker, then RabbitMQ)."""
    if request.param == "embedded":
        return request.getfixturevalue("embedded").port
    try:
        socket.create_connection(RABBITMQ, timeout=5).close()
    except OSError as exc:
        pytest.fail(f"RabbitMQ is not reachable on {RABBITMQ} ({exc}): it is the oracle of these checks")
    return RABBITMQ[1]


@pytest.fixture
def names(target: int) -> Iterator[Callable[[str], str]]:
    """``names(prefix) -> 'ebt.<prefix>.<hex>'``; queues and exchanges of those names go at teardown."""
    given: list[str] = []

    def make(prefix: str = "q") -> str:
        name = f"ebt.{prefix}.{uuid.uuid4().hex[:10]}"
        given.append(name)
        return name

    yield make
    if given:
        connection = connect(target)
        channel = connection.channel()
        for name in given:
            channel.queue_delete(name)
            channel.exchange_delete(name)
        connection.close()
