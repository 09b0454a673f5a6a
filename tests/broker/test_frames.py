"""Malformed input after a good handshake (spec table of framing errors) — the same Close as RabbitMQ where
RabbitMQ answers at all; where it crashes its reader or accepts nonsense, the embedded broker's deliberate
answer (docs/broker.md, deviations). Meanwhile another connection keeps publishing and consuming."""

from __future__ import annotations

import struct

import pika
import pika.frame
import pika.spec as spec
import pytest
from embedded_support import RawClient, connect

HEADER = pika.frame.Header(1, 3, pika.BasicProperties()).marshal()


def publish_method() -> bytes:
    return pika.frame.Method(1, spec.Basic.Publish(exchange="", routing_key="nowhere")).marshal()


def frame(kind: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes((end,))


SAME_AS_RABBITMQ = {  # input -> (code, start of the reply text)
    "bad frame end": (frame(1, 1, struct.pack(">HH", 60, 40) + b"\x00" * 5, end=0), 501, "FRAME_ERROR"),
    "frame type 9": (frame(9, 1, b"abc"), 501, "FRAME_ERROR - type 9"),
    "oversized frame": (frame(3, 1, b"x" * 200000), 501, "FRAME_ERROR"),
    "truncated arguments": (frame(1, 1, struct.pack(">HH", 50, 10) + b"\x00"), 501, "FRAME_ERROR"),
    "never-opened channel": (pika.frame.Method(7, spec.Basic.Qos()).marshal(), 504,
                             "CHANNEL_ERROR - expected 'channel.open'"),
    "second channel.open": (pika.frame.Method(1, spec.Channel.Open()).marshal(), 504,
                            "CHANNEL_ERROR - second 'channel.open' seen"),
    "queue.declare on channel 0": (pika.frame.Method(0, spec.Queue.Declare(queue="x")).marshal(), 504,
                                   "CHANNEL_ERROR - unexpected method in connection state running"),
    "connection.open on channel 1": (pika.frame.Method(1, spec.Connection.Open()).marshal(), 503,
                                     "COMMAND_INVALID"),
    "body without publish": (frame(3, 1, b"abc"), 505, "UNEXPECTED_FRAME - expected method frame"),
    "method instead of header": (publish_method() + pika.frame.Method(1, spec.Basic.Qos()).marshal(), 505,
                                 "UNEXPECTED_FRAME - expected content header for class 60"),
    "header of class 50": (publish_method() + frame(2, 1, struct.pack(">HHQH", 50, 0, 3, 0)), 505,
                           "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50"),
    "method inside a body": (publish_method() + HEADER + pika.frame.Method(1, spec.Basic.Qos()).marshal(), 505,
                             "UNEXPECTED_FRAME - expected content body"),
    "heartbeat on channel 1": (frame(8, 1, b""), 505, "UNEXPECTED_FRAME - type 8"),
}

DEVIATIONS = {  # RabbitMQ crashes its reader (TCP reset), accepts these, or (body too long) did not answer in 5 s
    "body longer than announced": (publish_method() + HEADER + frame(3, 1, b"abcdef"), 505,
                                   "UNEXPECTED_FRAME - expected content body"),
    "unknown method": (frame(1, 1, struct.pack(">HH", 99, 1)), 540, "NOT_IMPLEMENTED - unknown method 99/1"),
    "unknown field type": (frame(1, 1, struct.pack(">HH", 50, 10) + b"\x00\x00\x01x\x00\x00\x00\x00\x03\x01kZ"),
                           502, "SYNTAX_ERROR"),
    "channel above channel_max": (pika.frame.Method(2048, spec.Channel.Open()).marshal(), 530,
                                  "NOT_ALLOWED - channel number 2048 > channel_max 2047"),
    "200 MiB message": (publish_method() + frame(2, 1, struct.pack(">HHQH", 60, 0, 200 << 20, 0)), 406,
                        "PRECONDITION_FAILED - message size"),
}


def check(port: int, data: bytes, code: int, text: str) -> None:
    raw = RawClient(port)
    raw.send(data)
    close = raw.close_reply()
    assert close is not None, "the server closed the socket without a Close"
    assert close.reply_code == code, close.reply_text
    assert close.reply_text.startswith(text), close.reply_text
    raw.close()


@pytest.mark.parametrize("case", sorted(SAME_AS_RABBITMQ))
def test_framing_errors_get_rabbitmqs_close(target, case):  # check 37
    check(target, *SAME_AS_RABBITMQ[case])


@pytest.mark.parametrize("case", sorted(DEVIATIONS))
def test_framing_errors_where_rabbitmq_crashes_get_a_proper_close(embedded, case):  # checks 37, 38
    survivor = connect(embedded.port)
    channel = survivor.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    check(embedded.port, *DEVIATIONS[case])
    channel.basic_publish("", queue, b"still here")
    method, _, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"still here"
    survivor.close()


def test_a_09_protocol_header_gets_the_091_header(embedded):  # spec: write the 0-9-1 header and close
    raw = RawClient(embedded.port, handshake=False)
    raw.send(b"AMQP\x01\x01\x00\x09")
    raw.sock.settimeout(5)
    assert raw.sock.recv(100) == b"AMQP\x00\x00\x09\x01"
    assert raw.closed()
