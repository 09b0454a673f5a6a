"""The worker connection's socket: a plaintext stream that sends one loop step's frames together.

pika hands its transport every AMQP frame on its own (a published message is three: method, header,
body), and the transport pika ships sends each with a ``send()`` of its own once the selector reports
the socket writable, turning that watch on and off (two ``epoll_ctl``) around every burst. A worker
writes a dozen frames a step (acknowledgements, results, events): this transport keeps them until the
loop is about to wait again and sends them all with one ``sendmsg()``, watching for writability only
when the kernel's buffer is full. What it is worth is in ``docs/performance.md`` ("One write a step").

It plugs in where pika invites it: ``SelectConnection(custom_ioloop=...)`` takes any
``AbstractIOServices``, and :class:`LoopServices` is pika's own adapter over our
:class:`~minicelery.amqp.loop.Loop` with ``create_streaming_connection`` answered by this transport
for plaintext connections (TLS keeps pika's). The contract it keeps is pika's
``nbio_interface.AbstractStreamTransport``: ``connection_made`` before the completion callback, and
``connection_lost`` called from the loop, never from inside ``abort()``.
"""

from __future__ import annotations

import collections
import itertools
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from pika.adapters.utils.nbio_interface import AbstractIOReference, AbstractStreamTransport
from pika.adapters.utils.selector_ioloop_adapter import SelectorIOServicesAdapter

from .loop import Loop

__all__ = ["LoopServices", "BatchingTransport"]

logger = logging.getLogger("minicelery.amqp")

#: Bytes asked of one ``recv()`` (more would make each read a fresh ``mmap`` of its own).
READ_SIZE = 64 * 1024
#: Buffers given to one ``sendmsg()`` (Linux refuses more than ``IOV_MAX``, 1,024).
MAX_BUFFERS = 512


class LoopServices(SelectorIOServicesAdapter):
    """pika's I/O services over a minicelery :class:`Loop`, with :class:`BatchingTransport` for
    plaintext streams."""

    def __init__(self, loop: Loop) -> None:
        super().__init__(loop)
        self.loop = loop

    def create_streaming_connection(self, protocol_factory: Callable[[], Any], sock: socket.socket,
                                    on_done: Callable[[Any], None], ssl_context: ssl.SSLContext | None = None,
                                    server_hostname: str | None = None) -> AbstractIOReference:
        """Link pika's protocol to a :class:`BatchingTransport` on the loop's next step (TLS: pika's)."""
        if ssl_context is not None:
            return super().create_streaming_connection(protocol_factory, sock, on_done, ssl_context,
                                                       server_hostname)
        linkup = _Linkup(self, protocol_factory, sock, on_done)
        self.loop.add_callback(linkup.run)
        return linkup


class _Linkup(AbstractIOReference):
    """A pending :meth:`LoopServices.create_streaming_connection`; ``cancel()`` closes the socket."""

    def __init__(self, services: LoopServices, protocol_factory: Callable[[], Any], sock: socket.socket,
                 on_done: Callable[[Any], None]) -> None:
        self.services, self.protocol_factory = services, protocol_factory
        self.sock, self.on_done = sock, on_done
        self.pending = True

    def cancel(self) -> bool:
        if not self.pending:
            return False
        self.pending = False
        self.sock.close()
        return True

    def run(self) -> None:
        if not self.pending:
            return
        self.pending = False
        try:
            protocol = self.protocol_factory()
            transport = BatchingTransport(self.sock, protocol, self.services)
            protocol.connection_made(transport)
        except Exception as exc:  # noqa: BLE001 - pika's contract: the error goes to on_done
            self.sock.close()
            self.on_done(exc)
            return
        self.on_done((transport, protocol))


class BatchingTransport(AbstractStreamTransport):
    """A connected non-blocking socket that reads into pika's protocol and writes in batches."""

    def __init__(self, sock: socket.socket, protocol: Any, services: LoopServices) -> None:
        self._sock, self._protocol, self._services = sock, protocol, services
        self._fd = sock.fileno()
        self._pending: collections.deque[bytes | memoryview] = collections.deque()
        self._pending_size = 0
        self._active = True
        self._watching_writable = False
        services.set_reader(self._fd, self._on_readable)

    # -- pika's AbstractStreamTransport ----------------------------------------------------------------

    def get_protocol(self) -> Any:
        return self._protocol

    def get_write_buffer_size(self) -> int:
        return self._pending_size

    def write(self, data: bytes) -> None:
        """Keep ``data`` for the send before the loop's next wait (nothing once aborted)."""
        if not self._active:
            return
        if not self._pending:
            self._services.loop.before_wait(self._send)
        self._pending.append(data)
        self._pending_size += len(data)

    def abort(self) -> None:
        """Close at once, dropping unsent data; pika hears ``connection_lost(None)`` from the loop."""
        self._stop(None)

    # -- the loop's side -------------------------------------------------------------------------------

    def _send(self) -> None:
        """Send what the step wrote, as far as the kernel takes it; watch for room if it took less."""
        while self._active and self._pending:
            try:
                sent = self._sock.sendmsg(itertools.islice(self._pending, MAX_BUFFERS))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                return self._stop(exc)
            self._forget(sent)
        if self._active and bool(self._pending) != self._watching_writable:
            self._watching_writable = bool(self._pending)
            if self._watching_writable:
                self._services.set_writer(self._fd, self._send)
            else:
                self._services.remove_writer(self._fd)

    def _forget(self, sent: int) -> None:
        """Drop the first ``sent`` bytes of the pending buffers."""
        self._pending_size -= sent
        while sent:
            first = self._pending[0]
            if sent < len(first):
                self._pending[0] = memoryview(first)[sent:]
                return
            self._pending.popleft()
            sent -= len(first)

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            return self._stop(exc)
        if not data:  # the broker closed its end: pika's protocol decides (it closes)
            try:
                keep_open = self._protocol.eof_received()
            except Exception as exc:  # noqa: BLE001 - pika's contract: a failing callback aborts
                return self._stop(exc)
            if keep_open:
                self._services.remove_reader(self._fd)
            else:
                self._stop(None)
            return
        try:
            self._protocol.data_received(data)
        except Exception as exc:  # noqa: BLE001 - as pika's own transport: log, then abort
            logger.exception("pika failed to handle the data it received")
            self._stop(exc)

    def _stop(self, error: BaseException | None) -> None:
        """Stop watching the socket and tell the protocol from the loop, then close the socket."""
        if not self._active:
            return
        self._active = False
        self._pending.clear()
        self._pending_size = 0
        self._services.remove_reader(self._fd)
        if self._watching_writable:
            self._services.remove_writer(self._fd)
        self._services.add_callback_threadsafe(lambda: self._lost(error))

    def _lost(self, error: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(error)
        finally:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
