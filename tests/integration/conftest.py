"""Fixtures shared by the integration tests, which talk to the real RabbitMQ on 127.0.0.1:5672.

They fail rather than skip when RabbitMQ is unreachable: a broker test that silently skips proves nothing.

* ``broker_url``: the URL to connect to (checked once per session).
* ``unique_queue``: a factory of fresh queue names; each queue, and the exchange of the same name that a
  ``QueueSpec`` declares, is deleted at teardown.
* ``pika_channel``: a plain pika channel, to look at what minicelery did without going through it.
* ``rabbitmq_restart``: stops and starts the RabbitMQ application with ``rabbitmqctl``, and always
  restarts it at teardown, whatever happened.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pika
import pytest
from broker_admin import BROKER_URL, HOST, PORT, delete_queues, plain_connection
from cli_support import WorkerProcess, worker_factory


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The URL of the test broker; fails the test when RabbitMQ is not listening on 127.0.0.1:5672."""
    try:
        socket.create_connection((HOST, PORT), timeout=5).close()
    except OSError as exc:
        pytest.fail(f"RabbitMQ is not reachable on {HOST}:{PORT} ({exc}). Start it (e.g. "
                    f"`rabbitmq-server -detached`) before running the integration tests.")
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
    """Stop and start the RabbitMQ application (the Erlang node stays up), with ``rabbitmqctl``."""

    def __init__(self) -> None:
        self.stopped = False

    @staticmethod
    def _ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        """``rabbitmqctl stop_app``: every connection is closed and the port stops listening."""
        self.stopped = True
        self._ctl("stop_app")

    def start(self) -> None:
        """``start_app`` then ``await_startup``, then wait until AMQP connections are accepted again."""
        self._ctl("start_app")
        self._ctl("await_startup")
        plain_connection().close()
        self.stopped = False


@pytest.fixture
def rabbitmq_restart(broker_url: str) -> Iterator[RabbitControl]:
    """A :class:`RabbitControl`; the broker is always started again at teardown."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is not on PATH: the broker restart tests need it (and root).")
    control = RabbitControl()
    try:
        yield control
    finally:
        control.start()  # whatever happened; start_app on a running node is harmless
