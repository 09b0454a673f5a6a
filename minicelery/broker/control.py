"""The control socket: what ``rabbitmqctl`` does for RabbitMQ, for tests and operators of this broker.

A Unix socket (``DATA/control.sock``, mode ``0600``) that takes one JSON object per line,
``{"command": "list_queues", "args": []}``, and answers one line, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. ``python -m minicelery broker ctl COMMAND [ARGS]`` is its client.
Commands: ``list_queues``, ``list_connections``, ``list_channels``, ``close_connection ID REASON``
(``320 CONNECTION_FORCED - REASON``, as ``rabbitmqctl close_connection``) and ``stop`` (a graceful stop).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import arguments
from .frames import CONNECTION_FORCED, AMQPError

if TYPE_CHECKING:  # annotations only
    from .server import Broker

log = logging.getLogger("minicelery.broker")


def list_queues(broker: Broker) -> list[dict[str, Any]]:
    """Every queue with its flags, arguments (``[name, type, value]``), consumers and message counts."""
    unacked: dict[int, int] = {}
    for connection in broker.connections:
        for channel in connection.channels.values():
            for queue, _entry, _consumer in channel.unacked.values():
                unacked[id(queue)] = unacked.get(id(queue), 0) + 1
    return [{"name": q.name, "durable": q.durable, "auto_delete": q.auto_delete,
             "exclusive": q.exclusive_owner is not None,
             "arguments": [[k, arguments.type_name(v), v] for k, v in q.arguments.items()],
             "consumers": len(q.consumers), "messages_ready": q.ready,
             "messages_unacknowledged": unacked.get(id(q), 0)} for q in broker.vhost.queues.values()]


def list_connections(broker: Broker) -> list[dict[str, Any]]:
    """Every connection: an id for ``close_connection``, the peer, its channels, the negotiated heartbeat
    (``timeout``, as rabbitmqctl names it), its client's product."""
    return [{"id": id(c), "peer": c.peer, "peer_port": int(c.peer.rsplit(":", 1)[1]) if ":" in c.peer else 0,
             "channels": len(c.channels), "state": c.state, "timeout": c.heartbeat,
             "product": str(c.client_properties.get("product", ""))} for c in broker.connections]


def list_channels(broker: Broker) -> list[dict[str, Any]]:
    """Every channel with its prefetch limits, consumers and unacked deliveries."""
    return [{"connection": id(c), "number": ch.number, "prefetch_count": ch.consumer_prefetch,
             "global_prefetch_count": ch.prefetch, "consumers": len(ch.consumers),
             "messages_unacknowledged": len(ch.unacked)}
            for c in broker.connections for ch in c.channels.values()]


def close_connection(broker: Broker, connection_id: str, reason: str = "closed by the control socket") -> int:
    """Close connections by id (``Connection.Close 320``); returns how many were closed."""
    closed = 0
    for connection in list(broker.connections):
        if str(id(connection)) == str(connection_id):
            connection.close(AMQPError(CONNECTION_FORCED, reason, connection=True))
            connection.flush()
            closed += 1
    return closed


COMMANDS: dict[str, Callable[..., Any]] = {
    "list_queues": list_queues, "list_connections": list_connections, "list_channels": list_channels,
    "close_connection": close_connection,
}


async def start(broker: Broker, path: str, stop: Callable[[], None]) -> asyncio.AbstractServer:
    """Listen on the control socket at ``path`` (a stale socket file is replaced)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(answer(broker, line, stop), default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    if os.path.exists(path):
        os.unlink(path)
    server = await asyncio.start_unix_server(handle, path)
    os.chmod(path, 0o600)
    return server


def answer(broker: Broker, line: bytes, stop: Callable[[], None]) -> dict[str, Any]:
    """One request line's answer (errors are answers too: the socket never raises into the loop)."""
    try:
        request = json.loads(line)
        command, args = request["command"], [str(a) for a in request.get("args", [])]
        if command == "stop":
            stop()
            return {"ok": True, "result": "stopping"}
        if command not in COMMANDS:
            return {"ok": False, "error": f"unknown command {command!r} (choose from "
                                          f"{', '.join(sorted(COMMANDS) + ['stop'])})"}
        return {"ok": True, "result": COMMANDS[command](broker, *args)}
    except (ValueError, KeyError, TypeError) as exc:
        return {"ok": False, "error": f"bad request: {exc}"}
