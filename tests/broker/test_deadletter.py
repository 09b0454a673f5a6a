"""Dead-lettering (Dramatiq's retries end there) and content headers that must survive byte for byte."""

from __future__ import annotations

import datetime
import struct

import pika
import pika.frame
import pika.spec as spec
from embedded_support import RawClient, connect, drain, wait_for

FLOAT_HEADERS = b"\x01fd" + struct.pack(">d", 1.5) + b"\x01sS\x00\x00\x00\x02hi"


def header_with_float(body_size: int, expiration: bytes | None = None) -> bytes:
    """A content header payload whose headers table holds a double (pika cannot encode one)."""
    flags = 0x2000 | 0x1000 | (0x0100 if expiration is not None else 0)
    props = struct.pack(">I", len(FLOAT_HEADERS)) + FLOAT_HEADERS + b"\x02"
    if expiration is not None:
        props += bytes((len(expiration),)) + expiration
    return struct.pack(">HHQH", 60, 0, body_size, flags) + props


def raw_publish(raw: RawClient, queue: str, header: bytes, body: bytes) -> None:
    raw.method(1, spec.Basic.Publish(exchange="", routing_key=queue))
    raw.frame(2, 1, header)
    raw.frame(3, 1, body)


def raw_get(raw: RawClient, queue: str) -> tuple[bytes, bytes]:
    raw.method(1, spec.Basic.Get(queue=queue, no_ack=True))
    raw.expect(spec.Basic.GetOk)
    _, _, header = raw.read_frame()
    _, _, body = raw.read_frame()
    return header, body


def test_content_headers_come_back_byte_for_byte(target, names):  # check 13's core: floats survive
    queue = names()
    connect(target).channel().queue_declare(queue)
    raw = RawClient(target)
    header = header_with_float(5)
    raw_publish(raw, queue, header, b"hello")
    assert raw_get(raw, queue) == (header, b"hello")
    raw.close()


def test_rejected_message_is_dead_lettered_with_x_death(target, names):  # check 31
    connection = connect(target)
    channel = connection.channel()
    queue, dead = names("work"), names("xq")
    channel.queue_declare(dead)
    channel.queue_declare(queue, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
    channel.basic_publish("", queue, b"job", pika.BasicProperties(delivery_mode=2, headers={"k": "v"}))
    for _ in range(2):  # rejected twice from the same queue: one x-death entry, count 2
        method = wait_for(lambda: channel.basic_get(queue)[0])
        channel.basic_nack(method.delivery_tag, requeue=False)
        method, properties, body = wait_for(lambda: (lambda got: got if got[0] else None)(channel.basic_get(dead)))
        channel.basic_ack(method.delivery_tag)
        if properties.headers["x-death"][0]["count"] == 1:
            channel.basic_publish("", queue, body, properties)
    deaths = properties.headers["x-death"]
    assert len(deaths) == 1
    death = deaths[0]
    assert (death["count"], death["reason"], death["queue"], death["exchange"], death["routing-keys"]) == (
        2, "rejected", queue, "", [queue])
    assert isinstance(death["time"], datetime.datetime)
    assert properties.headers["k"] == "v" and properties.delivery_mode == 2
    assert (properties.headers["x-first-death-queue"], properties.headers["x-first-death-reason"],
            properties.headers["x-first-death-exchange"]) == (queue, "rejected", "")
    connection.close()


def test_expired_message_is_dead_lettered_with_its_original_expiration(target, names):  # check 31
    connection = connect(target)
    channel = connection.channel()
    queue, dead = names("ttl"), names("xq")
    channel.queue_declare(dead)
    channel.queue_declare(queue, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
    channel.basic_publish("", queue, b"late", pika.BasicProperties(expiration="100"))
    method, properties, body = wait_for(lambda: (lambda got: got if got[0] else None)(channel.basic_get(dead)),
                                        timeout=5)
    assert body == b"late" and properties.expiration is None
    death = properties.headers["x-death"][0]
    assert (death["reason"], death["original-expiration"], death["queue"]) == ("expired", "100", queue)
    assert drain(channel, queue, timeout=0.05) == []
    connection.close()


def test_dead_lettering_keeps_a_double_header(target, names):
    connection = connect(target)
    channel = connection.channel()
    queue, dead = names("work"), names("xq")
    channel.queue_declare(dead)
    channel.queue_declare(queue, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
    raw = RawClient(target)
    raw_publish(raw, queue, header_with_float(3), b"abc")
    raw.method(1, spec.Basic.Get(queue=queue))
    tag = raw.expect(spec.Basic.GetOk).delivery_tag
    raw.read_frame(), raw.read_frame()
    raw.method(1, spec.Basic.Reject(delivery_tag=tag, requeue=False))
    wait_for(lambda: channel.queue_declare(dead, passive=True).method.message_count == 1)
    header, body = raw_get(raw, dead)
    assert body == b"abc" and b"\x01fd" + struct.pack(">d", 1.5) in header
    raw.close()
    connection.close()


def test_an_expiry_cycle_is_dropped_not_looped_for_ever(target, names):
    connection = connect(target)
    channel = connection.channel()
    first, second = names("ping"), names("pong")
    channel.queue_declare(first, arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                            "x-dead-letter-routing-key": second})
    channel.queue_declare(second, arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                             "x-dead-letter-routing-key": first})
    channel.basic_publish("", first, b"round and round")
    for queue in (first, second):
        wait_for(lambda queue=queue: channel.queue_declare(queue, passive=True).method.message_count == 0)
    other = names("alive")
    channel.queue_declare(other)  # the broker still answers
    connection.close()
