"""Acceptance checks on deliveries: requeue order, tags, acks, prefetch, recover, confirms — both brokers."""

from __future__ import annotations

import time

import pika
import pika.exceptions
import pika.frame
import pytest
from embedded_support import RawClient, connect, drain, wait_for


def filled(target, names, count):
    connection = connect(target)
    channel = connection.channel()
    queue = names()
    channel.queue_declare(queue)
    for number in range(1, count + 1):
        channel.basic_publish("", queue, str(number).encode())
    wait_for(lambda: channel.queue_declare(queue, passive=True).method.message_count == count)
    return connection, channel, queue


def get(channel, queue):
    method, _, body = channel.basic_get(queue)
    return method, body.decode() if body is not None else None


def test_requeue_returns_messages_to_their_original_positions(target, names):  # check 18
    connection, channel, queue = filled(target, names, 5)
    tags = {get(channel, queue)[1]: None for _ in range(3)}
    assert list(tags) == ["1", "2", "3"]
    channel.basic_nack(2, requeue=True)
    method, body = get(channel, queue)
    assert (body, method.redelivered, method.delivery_tag, method.message_count) == ("2", True, 4, 2)
    channel.basic_reject(3, requeue=True)
    channel.basic_reject(1, requeue=True)
    channel.basic_ack(4)
    got = [(body.decode(), m.redelivered) for m, _, body in drain(channel, queue)]
    assert got == [("1", True), ("3", True), ("4", False), ("5", False)]
    connection.close()


def test_nack_multiple_requeues_every_older_outstanding_tag(target, names):  # check 19
    connection, channel, queue = filled(target, names, 3)
    for _ in range(3):
        get(channel, queue)
    channel.basic_nack(3, multiple=True, requeue=True)
    assert [b.decode() for _, _, b in drain(channel, queue)] == ["1", "2", "3"]
    connection.close()


def test_double_ack_is_406_and_ack_zero_multiple_acks_all(target, names):  # check 20
    connection, channel, queue = filled(target, names, 3)
    get(channel, queue)
    channel.basic_ack(1)
    channel.basic_ack(1)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.queue_declare(queue, passive=True)
    assert (info.value.reply_code, info.value.reply_text) == (406, "PRECONDITION_FAILED - unknown delivery tag 1")
    channel = connection.channel()
    get(channel, queue)
    get(channel, queue)
    channel.basic_ack(0, multiple=True)
    channel.close()
    assert connection.channel().queue_declare(queue, passive=True).method.message_count == 0
    connection.close()


def test_delivery_tags_are_per_channel(target, names):  # check 21
    connection, channel, queue = filled(target, names, 2)
    other = connection.channel()
    assert get(channel, queue)[0].delivery_tag == 1
    assert get(other, queue)[0].delivery_tag == 1
    connection.close()


@pytest.mark.parametrize("how", ["channel.close", "socket"])
def test_unacked_messages_come_back_when_their_channel_ends(target, names, how):  # check 22
    connection, channel, queue = filled(target, names, 3)
    if how == "channel.close":
        holder = connect(target)
        held = holder.channel()
        get(held, queue)
        get(held, queue)
        held.close()
    else:  # an abrupt end without Connection.Close, as Celery's clients do
        raw = RawClient(target)
        for _ in range(2):
            raw.method(1, pika.spec.Basic.Get(queue=queue))
            raw.expect(pika.spec.Basic.GetOk)
        raw.close()
    wait_for(lambda: channel.queue_declare(queue, passive=True).method.message_count == 3)
    got = [(b.decode(), m.redelivered) for m, _, b in drain(channel, queue)]
    assert got == [("1", True), ("2", True), ("3", False)]
    connection.close()


def consume_count(connection, channel, queue, count_wanted, settle=0.3):
    got = []
    channel.basic_consume(queue, lambda ch, m, p, b: got.append(m))
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        connection.process_data_events(0.05)
    return got


