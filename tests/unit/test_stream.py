"""The worker connection's socket (``amqp/stream.py``) on a real socket pair and a real :class:`Loop`.

One end of a ``socketpair`` is the transport's, the other plays the broker. The protocol is a recorder
of what pika's protocol would be told; every wait is a bounded run of loop steps.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicelery.amqp.loop import Loop
from minicelery.amqp.stream import BatchingTransport, LoopServices

STEP = 0.05
DEADLINE = 10.0


class Recorder:
    """What pika's ``AbstractStreamProtocol`` hears, in order."""

    def __init__(self, keep_open_on_eof: bool = False) -> None:
        self.keep_open_on_eof = keep_open_on_eof
        self.calls: list[tuple[str, Any]] = []
        self.received = bytearray()

    def connection_made(self, transport: Any) -> None:
        self.calls.append(("made", transport))

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> bool:
        self.calls.append(("eof", None))
        return self.keep_open_on_eof

    def connection_lost(self, error: BaseException | None) -> None:
        self.calls.append(("lost", error))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def loop() -> Iterator[Loop]:
    loop = Loop()
    yield loop
    loop.close()


def linked(loop: Loop, protocol: Recorder) -> tuple[BatchingTransport, socket.socket]:
    """A transport for ``protocol`` on one end of a socket pair (made the way pika asks for it)."""
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    broker.settimeout(DEADLINE)
    outcome: list[Any] = []
    LoopServices(loop).create_streaming_connection(lambda: protocol, ours, outcome.append)
    assert outcome == []  # pika's contract: completion comes from the loop, never from inside the call
    run_until(loop, lambda: bool(outcome))
    transport, linked_protocol = outcome[0]
    assert linked_protocol is protocol and protocol.calls == [("made", transport)]
    return transport, broker


def run_until(loop: Loop, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        loop.run_once(STEP)


def test_a_steps_writes_leave_in_order_when_the_loop_is_about_to_wait(loop: Loop) -> None:
    transport, broker = linked(loop, Recorder())
    for frame in (b"method;", b"header;", b"body;"):
        transport.write(frame)
    broker.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing was sent while the step was writing
        broker.recv(100)
    assert transport.get_write_buffer_size() == len(b"method;header;body;")
    loop.run_once(0)
    broker.settimeout(DEADLINE)
    assert broker.recv(100) == b"method;header;body;"
    assert transport.get_write_buffer_size() == 0


def test_what_the_broker_sends_reaches_the_protocol(loop: Loop) -> None:
    protocol = Recorder()
    _, broker = linked(loop, protocol)
    broker.sendall(b"x" * 200_000)
    run_until(loop, lambda: len(protocol.received) == 200_000)
    assert bytes(protocol.received) == b"x" * 200_000


def test_a_full_kernel_buffer_waits_for_room_and_loses_nothing(loop: Loop) -> None:
    protocol = Recorder()
    transport, broker = linked(loop, protocol)
    chunks = [bytes([n % 251]) * 65_536 for n in range(64)]  # 4 MiB: more than both socket buffers hold
    for chunk in chunks:
        transport.write(chunk)
    loop.run_once(0)
    assert transport.get_write_buffer_size() > 0  # the kernel took part; the rest waits for room
    got = bytearray()
    broker.setblocking(False)
    deadline = time.monotonic() + DEADLINE
    while len(got) < len(chunks) * 65_536:
        assert time.monotonic() < deadline
        try:
            got += broker.recv(1 << 20)
        except BlockingIOError:
            loop.run_once(STEP)
    assert bytes(got) == b"".join(chunks)
    run_until(loop, lambda: transport.get_write_buffer_size() == 0)


def test_the_brokers_eof_is_told_to_the_protocol_then_the_connection_is_lost(loop: Loop) -> None:
    protocol = Recorder()
    transport, broker = linked(loop, protocol)
    broker.close()
    run_until(loop, lambda: "lost" in protocol.names())
    assert protocol.calls[1:] == [("eof", None), ("lost", None)]
    transport.write(b"after the end")  # ignored, as pika's transport ignores it
    assert transport.get_write_buffer_size() == 0


def test_a_protocol_that_keeps_the_connection_open_on_eof_stops_reading_only(loop: Loop) -> None:
    protocol = Recorder(keep_open_on_eof=True)
    transport, broker = linked(loop, protocol)
    broker.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: "eof" in protocol.names())
    transport.write(b"still writing")
    loop.run_once(0)
    assert broker.recv(100) == b"still writing"
    assert "lost" not in protocol.names()
    transport.abort()
    run_until(loop, lambda: "lost" in protocol.names())


