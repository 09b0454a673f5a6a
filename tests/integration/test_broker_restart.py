"""The AMQP transports survive a broker restart (RabbitMQ's ``rabbitmqctl stop_app`` / ``start_app``, or
a stop and start of the embedded broker's process on the same port and data directory).

One restart serves every check, because a restart takes seconds and disturbs anyone else using the broker.
The ``rabbitmq_restart`` fixture starts the broker again whatever happens.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from broker_admin import MASKED_URL

from minicelery.amqp import AmqpConnection, AmqpTransport
from minicelery.exceptions import OperationalError
from minicelery.transport import Delivery, QueueSpec

pytestmark = pytest.mark.broker

MASKED = MASKED_URL
CANNOT_CONNECT = re.escape(f"Cannot connect to {MASKED_URL}")


def _until_raises(call: Any, timeout: float = 15.0) -> OperationalError:
    """Call ``call`` until it raises OperationalError (the client noticing the broker went away)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            call()
        except OperationalError as exc:
            return exc
    raise AssertionError(f"no OperationalError within {timeout}s")


def test_clients_recover_after_broker_restart(broker_url, unique_queue, pika_channel, rabbitmq_restart):
    queue, reply_queue = unique_queue(), unique_queue("reply")
    spec = QueueSpec(queue)
    idle = AmqpTransport(broker_url)  # connected before the restart, idle during it
    busy = AmqpTransport(broker_url)  # tries to publish while the broker is down
    idle.publish(b"before", {}, routing_key=queue, declare=[spec])
    idle.declare_reply_queue(reply_queue, 60000)
    busy.publish(b"before", {}, routing_key=queue, declare=[spec])
    worker = AmqpConnection(broker_url, heartbeat=None)
    worker.connect()
    cancelled: list[str] = []
    worker.consume(queue, lambda delivery: None, cancelled.append)
    pika_channel.connection.close()

    rabbitmq_restart.stop()
    lost = _until_raises(lambda: worker.wait(0.2))
    assert "lost" in str(lost) and lost.url == MASKED and lost.reason
    assert not worker.is_open
    with pytest.raises(OperationalError, match=CANNOT_CONNECT) as refused:
        worker.connect()
    assert refused.value.url == MASKED and refused.value.reason
    assert not worker.is_open
    started = time.monotonic()
    with pytest.raises(OperationalError, match=CANNOT_CONNECT):
        busy.publish(b"during", {}, routing_key=queue, declare=[spec])
    assert time.monotonic() - started < 5  # fail fast, no retry loop
    rabbitmq_restart.start()

    # Each client reconnects by itself on its next call; the stale connection of `idle` is replaced, and
    # its reply queue is consumed again at once, so a result for the task just sent cannot be missed.
    idle.publish(b"after-idle", {"delivery_mode": 2}, routing_key=queue, declare=[spec])
    busy.publish(b"after-busy", {"delivery_mode": 2}, routing_key=queue, declare=[spec])
    idle.publish(b"reply", {"correlation_id": "t1"}, routing_key=reply_queue)
    assert [r.correlation_id for r in idle.drain_replies(reply_queue, 5)] == ["t1"]

    worker.connect()
    assert worker.is_open
    received: list[Delivery] = []
    worker.consume(queue, received.append, cancelled.append)
    deadline = time.monotonic() + 10
    while {d.body for d in received} < {b"after-idle", b"after-busy"}:
        assert time.monotonic() < deadline, f"only {received} arrived"
        worker.wait(0.1)
    assert cancelled == []  # a lost connection is not a cancel
    worker.close()
    idle.close()
    busy.close()
