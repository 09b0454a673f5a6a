"""Fixtures shared by the integration tests, which talk to a real broker: RabbitMQ on 127.0.0.1:5672, or
with ``MINICELERY_TEST_BROKER=embedded`` the embedded broker (see broker_admin).

They fail rather than skip when the broker is unreachable: a broker test that silently skips proves nothing.

* ``test_broker`` (session, autouse): starts the session's embedded broker when that is the test broker, and
  stops it at the end; nothing for RabbitMQ.
* ``broker_url``: the URL to connect to (checked once per session).
* ``unique_queue``: a factory of fresh queue names; each queue, and the exchange of the same name that a
  ``QueueSpec`` declares, is deleted at teardown.
* ``pika_channel``: a plain pika channel, to look at what minicelery did without going through it.
* ``rabbitmq_restart``: stops and starts the broker (``rabbitmqctl stop_app``/``start_app``, or the
  embedded broker's process on the same port and data directory), and always starts it again at teardown,
  whatever happened.
"""

from __future__ import annotations

import shutil
import socket
import uuid
from collections.abc import Callable, Iterator

import pika
import pytest
from broker_admin import (
    BROKER_NAME,
    BROKER_URL,
    EMBEDDED,
    HOST,
    PORT,
    delete_queues,
    plain_connection,
    start_broker,
    start_session_broker,
    stop_broker,
)
from cli_support import WorkerProcess, worker_factory


@pytest.fixture(scope="session", autouse=True)
def test_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The session's embedded broker (durable, in a temporary data directory), when it is the test broker."""
    if not EMBEDDED:
        yield
        return
    broker = start_session_broker(str(tmp_path_factory.mktemp("embedded-broker")))
    yield
    broker.stop()  # asserts a clean exit


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The URL of the test broker; fails the test when the broker is not listening."""
    try:
        socket.create_connection((HOST, PORT), timeout=5).close()
    except OSError as exc:
        hint = "the embedded broker did not start" if EMBEDDED else \
            "start it (e.g. `rabbitmq-server -detached`) before running the integration tests"
        pytest.fail(f"{BROKER_NAME} is not reachable on {HOST}:{PORT} ({exc}): {hint}.")
    return BROKER_URL


@pytest.fixture
def pika_channel(broker_url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A plain pika channel on its own connection, closed at teardown."""
    connection = plain_connection()
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


@pytest.fixture
def workers() -> Iterator[Callable[..., WorkerProcess]]:
    """``start(args, env=..., cwd=..., argv0=...) -> WorkerProcess`` (see cli_support); every worker is
    killed at teardown."""
    start, cleanup = worker_factory()
    yield start
    cleanup()


@pytest.fixture
def unique_queue(broker_url: str) -> Iterator[Callable[..., str]]:
    """A factory ``unique_queue(prefix='test') -> name``; every name it gave is deleted at teardown."""
    names: list[str] = []

    def make(prefix: str = "test") -> str:
        name = f"minicelery-{prefix}-{uuid.uuid4().hex[:12]}"
        names.append(name)
        return name

    yield make
    delete_queues(names)


class RabbitControl:
    """Stop and start the test broker: RabbitMQ's application (the Erlang node stays up), with
    ``rabbitmqctl``, or the embedded broker's process (see ``broker_admin.stop_broker``/``start_broker``)."""

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        """Every connection is closed and the port stops listening."""
        self.stopped = True
        stop_broker()

    def start(self) -> None:
        """Start it again, then wait until AMQP connections are accepted again."""
        start_broker()
        self.stopped = False


@pytest.fixture
def rabbitmq_restart(broker_url: str) -> Iterator[RabbitControl]:
    """A :class:`RabbitControl`; the broker is always started again at teardown."""
    if not EMBEDDED and shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is not on PATH: the broker restart tests need it (and root).")
    control = RabbitControl()
    try:
        yield control
    finally:
        control.start()  # whatever happened; starting a running broker is harmless
