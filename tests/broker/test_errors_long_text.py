"""A refusal whose text passes AMQP's 255-byte short string (a long queue name in it) still closes only
the channel, with the text cut, and the connection serves on."""

from __future__ import annotations

import pika
import pytest

from minicelery.broker.frames import AMQPError


def test_a_reply_text_is_cut_to_a_short_string():
    error = AMQPError(405, "cannot obtain exclusive access to locked queue '" + "q" * 300 + "'")
    assert len(error.reply_text.encode()) == 255
    assert error.reply_text.startswith("RESOURCE_LOCKED - cannot obtain exclusive access")


def test_a_long_refusal_closes_the_channel_not_the_connection(target, names):
    owner = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", target))
    other = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", target))
    name = names("locked-" + "x" * 180)
    try:
        owner.channel().queue_declare(name, exclusive=True)
        channel = other.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            channel.queue_declare(name, exclusive=True)
        assert info.value.reply_code == 405
        assert other.is_open and other.channel().queue_declare("", exclusive=True).method.queue
    finally:
        other.close()
        owner.close()
