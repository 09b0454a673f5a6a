"""Resource limits: the memory alarm (``connection.blocked``) and a consumer that stops reading."""

from __future__ import annotations

import socket

import pika.spec as spec
import pytest
from embedded_support import RawClient, ThreadBroker, connect, drain, wait_for


def test_memory_alarm_blocks_publishers_and_unblocks_below_80_percent():
    broker = ThreadBroker(None, max_memory=60_000)
    publisher = connect(broker.port)
    events = []
    publisher.add_on_connection_blocked_callback(lambda conn, frame: events.append(type(frame.method).__name__))
    publisher.add_on_connection_unblocked_callback(lambda conn, frame: events.append(type(frame.method).__name__))
    channel = publisher.channel()
    channel.queue_declare("held")
    for _ in range(100):
        channel.basic_publish("", "held", b"x" * 1000)
    wait_for(lambda: publisher.process_data_events(0.05) or events == ["Blocked"])
    consumer = connect(broker.port)  # a consumer-only connection keeps working under the alarm
    got = drain(consumer.channel(), "held", timeout=1.0)
    assert len(got) >= 50
    wait_for(lambda: publisher.process_data_events(0.05) or events == ["Blocked", "Unblocked"])
    got += drain(consumer.channel(), "held", timeout=1.0)
    assert len(got) == 100  # nothing was lost: the blocked publisher's frames were read after the alarm
    publisher.close()
    consumer.close()
    broker.stop()
    assert broker.errors == []


def test_a_consumer_that_stops_reading_does_not_grow_the_broker_without_bound():  # check 39, scaled down
    broker = ThreadBroker(None)
    stalled = RawClient(broker.port)
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.method(1, spec.Queue.Declare(queue="flood"))
    stalled.expect(spec.Queue.DeclareOk)
    stalled.method(1, spec.Basic.Consume(queue="flood", no_ack=True))
    stalled.expect(spec.Basic.ConsumeOk)
    publisher = connect(broker.port)
    channel = publisher.channel()
    body = b"y" * 100_000
    for _ in range(300):  # 30 MB for a consumer that reads nothing
        channel.basic_publish("", "flood", body)
    channel.queue_declare("flood", passive=True)
    transport_buffered = broker.call(lambda: max(c.transport.get_write_buffer_size()
                                                 for c in broker.broker.connections))
    assert transport_buffered < 8 << 20, "dispatch must pause on pause_writing"
    ready = channel.queue_declare("flood", passive=True).method.message_count
    assert ready > 100  # the rest waits in the queue, not in the socket's buffer
    other = connect(broker.port).channel()  # other connections are unaffected
    other.queue_declare("other")
    other.basic_publish("", "other", b"fine")
    assert [b for _, _, b in drain(other, "other")] == [b"fine"]
    stalled.close()
    publisher.close()
    broker.stop()
    assert broker.errors == []


def test_a_failing_disk_nacks_confirms_and_blocks_publishers(tmp_path):
    import os

    import pika
    import pika.exceptions

    broker = ThreadBroker(str(tmp_path))
    connection = connect(broker.port)
    reasons = []
    connection.add_on_connection_blocked_callback(lambda conn, frame: reasons.append(frame.method.reason))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare("disk", durable=True)
    channel.basic_publish("", "disk", b"fine", pika.BasicProperties(delivery_mode=2))
    journal = broker.broker.journal
    good_fd = journal.fd
    broker.call(lambda: setattr(journal, "fd", os.open(os.devnull, os.O_RDONLY)))  # writes now fail
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", "disk", b"lost", pika.BasicProperties(delivery_mode=2))
    wait_for(lambda: connection.process_data_events(0.05) or reasons == ["low on disk"])
    connection.close()
    broker.stop()
    os.close(good_fd)
    assert broker.errors == []
