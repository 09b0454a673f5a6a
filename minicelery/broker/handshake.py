"""The connection handshake: what the server announces, who may log in, which tuning is acceptable.

``Connection.Start`` advertises exactly the capabilities implemented (clients act on them: pika's
``confirm_delivery`` needs ``publisher_confirms`` and ``basic.nack``; py-amqp declares only the ones
advertised). Logins are PLAIN or AMQPLAIN against the one configured account, compared in constant time;
``guest`` may log in only from a loopback address, as with RabbitMQ's ``loopback_users``.
"""

from __future__ import annotations

import hmac
import logging
import struct
from typing import TYPE_CHECKING

import pika.spec as spec

from . import tables
from .frames import ACCESS_REFUSED, NOT_ALLOWED, AMQPError

if TYPE_CHECKING:  # annotations only
    from .server import Config

log = logging.getLogger("minicelery.broker")

CAPABILITIES = ("publisher_confirms", "basic.nack", "consumer_cancel_notify", "connection.blocked",
                "authentication_failure_close", "per_consumer_qos")


def start(config: Config) -> spec.Connection.Start:
    """The server's ``Connection.Start``."""
    properties = {"product": "minicelery", "version": config.version, "platform": config.platform,
                  "information": "minicelery's embedded AMQP 0-9-1 broker",
                  "copyright": "minicelery contributors",
                  "capabilities": {name: True for name in CAPABILITIES}}
    return spec.Connection.Start(0, 9, properties, "PLAIN AMQPLAIN", "en_US")


def login(config: Config, method: spec.Connection.StartOk, peer: str, wants_close: bool) -> bool:
    """Whether the StartOk's credentials are right.

    A refused login raises ``403 ACCESS_REFUSED`` for a client that declared
    ``authentication_failure_close`` (RabbitMQ's text); otherwise it returns False and the socket closes.
    """
    user, password = credentials(method.mechanism, method.response)
    host = peer.rsplit(":", 1)[0]
    local = host.startswith("127.") or host in ("::1", "localhost")
    if (user is not None and hmac.compare_digest(user.encode(), config.user.encode())
            and hmac.compare_digest((password or "").encode(), config.password.encode())
            and (user != "guest" or local)):
        return True
    log.warning("connection %s: login refused for user %r (mechanism %s)", peer, user, method.mechanism)
    if user is not None and wants_close:
        raise AMQPError(ACCESS_REFUSED, f"Login was refused using authentication mechanism "
                                        f"{method.mechanism}. For details see the broker logfile.")
    return False


def credentials(mechanism: str, response: bytes) -> tuple[str | None, str | None]:
    """``(user, password)`` from a PLAIN or AMQPLAIN response; ``(None, None)`` for anything else."""
    try:
        if mechanism == "PLAIN":
            _, user, password = response.split(b"\x00", 2)
            return user.decode(), password.decode()
        if mechanism == "AMQPLAIN":  # a field table without its length prefix
            table = tables.decode_table(struct.pack(">I", len(response)) + response, 0)[0]
            return str(table.get("LOGIN")), str(table.get("PASSWORD"))
    except (ValueError, AMQPError, UnicodeDecodeError):
        pass
    return None, None


def check_tune(method: spec.Connection.TuneOk, config: Config) -> None:
    """Refuse a TuneOk outside what was offered (``530 NOT_ALLOWED``; RabbitMQ drops the socket)."""
    if not 4096 <= method.frame_max <= config.frame_max:
        raise AMQPError(NOT_ALLOWED, f"negotiated frame_max = {method.frame_max} is outside the allowed "
                                     f"range [4096, {config.frame_max}]", 10, 31)
    if not 0 < method.channel_max <= config.channel_max:
        raise AMQPError(NOT_ALLOWED, f"negotiated channel_max = {method.channel_max} is outside the "
                                     f"allowed range [1, {config.channel_max}]", 10, 31)
