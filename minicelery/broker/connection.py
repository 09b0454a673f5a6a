"""One client connection: the handshake, the channel table, heartbeats, errors and the write buffer.

States: ``header`` (waiting for ``AMQP 0-9-1``) → ``start`` (Start sent, waiting for StartOk) → ``tune``
→ ``open`` → ``running`` → ``closing`` (we sent Close: only Close/CloseOk count now) → ``closed``.
Bytes are received straight into the connection's own buffer (``asyncio.BufferedProtocol``; a plain
``Protocol`` gets a fresh 256 KiB ``bytes`` per read, which the kernel maps and unmaps each time). Every
frame of one read is handled, then the journal records it made are written and its replies leave in one
``transport.write``: a read costs no callback and no extra loop iteration (docs/broker.md, "The broker's
CPU per message").
Nothing raises out of :meth:`Connection.buffer_updated`: protocol errors become a Channel.Close or a
Connection.Close (RabbitMQ's codes and texts), anything unexpected a ``541 INTERNAL_ERROR`` for this
connection alone. RabbitMQ's counterpart is ``rabbit_reader``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import pika.spec as spec

from . import frames, handshake, methods
from .channel import Channel
from .frames import (
    CHANNEL_ERROR,
    COMMAND_INVALID,
    INTERNAL_ERROR,
    METHOD,
    NOT_ALLOWED,
    UNEXPECTED_FRAME,
    AMQPError,
    method_frame,
)

if TYPE_CHECKING:  # annotations only
    from .queue import Queue
    from .server import Broker

log = logging.getLogger("minicelery.broker")

CLOSE_OK_TIMEOUT = 2.0
WRITE_BUFFER_HIGH = 4 << 20
READ_BUFFER = 16 << 10  #: the read buffer's first size; it doubles while one frame does not fit
_CHANNEL_OPEN, _CHANNEL_CLOSE, _CHANNEL_CLOSE_OK = (spec.Channel.Open.INDEX, spec.Channel.Close.INDEX,
                                                   spec.Channel.CloseOk.INDEX)
_IGNORED = (spec.Connection.CloseOk, spec.Connection.Blocked, spec.Connection.Unblocked)


class Connection(asyncio.BufferedProtocol):
    """The server side of one AMQP connection."""

    def __init__(self, server: Broker) -> None:
        self.server, self.vhost, config = server, server.vhost, server.config
        self.buf = bytearray(READ_BUFFER)
        self.filled = 0  # bytes at the start of ``buf`` received and not yet handled (a partial frame)
        self.state = "header"
        self.channels: dict[int, Channel] = {}
        self.closing_channels: set[int] = set()
        self.frame_max, self.channel_max, self.heartbeat = config.frame_max, config.channel_max, 0
        self.client_properties: dict[str, Any] = {}
        self.exclusive_queues: list[Queue] = []
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.writing_paused = self.reading_paused = self.blocked = False
        self.created = self.last_recv = self.last_send = time.monotonic()
        self.last_publish = 0.0
        self._flush_scheduled = False

    # -- asyncio.BufferedProtocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A client connected: remember its address (or refuse it above the connection limit)."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self.server.connections) >= self.server.config.max_connections:
            log.warning("connection %s refused: %d connections already", self.peer,
                        len(self.server.connections))
            self.state = "closed"
            transport.close()
            return
        self.server.connections.add(self)
        # deliveries stop above 4 MiB queued for the socket (asyncio's default, 64 KiB, pauses a fast
        # consumer's dispatch all the time); prefetch alone does not bound a no_ack consumer
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the next read goes: the free end of ``buf``, which doubles when a partial frame fills it
        (so it never exceeds twice ``frame_max``)."""
        if self.filled == len(self.buf):
            self.buf = self.buf + bytes(len(self.buf))
        return memoryview(self.buf)[self.filled:]

    def buffer_updated(self, nbytes: int) -> None:
        """Handle every complete frame received, keep a partial one at the front, then write the replies in
        one go."""
        self.last_recv = time.monotonic()
        self.filled += nbytes
        if self.state == "closed":
            self.filled = 0
            return
        journal = self.vhost.journal
        if journal is not None:
            journal.start_read()
        self._flush_scheduled = True  # what this read queues leaves in the flush at its end
        try:
            self._process()
        except AMQPError as exc:
            self.close(exc)
        except Exception:  # noqa: BLE001 - one connection's bug must never stop the broker
            log.exception("connection %s: internal error", self.peer)
            self.close(AMQPError(INTERNAL_ERROR, "internal error", connection=True))
        if journal is not None:
            journal.end_read()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket closed, cleanly or not: requeue, cancel, delete exclusive queues."""
        self._release()
        self.state = "closed"
        self.server.connections.discard(self)

    def pause_writing(self) -> None:
        """The socket's buffer is full: stop delivering to it (prefetch does not bound no_ack consumers)."""
        self.writing_paused = True

    def resume_writing(self) -> None:
        """The buffer drained: deliver again."""
        self.writing_paused = False
        for channel in list(self.channels.values()):
            channel.redispatch()
        self.flush()

    # -- output ---------------------------------------------------------------------------------------
    def send(self, frame: bytes) -> None:
        """Queue one frame (or several, joined); it leaves with the others at the end of the read or of the
        loop turn."""
        self.out.append(frame)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write everything queued in one ``transport.write``."""
        self._flush_scheduled = False
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
            self.last_send = time.monotonic()
        self.out = []

    # -- input ----------------------------------------------------------------------------------------
    def _process(self) -> None:
        if self.state == "header":
            if self.filled < 8:
                return
            header = bytes(self.buf[:8])
            self._consume(8)
            if header != frames.PROTOCOL_HEADER:
                self._reject_header()
                return
            self.send(method_frame(0, handshake.start(self.server.config)))
            self.state = "start"
        error = None
        try:
            found, used = frames.split(memoryview(self.buf)[:self.filled], self.frame_max)
        except AMQPError as exc:
            found, used, error = exc.frames, exc.consumed, exc  # type: ignore[attr-defined]
        self._consume(used)
        for kind, number, payload in found:
            if self.state == "closed":
                return
            try:
                self._frame(kind, number, payload)
            except AMQPError as exc:
                if exc.connection or number == 0:
                    raise
                self._channel_error(number, exc)
        if error is not None:
            raise error

    def _consume(self, used: int) -> None:
        """Drop ``used`` bytes from the front of ``buf``; what follows (a partial frame) moves to the front.

        asyncio holds a view of ``buf`` during a read: it may be written to, not resized.
        """
        rest = self.filled - used
        if rest and used:
            self.buf[:rest] = self.buf[used:self.filled]
        self.filled = rest

    def _reject_header(self) -> None:
        assert self.transport is not None
        self.transport.write(frames.PROTOCOL_HEADER)
        self.state = "closed"
        self.transport.close()

    def _frame(self, kind: int, number: int, payload: bytes) -> None:
        if kind == frames.HEARTBEAT:
            if number != 0:
                raise AMQPError(UNEXPECTED_FRAME, "type 8, all octets = <<>>", connection=True)
            return
        if self.state == "closing":
            if number == 0 and kind == METHOD:
                self._closing_method(methods.decode(payload))
            return
        if number == 0:
            if kind != METHOD:
                raise AMQPError(UNEXPECTED_FRAME, f"type {kind}, on channel 0")
            self._connection_method(methods.decode(payload))
        elif self.state != "running":
            raise AMQPError(COMMAND_INVALID, f"channel {number} used before the connection was opened")
        elif number in self.closing_channels:
            if kind == METHOD and methods.method_ids(payload) in ((20, 40), (20, 41)):
                self.closing_channels.discard(number)
                if methods.method_ids(payload) == (20, 40):
                    self.send(method_frame(number, spec.Channel.CloseOk()))
        else:
            self._channel_frame(kind, number, payload)

    def _channel_frame(self, kind: int, number: int, payload: bytes) -> None:
        channel = self.channels.get(number)
        ids = methods.method_ids(payload) if kind == METHOD and (channel is None or channel.idle) else None
        index = ids[0] << 16 | ids[1] if ids else None
        if channel is None:
            if index != _CHANNEL_OPEN:
                raise AMQPError(CHANNEL_ERROR, "expected 'channel.open'", *(ids or (0, 0)))
            methods.decode(payload)
            if number > self.channel_max:
                raise AMQPError(NOT_ALLOWED, f"channel number {number} > channel_max {self.channel_max}",
                                20, 10)
            self.channels[number] = Channel(self, number)
            self.send(method_frame(number, spec.Channel.OpenOk()))
        elif index == _CHANNEL_OPEN:
            raise AMQPError(CHANNEL_ERROR, "second 'channel.open' seen", 20, 10)
        elif index == _CHANNEL_CLOSE:
            methods.decode(payload)
            del self.channels[number]
            channel.release()
            self.send(method_frame(number, spec.Channel.CloseOk()))
        elif index == _CHANNEL_CLOSE_OK:
            pass  # the answer to a Close we did not send: ignore, as RabbitMQ does
        elif ids and ids[0] == 10:
            raise AMQPError(COMMAND_INVALID, "unimplemented method", *ids, connection=True)
        else:
            channel.handle(kind, payload)

    def _channel_error(self, number: int, exc: AMQPError) -> None:
        channel = self.channels.pop(number, None)
        log.info("connection %s channel %d: %s", self.peer, number, exc.reply_text)
        self.send(method_frame(number, spec.Channel.Close(exc.code, exc.reply_text, exc.class_id,
                                                          exc.method_id)))
        self.closing_channels.add(number)
        if channel is not None:
            channel.closing = True
            channel.release()

    # -- connection methods ---------------------------------------------------------------------------
    def _connection_method(self, method: Any) -> None:
        state = self.state
        if state == "start" and isinstance(method, spec.Connection.StartOk):
            self.client_properties = method.client_properties
            if not handshake.login(self.server.config, method, self.peer, self.capability(
                    "authentication_failure_close")):
                self._end()  # a client that did not ask for a Close gets none (RabbitMQ)
                return
            self.state = "tune"
            config = self.server.config
            self.send(method_frame(0, spec.Connection.Tune(config.channel_max, config.frame_max,
                                                           config.heartbeat)))
        elif state == "tune" and isinstance(method, spec.Connection.TuneOk):
            handshake.check_tune(method, self.server.config)
            self.frame_max, self.channel_max = method.frame_max, method.channel_max
            self.heartbeat = method.heartbeat
            self.state = "open"
        elif state == "open" and isinstance(method, spec.Connection.Open):
            if method.virtual_host != "/":
                raise AMQPError(NOT_ALLOWED, f"vhost {method.virtual_host} not found", 10, 40)
            self.state = "running"
            self.send(method_frame(0, spec.Connection.OpenOk()))
        elif isinstance(method, spec.Connection.Close):
            self.send(method_frame(0, spec.Connection.CloseOk()))
            self._end()
        elif isinstance(method, _IGNORED):
            pass
        elif state == "running" and method.INDEX >> 16 != 10:
            raise AMQPError(CHANNEL_ERROR, "unexpected method in connection state running",
                            method.INDEX >> 16, method.INDEX & 0xFFFF)
        else:
            raise AMQPError(COMMAND_INVALID, f"unexpected {method.NAME} in connection state {state}",
                            method.INDEX >> 16, method.INDEX & 0xFFFF)

    def _closing_method(self, method: Any) -> None:
        if isinstance(method, spec.Connection.Close):
            self.send(method_frame(0, spec.Connection.CloseOk()))
        if isinstance(method, spec.Connection.Close | spec.Connection.CloseOk):
            self._end()

    def capability(self, name: str) -> bool:
        """Whether the client declared ``name`` in its StartOk capabilities."""
        capabilities = self.client_properties.get("capabilities")
        return isinstance(capabilities, dict) and capabilities.get(name) is True

    # -- ends -----------------------------------------------------------------------------------------
    def close(self, exc: AMQPError) -> None:
        """Close the connection with ``Connection.Close`` (an error, or the broker's shutdown)."""
        if self.state in ("closing", "closed"):
            return
        if self.state in ("header", "start") and exc.code == INTERNAL_ERROR:
            self._end()
            return
        log.info("connection %s: closing: %s", self.peer, exc.reply_text)
        self.send(method_frame(0, spec.Connection.Close(exc.code, exc.reply_text, exc.class_id,
                                                        exc.method_id)))
        self.flush()
        self.state = "closing"
        self._release()
        asyncio.get_running_loop().call_later(CLOSE_OK_TIMEOUT, self._end)

    def _end(self) -> None:
        self.flush()
        self._release()
        self.state = "closed"
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the socket without a Close (missed heartbeats, the handshake timeout)."""
        self._release()
        self.state = "closed"
        if self.transport is not None:
            self.transport.abort()

    def _release(self) -> None:
        channels, self.channels = self.channels, {}
        for channel in channels.values():
            channel.release()
        queues, self.exclusive_queues = self.exclusive_queues, []
        for queue in queues:
            self.vhost.delete_queue(queue)

    def tick(self, now: float) -> None:
        """Heartbeats and timeouts (the broker calls this every 100 ms)."""
        if self.state in ("header", "start", "tune", "open") and \
                now - self.created > self.server.config.handshake_timeout:
            self.abort()
        elif self.heartbeat and self.state == "running":
            if now - self.last_recv > self.heartbeat * 2.5:
                log.info("connection %s: missed heartbeats, timeout %ss", self.peer, self.heartbeat)
                self.abort()
            elif now - self.last_send >= self.heartbeat / 2:
                self.send(frames.HEARTBEAT_FRAME)

    def published(self) -> None:
        """A message arrived from this connection: under the resource alarm, stop reading from it.

        As RabbitMQ does, reading stops at a publish, not at the alarm: a blocked client can still close,
        and a consumer-only connection keeps acking (or memory would never free).
        """
        self.last_publish = time.monotonic()
        self.server.check_memory()
        if self.server.alarm:
            self.block(self.server.alarm)
            if not self.reading_paused and self.transport is not None:
                self.reading_paused = True
                self.transport.pause_reading()

    def block(self, reason: str) -> None:
        """The resource alarm: tell the client, if it declared ``connection.blocked``."""
        if self.blocked or self.state != "running":
            return
        self.blocked = True
        if self.capability("connection.blocked"):
            self.send(method_frame(0, spec.Connection.Blocked(reason)))

    def unblock(self) -> None:
        """The alarm cleared: ``Connection.Unblocked`` and read again."""
        if not self.blocked:
            return
        self.blocked = False
        if self.capability("connection.blocked"):
            self.send(method_frame(0, spec.Connection.Unblocked()))
        if self.reading_paused and self.transport is not None and not self.transport.is_closing():
            self.reading_paused = False
            self.transport.resume_reading()
