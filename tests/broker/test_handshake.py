"""Acceptance checks on connections: negotiation, authentication, tuning, heartbeats, big bodies."""

from __future__ import annotations

import struct
import time

import pika
import pika.exceptions
import pika.frame
import pika.spec as spec
import pytest
from embedded_support import RawClient, connect, wait_for

CAPABILITIES = {"publisher_confirms", "basic.nack", "consumer_cancel_notify", "connection.blocked",
                "authentication_failure_close", "per_consumer_qos"}


def test_start_and_tune_announce_what_is_implemented(embedded):  # check 1 (RabbitMQ says 'RabbitMQ')
    raw = RawClient(embedded.port, handshake=False)
    raw.send(b"AMQP\x00\x00\x09\x01")
    start = raw.expect(spec.Connection.Start)
    assert start.server_properties["product"] == "minicelery"
    capabilities = start.server_properties["capabilities"]
    assert set(capabilities) == CAPABILITIES and all(capabilities.values())
    assert (start.mechanisms, start.locales) == (b"PLAIN AMQPLAIN", b"en_US")
    raw.method(0, spec.Connection.StartOk({}, "PLAIN", "\0guest\0guest", "en_US"))
    tune = raw.expect(spec.Connection.Tune)
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)
    raw.close()
    connection = connect(embedded.port)
    assert connection.channel().is_open
    connection.close()


def test_wrong_password(target):  # check 3
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        connect(target, credentials=pika.PlainCredentials("guest", "wrong"))
    assert "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" in str(info.value)
    raw = RawClient(target, handshake=False)
    raw.send(b"AMQP\x00\x00\x09\x01")
    raw.expect(spec.Connection.Start)
    raw.method(0, spec.Connection.StartOk({}, "PLAIN", "\0guest\0wrong", "en_US"))
    assert raw.read_frame() is None  # no capability declared: the socket just closes
    raw.close()


def test_amqplain_login(target):
    raw = RawClient(target, handshake=False)
    raw.send(b"AMQP\x00\x00\x09\x01")
    raw.expect(spec.Connection.Start)
    table = b"\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS\x00\x00\x00\x05guest"
    start_ok = spec.Connection.StartOk({}, "AMQPLAIN", "", "en_US")
    start_ok.response = table  # pika's encoder writes bytes as they are
    raw.method(0, start_ok)
    assert raw.expect(spec.Connection.Tune).channel_max == 2047
    raw.close()


def test_unknown_vhost(target):  # check 4
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        connect(target, virtual_host="other")
    assert "(530) 'NOT_ALLOWED - vhost other not found'" in str(info.value)


def test_http_gets_the_protocol_header_and_a_close(target):  # check 5
    raw = RawClient(target, handshake=False)
    raw.send(b"GET / HTTP/1.1\r\n\r\n")
    raw.sock.settimeout(5)
    received = b""
    while True:
        try:
            data = raw.sock.recv(100)
        except ConnectionResetError:  # RabbitMQ resets rather than closes: the same end for a client
            break
        if not data:
            break
        received += data
    assert received == b"AMQP\x00\x00\x09\x01"


def test_frame_max_outside_the_offer_gets_no_open_ok(target):  # check 6 (both values at once: RabbitMQ is slow)
    clients = []
    for frame_max in (1048576, 1024):
        raw = RawClient(target, handshake=False)
        raw.send(b"AMQP\x00\x00\x09\x01")
        raw.expect(spec.Connection.Start)
        raw.method(0, spec.Connection.StartOk({}, "PLAIN", "\0guest\0guest", "en_US"))
        raw.expect(spec.Connection.Tune)
        raw.method(0, spec.Connection.TuneOk(2047, frame_max, 0))
        raw.method(0, spec.Connection.Open("/"))
        clients.append(raw)
    for raw in clients:
        assert not any(isinstance(m, spec.Connection.OpenOk) for _, m in raw.methods())
        raw.close()


def test_heartbeats_and_the_silent_client(target):  # check 7
    raw = RawClient(target, handshake=False)
    raw.send(b"AMQP\x00\x00\x09\x01")
    raw.expect(spec.Connection.Start)
    raw.method(0, spec.Connection.StartOk({}, "PLAIN", "\0guest\0guest", "en_US"))
    raw.expect(spec.Connection.Tune)
    raw.method(0, spec.Connection.TuneOk(2047, 131072, 1))  # 1 s: the check scaled down from 2 s
    raw.method(0, spec.Connection.Open("/"))
    raw.expect(spec.Connection.OpenOk)
    last_sent = time.monotonic()
    beats = []
    while True:
        found = raw.read_frame(timeout=10)
        if found is None:
            break
        if found[0] == 8:
            beats.append(time.monotonic() - last_sent)
    silent_for = time.monotonic() - last_sent
    assert len(beats) >= 3 and all(b2 - b1 < 0.9 for b1, b2 in zip(beats, beats[1:], strict=False))
    assert 1.9 <= silent_for <= 3.6  # two missed heartbeats (RabbitMQ: about 3 x the timeout)


def test_bodies_are_split_at_frame_max(target, names):  # check 8
    queue = names()
    connection = connect(target, frame_max=8192)
    channel = connection.channel()
    channel.queue_declare(queue)
    body = bytes(range(256)) * 78 + b"t" * 32  # 20,000 bytes
    channel.basic_publish("", queue, body)
    wait_for(lambda: channel.queue_declare(queue, passive=True).method.message_count == 1)
    raw = RawClient(target, handshake=False)
    raw.handshake(frame_max=8192)
    raw.method(1, spec.Basic.Get(queue=queue, no_ack=True))
    raw.expect(spec.Basic.GetOk)
    kind, _, header = raw.read_frame()
    assert kind == 2 and struct.unpack_from(">Q", header, 4)[0] == len(body)
    sizes, received = [], b""
    while len(received) < len(body):
        kind, _, payload = raw.read_frame()
        assert kind == 3
        sizes.append(len(payload))
        received += payload
    assert received == body and sizes == [8184, 8184, 3632]
    raw.close()
    connection.close()


def test_duplicate_consumer_tag_closes_the_connection(target, names):
    queue = names()
    connect(target).channel().queue_declare(queue)
    raw = RawClient(target)
    for _ in range(2):
        raw.method(1, spec.Basic.Consume(queue=queue, consumer_tag="dup"))
    close = raw.close_reply()
    assert (close.reply_code, close.reply_text) == (530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'")
    raw.close()


@pytest.mark.parametrize("sent", [b"AMQP", b"AMQP\x00\x00\x09\x01"])
def test_a_connection_that_never_finishes_its_handshake_is_dropped(sent):
    from embedded_support import ThreadBroker

    broker = ThreadBroker(None, handshake_timeout=0.5)
    raw = RawClient(broker.port, handshake=False)
    raw.send(sent)
    started = time.monotonic()
    assert raw.closed(timeout=5)
    assert 0.4 < time.monotonic() - started < 3
    raw.close()
    broker.stop()
    assert broker.errors == []