def test_global_prefetch_is_shared_by_the_channels_consumers(target, names):  # check 23
    connection, channel, queue = filled(target, names, 10)
    consumer_connection = connect(target)
    consumer = consumer_connection.channel()
    consumer.basic_qos(prefetch_count=3, global_qos=True)
    got = []
    for _ in range(2):
        consumer.basic_consume(queue, lambda ch, m, p, b: got.append(m))
    consumer_connection.process_data_events(0.5)
    assert len(got) == 3
    consumer.basic_qos(prefetch_count=5, global_qos=True)
    wait_for(lambda: consumer_connection.process_data_events(0.05) or len(got) == 5)
    consumer_connection.process_data_events(0.3)
    assert len(got) == 5
    consumer_connection.close()
    connection.close()


def test_per_consumer_prefetch_and_both_limits(target, names):  # check 24
    connection, channel, queue = filled(target, names, 10)
    consumer_connection = connect(target)
    consumer = consumer_connection.channel()
    consumer.basic_qos(prefetch_count=2, global_qos=False)
    got = consume_count(consumer_connection, consumer, queue, 2, settle=0.5)
    assert len(got) == 2
    consumer_connection.close()
    both_connection = connect(target)
    both = both_connection.channel()
    both.basic_qos(prefetch_count=4, global_qos=False)
    both.basic_qos(prefetch_count=2, global_qos=True)
    assert len(consume_count(both_connection, both, queue, 2, settle=0.5)) == 2
    both_connection.close()
    connection.close()


def test_no_ack_consumers_ignore_prefetch(target, names):
    connection, channel, queue = filled(target, names, 9)
    channel.basic_qos(prefetch_count=1)
    got = []
    channel.basic_consume(queue, lambda ch, m, p, b: got.append(b), auto_ack=True)
    wait_for(lambda: connection.process_data_events(0.05) or len(got) == 9)
    connection.close()


@pytest.mark.parametrize("call, text", [
    (lambda ch: ch.basic_qos(prefetch_size=1000), "NOT_IMPLEMENTED - prefetch_size!=0 (1000)"),
    (lambda ch: ch.basic_recover(requeue=False), "NOT_IMPLEMENTED - requeue=false"),
    (lambda ch: ch.flow(False), "NOT_IMPLEMENTED - active=false"),
])
def test_unimplemented_options_close_the_connection_with_540(target, call, text):  # check 25
    connection = connect(target)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        call(connection.channel())
    assert (info.value.reply_code, info.value.reply_text) == (540, text)


def test_recover_redelivers_with_new_tags(target, names):  # check 25
    connection, channel, queue = filled(target, names, 3)
    for _ in range(3):
        get(channel, queue)
    channel.basic_recover(requeue=True)
    got = [(m.delivery_tag, m.redelivered, b.decode()) for m, _, b in drain(channel, queue)]
    assert got == [(4, True, "1"), (5, True, "2"), (6, True, "3")]
    connection.close()


def test_confirms_mandatory_return_and_unroutable(target, names):  # check 14
    connection = connect(target)
    channel = connection.channel()
    channel.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish("", names("missing"), b"x", mandatory=True)
    channel.basic_publish("", names("missing"), b"x")  # not mandatory: confirmed
    queue = names()
    channel.queue_declare(queue, durable=True)
    for number in range(20):
        channel.basic_publish("", queue, str(number).encode(), pika.BasicProperties(delivery_mode=2),
                              mandatory=True)
    assert channel.queue_declare(queue, passive=True).method.message_count == 20
    connection.close()


def test_publish_immediate_is_540(target):  # check 25 (pika refuses to send immediate: raw frames)
    raw = RawClient(target)
    raw.method(1, pika.spec.Basic.Publish(exchange="", routing_key="nowhere", immediate=True))
    raw.send(pika.frame.Header(1, 1, pika.BasicProperties()).marshal() + pika.frame.Body(1, b"x").marshal())
    close = raw.close_reply()
    assert (close.reply_code, close.reply_text) == (540, "NOT_IMPLEMENTED - immediate=true")
    raw.close()