def test_abort_drops_unsent_data_and_reports_the_loss_from_the_loop(loop: Loop) -> None:
    protocol = Recorder()
    transport, broker = linked(loop, protocol)
    transport.write(b"never sent")
    transport.abort()
    assert "lost" not in protocol.names()  # never from inside abort()
    run_until(loop, lambda: "lost" in protocol.names())
    assert protocol.calls[-1] == ("lost", None)
    assert broker.recv(100) == b""  # the socket is closed, and the write never left


def test_a_protocol_that_fails_on_data_aborts_with_its_error(loop: Loop) -> None:
    class Failing(Recorder):
        def data_received(self, data: bytes) -> None:
            raise ValueError("bad frame")

    protocol = Failing()
    _, broker = linked(loop, protocol)
    broker.sendall(b"garbage")
    run_until(loop, lambda: "lost" in protocol.names())
    error = protocol.calls[-1][1]
    assert isinstance(error, ValueError) and str(error) == "bad frame"


def test_a_cancelled_linkup_closes_the_socket_and_never_completes(loop: Loop) -> None:
    ours, broker = socket.socketpair()
    outcome: list[Any] = []
    linkup = LoopServices(loop).create_streaming_connection(Recorder, ours, outcome.append)
    assert linkup.cancel() is True
    assert linkup.cancel() is False
    for _ in range(3):
        loop.run_once(0)
    assert outcome == [] and ours.fileno() == -1
    broker.close()


def test_a_failing_protocol_factory_is_reported_to_on_done(loop: Loop) -> None:
    ours, broker = socket.socketpair()
    outcome: list[Any] = []

    def factory() -> Recorder:
        raise RuntimeError("no protocol")

    LoopServices(loop).create_streaming_connection(factory, ours, outcome.append)
    run_until(loop, lambda: bool(outcome))
    assert isinstance(outcome[0], RuntimeError) and ours.fileno() == -1
    broker.close()


@given(chunks=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=12), data=st.data())
def test_after_a_partial_send_the_pending_bytes_are_exactly_the_unsent_rest(chunks: list[bytes],
                                                                           data: st.DataObject) -> None:
    loop = Loop()
    ours, broker = socket.socketpair()
    try:
        transport = BatchingTransport(ours, Recorder(), LoopServices(loop))
        for chunk in chunks:
            transport.write(chunk)
        whole = b"".join(chunks)
        sent = data.draw(st.integers(0, len(whole)), label="sent")
        transport._forget(sent)
        rest = b"".join(bytes(chunk) for chunk in transport._pending)
        assert rest == whole[sent:]
        assert transport.get_write_buffer_size() == len(whole) - sent
    finally:
        loop.close()
        ours.close()
        broker.close()


def test_a_tls_stream_is_left_to_pikas_own_transport(loop: Loop) -> None:
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    outcome: list[Any] = []
    LoopServices(loop).create_streaming_connection(Recorder, ours, outcome.append,
                                                   ssl_context=ssl.create_default_context(),
                                                   server_hostname="localhost")
    broker.sendall(b"not a TLS server\r\n\r\n" * 8)  # pika's TLS handshake fails on this
    broker.close()
    run_until(loop, lambda: bool(outcome))
    assert isinstance(outcome[0], BaseException)  # a plaintext linkup would have given (transport, protocol)
