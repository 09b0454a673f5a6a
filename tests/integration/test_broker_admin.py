"""The admin seam the integration tests use (``broker_admin``) answers about the broker they connect to.

On RabbitMQ it is ``rabbitmqctl``, on the embedded broker its control socket; either way a connection,
a queue and its counts made here with plain pika must show up there, or the tests that rely on the seam
would read another broker than the one they drive.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pika
import pytest
from broker_admin import (
    EMBEDDED,
    HOST,
    PORT,
    amqp_sockets,
    close_connection,
    list_channels,
    list_connections,
    list_queues,
    plain_connection,
)

pytestmark = pytest.mark.broker


def _row(name: str) -> dict[str, Any]:
    (row,) = [row for row in list_queues() if row["name"] == name]
    return row


def test_queues_and_counts_are_the_ones_pika_made(pika_channel, unique_queue):
    queue = unique_queue("admin")
    pika_channel.queue_declare(queue, durable=True, arguments={"x-max-priority": 3})
    for body in (b"a", b"b", b"c"):
        pika_channel.basic_publish("", queue, body)
    method, _, _ = pika_channel.basic_get(queue, auto_ack=False)  # one unacked, two ready
    assert method is not None
    deadline = time.monotonic() + 10  # RabbitMQ's counters lag (the embedded broker's do not)
    while (_row(queue)["messages_ready"], _row(queue)["messages_unacknowledged"]) != (2, 1):
        assert time.monotonic() < deadline, _row(queue)
        time.sleep(0.05)  # polling interval of a deadline-bounded wait
    row = _row(queue)
    assert (row["durable"], row["auto_delete"], row["exclusive"], row["consumers"]) == (True, False, False, 0)
    assert [(entry[0], entry[-1]) for entry in row["arguments"]] == [("x-max-priority", 3)]
    pika_channel.basic_ack(method.delivery_tag)


def test_a_connection_is_listed_with_its_heartbeat_and_closed_from_the_broker():
    before = amqp_sockets()
    connection = plain_connection()
    try:
        (local_port,) = [port for port in amqp_sockets() if port not in before]
        channel = connection.channel()
        channel.basic_qos(prefetch_count=23, global_qos=True)
        (ours,) = [row for row in list_connections() if row["peer_port"] == local_port]
        assert ours["timeout"] == 60  # pika takes the broker's proposal: 60 s on both
        assert 23 in {row["global_prefetch_count"] for row in list_channels()}
        close_connection(ours["id"], "closed by the admin seam test")
        deadline = time.monotonic() + 10
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            while time.monotonic() < deadline:  # until the broker's Connection.Close arrives
                connection.process_data_events(time_limit=0.5)
        assert info.value.reply_code == 320 and "closed by the admin seam test" in info.value.reply_text
    finally:
        if connection.is_open:
            connection.close()


def test_the_broker_is_the_one_the_switch_named():
    """``MINICELERY_TEST_BROKER=embedded`` must not quietly end up on RabbitMQ, nor the reverse: the
    server's ``product`` in its ``Connection.Start`` tells them apart."""
    with socket.create_connection((HOST, PORT), timeout=10) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        start = b""
        while len(start) < 7 or len(start) < 8 + int.from_bytes(start[3:7], "big"):
            chunk = sock.recv(4096)
            assert chunk, f"the broker closed the socket after {start!r}"
            start += chunk
    product = b"\x07productS"  # a field-table entry: name length, name, type 'S' (long string)
    assert product in start
    value_at = start.index(product) + len(product)
    value = start[value_at + 4:value_at + 4 + int.from_bytes(start[value_at:value_at + 4], "big")]
    assert value == (b"minicelery" if EMBEDDED else b"RabbitMQ")
