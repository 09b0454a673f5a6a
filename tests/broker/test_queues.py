"""Acceptance checks on declarations, routing, TTL and queue lifetimes — each against both brokers.

RabbitMQ is the oracle: the same steps must give the same outcome on the embedded broker.
"""

from __future__ import annotations

import time

import pika
import pika.exceptions
import pytest
from embedded_support import connect, drain, wait_for


def closed_with(channel, call, *args, **kwargs):
    """The (code, text) a channel-level error closed ``channel`` with."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        call(*args, **kwargs)
    return info.value.reply_code, info.value.reply_text


def test_redeclare_with_any_integer_encoding_is_equivalent_and_a_change_is_406(target, names):  # check 9
    queue = names("reply")
    connection = connect(target)
    channel = connection.channel()
    channel.queue_declare(queue, durable=True, auto_delete=True, arguments={"x-expires": 86400000})
    channel.queue_declare(queue, durable=True, auto_delete=True, arguments={"x-expires": 86400000, "x-custom": 1})
    code, text = closed_with(channel, channel.queue_declare, queue, durable=True, auto_delete=True,
                             arguments={"x-expires": 70000})
    assert code == 406
    assert text == (f"PRECONDITION_FAILED - inequivalent arg 'x-expires' for queue '{queue}' in vhost '/': "
                    "received '70000' but current is '86400000'")
    channel = connection.channel()  # the connection stays open
    code, text = closed_with(channel, channel.queue_declare, queue, durable=False, auto_delete=True,
                             arguments={"x-expires": 86400000})
    assert (code, text) == (406, f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{queue}' in "
                                 "vhost '/': received 'false' but current is 'true'")
    channel = connection.channel()
    code, text = closed_with(channel, channel.queue_declare, queue, durable=True, auto_delete=True)
    assert text.endswith("received none but current is the value '86400000' of type 'signedint'")
    connection.close()


@pytest.mark.parametrize("arguments, detail", [
    ({"x-expires": 0}, "{value_zero,0}"),
    ({"x-message-ttl": -1}, "{value_negative,-1}"),
    ({"x-max-priority": 300}, "{max_value_exceeded,300}"),
])
def test_invalid_queue_arguments_are_406(target, names, arguments, detail):
    queue = names()
    channel = connect(target).channel()
    code, text = closed_with(channel, channel.queue_declare, queue, arguments=arguments)
    assert code == 406
    assert text.startswith(f"PRECONDITION_FAILED - invalid arg '{next(iter(arguments))}' for queue '{queue}'")
    assert text.endswith(detail)


def test_passive_declare_of_a_missing_queue_is_404(target, names):  # check 10
    queue = names()
    channel = connect(target).channel()
    assert closed_with(channel, channel.queue_declare, queue, passive=True) == (
        404, f"NOT_FOUND - no queue '{queue}' in vhost '/'")


def test_exclusive_queue_is_locked_for_other_connections(target, names):  # check 11
    queue = names("excl")
    owner = connect(target)
    owner.channel().queue_declare(queue, exclusive=True)
    other = connect(target)
    attempts = [
        lambda ch: ch.queue_declare(queue), lambda ch: ch.queue_declare(queue, passive=True),
        lambda ch: ch.basic_consume(queue, lambda *a: None), lambda ch: ch.basic_get(queue),
        lambda ch: ch.queue_purge(queue), lambda ch: ch.queue_delete(queue),
    ]
    for attempt in attempts:
        channel = other.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            attempt(channel)
        assert info.value.reply_code == 405
        assert info.value.reply_text.startswith(
            f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{queue}' in vhost '/'.")
    other.channel().basic_publish("", queue, b"from B")
    owner_channel = owner.channel()
    wait_for(lambda: owner_channel.queue_declare(queue, passive=True).method.message_count == 1)
    owner.close()
    channel = other.channel()
    wait_for(lambda: _missing(other, queue))
    other.close()
    del channel


def _missing(connection, queue):
    try:
        connection.channel().queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        return exc.reply_code == 404
    return False


def test_generated_names_reserved_prefixes_and_unknown_exchange_types(target, names):  # check 12
    connection = connect(target)
    channel = connection.channel()
    generated = channel.queue_declare("", exclusive=True).method.queue
    assert generated.startswith("amq.gen-")
    assert closed_with(channel, channel.queue_declare, "amq.x") == (
        403, "ACCESS_REFUSED - queue name 'amq.x' contains reserved prefix 'amq.*'")
    channel = connection.channel()
    assert closed_with(channel, channel.exchange_declare, "amq.x", "direct") == (
        403, "ACCESS_REFUSED - exchange name 'amq.x' contains reserved prefix 'amq.*'")
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        channel.exchange_declare(names("ex"), "nosuchtype")
    assert (info.value.reply_code, info.value.reply_text) == (
        503, "COMMAND_INVALID - unknown exchange type 'nosuchtype'")


def test_publish_to_a_missing_exchange_closes_the_channel_only(target, names):  # check 15
    connection = connect(target)
    channel = connection.channel()
    exchange = names("ex")
    channel.basic_publish(exchange, "rk", b"x")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.queue_declare(names())  # the close arrives before this answer
    assert (info.value.reply_code, info.value.reply_text) == (404, f"NOT_FOUND - no exchange '{exchange}' in vhost '/'")
    assert connection.channel().queue_declare(names()).method.message_count == 0  # still usable
    connection.close()


def test_topic_routing_table(target, names):  # check 17
    connection = connect(target)
    channel = connection.channel()
    exchange = names("topic")
    channel.exchange_declare(exchange, "topic")
    keys = ["worker.online", "worker.heartbeat", "worker", "worker.a.b", "task.heartbeat", ""]
    patterns = {"hash": ["worker.#"], "star": ["*.heartbeat"], "all": ["#"], "twice": ["worker.#", "#"]}
    queues = {}
    for label, bound in patterns.items():
        queues[label] = names(label)
        channel.queue_declare(queues[label])
        for pattern in bound:
            channel.queue_bind(queues[label], exchange, pattern)
    for key in keys:
        channel.basic_publish(exchange, key, key.encode())
    got = {label: sorted(body.decode() for _, _, body in drain(channel, queue)) for label, queue in queues.items()}
    assert got == {"hash": sorted(["worker.online", "worker.heartbeat", "worker", "worker.a.b"]),
                   "star": sorted(["worker.heartbeat", "task.heartbeat"]), "all": sorted(keys),
                   "twice": sorted(keys)}
    connection.close()


def test_message_ttl_and_expiration(target, names):  # check 27
    connection = connect(target)
    channel = connection.channel()
    queue = names("ttl")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"zero", pika.BasicProperties(expiration="0"))
    assert drain(channel, queue, timeout=0.1) == []
    got = []
    channel.basic_consume(queue, lambda ch, m, p, b: got.append(b), auto_ack=True)
    channel.basic_publish("", queue, b"ready", pika.BasicProperties(expiration="0"))
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        connection.process_data_events(0.05)
    assert got == [b"ready"]
    channel.basic_publish("", queue, b"bad", pika.BasicProperties(expiration="abc"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.queue_declare(queue, passive=True)
    assert (info.value.reply_code, info.value.reply_text) == (
        406, "PRECONDITION_FAILED - invalid expiration 'abc': no_integer")
    channel = connection.channel()
    short = names("short")
    channel.queue_declare(short, arguments={"x-message-ttl": 100})
    channel.basic_publish("", short, b"x", pika.BasicProperties(expiration="10000"))
    wait_for(lambda: channel.queue_declare(short, passive=True).method.message_count == 0, timeout=3)
    connection.close()


def test_x_expires_deletes_an_idle_queue_and_use_renews_it(target, names):  # check 28
    connection = connect(target)
    channel = connection.channel()
    renewed, idle = names("renewed"), names("idle")
    channel.queue_declare(renewed, arguments={"x-expires": 1000})
    channel.queue_declare(idle, arguments={"x-expires": 1000})
    for _ in range(4):  # 2.4 s, renewed every 0.6 s
        connection.sleep(0.6)
        channel.queue_declare(renewed, passive=True)
    assert _missing(connection, idle)
    assert not _missing(connection, renewed)
    connection.close()


def test_auto_delete_goes_with_the_last_consumer(target, names):  # check 29
    connection = connect(target)
    channel = connection.channel()
    never, used = names("never"), names("used")
    channel.queue_declare(never, auto_delete=True)
    channel.queue_declare(used, auto_delete=True)
    first = channel.basic_consume(used, lambda *a: None)
    second = channel.basic_consume(used, lambda *a: None)
    channel.basic_cancel(first)
    assert not _missing(connection, used)
    channel.basic_cancel(second)
    wait_for(lambda: _missing(connection, used))
    assert not _missing(connection, never)
    connection.close()


def test_deleting_a_queue_cancels_its_consumer(target, names):  # check 30
    queue = names()
    consumer_connection = connect(target)
    channel = consumer_connection.channel()
    channel.queue_declare(queue)
    cancelled = []
    channel.add_on_cancel_callback(lambda frame: cancelled.append(frame.method))
    channel.basic_consume(queue, lambda *a: None)
    other = connect(target)
    other.channel().queue_delete(queue)
    other.close()
    deadline = time.monotonic() + 5
    while not cancelled and time.monotonic() < deadline:
        consumer_connection.process_data_events(0.05)
    assert len(cancelled) == 1 and isinstance(cancelled[0], pika.spec.Basic.Cancel)
    consumer_connection.close()


def test_purge_and_conditional_delete(target, names):  # check 32
    connection = connect(target)
    channel = connection.channel()
    queue = names()
    channel.queue_declare(queue)
    for body in (b"1", b"2"):
        channel.basic_publish("", queue, body)
    wait_for(lambda: channel.queue_declare(queue, passive=True).method.message_count == 2)
    method, _, _ = channel.basic_get(queue)
    assert channel.queue_purge(queue).method.message_count == 1
    channel.basic_consume(queue, lambda *a: None)
    assert closed_with(channel, channel.queue_delete, queue, if_unused=True) == (
        406, f"PRECONDITION_FAILED - queue '{queue}' in vhost '/' in use")
    channel = connection.channel()
    channel.basic_publish("", queue, b"3")
    wait_for(lambda: channel.queue_declare(queue, passive=True).method.message_count >= 1)
    assert closed_with(channel, channel.queue_delete, queue, if_empty=True) == (
        406, f"PRECONDITION_FAILED - queue '{queue}' in vhost '/' not empty")
    connection.close()


def test_missing_things_and_the_default_exchange(target, names):
    connection = connect(target)
    channel = connection.channel()
    assert channel.queue_delete(names()).method.message_count == 0
    channel.exchange_delete(names("ex"))
    queue = names()
    channel.queue_declare(queue)
    assert closed_with(channel, channel.queue_bind, queue, "") == (
        403, "ACCESS_REFUSED - operation not permitted on the default exchange")
    channel = connection.channel()
    exchange = names("ex")
    channel.exchange_declare(exchange, "direct")
    assert closed_with(channel, channel.exchange_declare, exchange, "fanout") == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{exchange}' in vhost '/': "
             "received 'fanout' but current is 'direct'")
    channel = connection.channel()
    channel.queue_unbind(queue, exchange, "never-bound")
    connection.close()


def test_exclusive_consumers(target, names):
    connection = connect(target)
    channel = connection.channel()
    queue = names()
    channel.queue_declare(queue)
    channel.basic_consume(queue, lambda *a: None)
    assert closed_with(channel, channel.basic_consume, queue, lambda *a: None, exclusive=True) == (
        403, f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use")
    connection.close()


def test_priority_queue_serves_the_highest_priority_first(target, names):
    connection = connect(target)
    channel = connection.channel()
    queue = names("prio")
    channel.queue_declare(queue, arguments={"x-max-priority": 5})
    for body, priority in ((b"low", 1), (b"none", None), (b"high", 5), (b"over", 9), (b"mid", 3)):
        channel.basic_publish("", queue, body, pika.BasicProperties(priority=priority))
    wait_for(lambda: channel.queue_declare(queue, passive=True).method.message_count == 5)
    assert [b for _, _, b in drain(channel, queue)] == [b"high", b"over", b"mid", b"low", b"none"]
    connection.close()


def test_headers_exchange_matches_all_or_any(target, names):
    connection = connect(target)
    channel = connection.channel()
    exchange, every, some = names("hx"), names("all"), names("any")
    channel.exchange_declare(exchange, "headers")
    for queue, mode in ((every, "all"), (some, "any")):
        channel.queue_declare(queue)
        channel.queue_bind(queue, exchange, arguments={"x-match": mode, "a": 1, "b": "x"})
    for label, headers in (("ab", {"a": 1, "b": "x"}), ("a", {"a": 1}), ("a-str", {"a": "1"}), ("none", {})):
        channel.basic_publish(exchange, "", label.encode(), pika.BasicProperties(headers=headers))
    assert sorted(b for _, _, b in drain(channel, every)) == [b"ab"]
    assert sorted(b for _, _, b in drain(channel, some)) == [b"a", b"ab"]
    connection.close()


def test_an_auto_delete_exchange_goes_with_its_last_binding(target, names):
    connection = connect(target)
    channel = connection.channel()
    exchange, queue = names("adx"), names()
    channel.exchange_declare(exchange, "direct", auto_delete=True)
    channel.queue_declare(queue)
    channel.queue_bind(queue, exchange, "k")
    channel.exchange_declare(exchange, "direct", passive=True)
    channel.queue_unbind(queue, exchange, "k")
    assert closed_with(channel, channel.exchange_declare, exchange, "direct", passive=True) == (
        404, f"NOT_FOUND - no exchange '{exchange}' in vhost '/'")
    connection.close()


def test_x_expires_as_int64_is_equivalent_to_int32(target, names):  # check 9: clients disagree on encodings
    import struct

    import pika.spec as spec
    from embedded_support import RawClient

    queue = names("reply")
    channel = connect(target).channel()
    channel.queue_declare(queue, durable=True, auto_delete=True, arguments={"x-expires": 86400000})  # 'I'
    raw = RawClient(target)
    table = b"\x09x-expiresl" + struct.pack(">q", 86400000)
    arguments = struct.pack(">HH", 50, 10) + b"\x00\x00" + bytes((len(queue),)) + queue.encode() + b"\x0a" \
        + struct.pack(">I", len(table)) + table  # durable + auto_delete
    raw.frame(1, 1, arguments)
    assert raw.expect(spec.Queue.DeclareOk).queue == queue
    raw.close()


def test_max_length_drops_the_head_or_refuses_the_publish(target, names):
    connection = connect(target)
    channel = connection.channel()
    channel.confirm_delivery()
    head, refusing, dead = names("head"), names("full"), names("dead")
    channel.queue_declare(head, arguments={"x-max-length": 2})
    channel.queue_declare(dead)
    channel.queue_declare(refusing, arguments={"x-max-length": 1, "x-overflow": "reject-publish-dlx",
                                               "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
    for body in (b"1", b"2", b"3"):
        channel.basic_publish("", head, body)
    assert [b for _, _, b in drain(channel, head)] == [b"2", b"3"]
    channel.basic_publish("", refusing, b"fits")
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", refusing, b"refused")
    method, properties, body = wait_for(lambda: (lambda got: got if got[0] else None)(channel.basic_get(dead)))
    assert body == b"refused" and properties.headers["x-death"][0]["reason"] == "maxlen"
    assert [b for _, _, b in drain(channel, refusing)] == [b"fits"]
    connection.close()
