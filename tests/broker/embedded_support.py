"""Helpers for the embedded-broker tests: a broker in a thread or a process, a raw AMQP client, pika.

``ThreadBroker`` runs :mod:`minicelery.broker` on a free port in a thread of this process and records any
exception that escapes into its event loop (there must be none). ``BrokerProcess`` runs
``python -m minicelery broker`` as a child, for ``kill -9`` and restart. ``RawClient`` speaks frames over a
socket, for what pika will not send.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pika
import pika.frame
import pika.spec as spec

from minicelery.broker import Broker, Config

RABBITMQ = ("127.0.0.1", 5672)


class ThreadBroker:
    """An embedded broker on a free port, served by a loop in a daemon thread."""

    def __init__(self, data_dir: str | None = None, **options: Any) -> None:
        self.config = Config(port=0, data_dir=data_dir, **options)
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: self.errors.append(context))
        self.broker: Broker | None = None
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(10), "the broker did not start"
        assert self.broker is not None
        self.port = self.broker.port

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.broker = Broker(self.config)
            await self.broker.start()

        self.loop.run_until_complete(start())
        started.set()
        self.loop.run_forever()

    def call(self, function: Any, *args: Any) -> Any:
        """Run ``function(*args)`` in the broker's loop and return its result."""
        async def run() -> Any:
            return function(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        """Stop gracefully (as on SIGTERM) and end the thread."""
        assert self.broker is not None
        asyncio.run_coroutine_threadsafe(self.broker.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class BrokerProcess:
    """``python -m minicelery broker --port 0`` as a child process."""

    def __init__(self, data_dir: str | None, *extra: str, port: int = 0) -> None:
        command = [sys.executable, "-m", "minicelery", "broker", "--port", str(port), "-l", "INFO"]
        command += ["--data-dir", data_dir] if data_dir else ["--memory"]
        self.process = subprocess.Popen(command + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening" not in line:
            _, err = self.process.communicate(timeout=10)
            raise AssertionError(f"the broker did not start (exit {self.process.returncode}): {err}")
        self.port = int(line.rsplit(":", 1)[1])

    def kill(self) -> None:
        """``kill -9``: no flush, no goodbye."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> tuple[int, str]:
        """SIGTERM; returns the exit code and stderr."""
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=20)
        return self.process.returncode, err


def connect(port: int, **options: Any) -> pika.BlockingConnection:
    """A pika BlockingConnection to 127.0.0.1:``port``."""
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, **options))


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def drain(channel: Any, queue: str, timeout: float = 0.3) -> list[tuple[Any, Any, bytes]]:
    """Every message ``basic_get`` returns from ``queue`` until it is empty (acked)."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            if time.monotonic() > deadline:
                return got
            time.sleep(0.02)
            continue
        got.append((method, properties, body))


class RawClient:
    """A socket speaking AMQP frames by hand, after a normal handshake (or before it)."""

    def __init__(self, port: int, handshake: bool = True, capabilities: dict[str, bool] | None = None,
                 user: str = "guest", password: str = "guest", frame_max: int = 131072) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        if handshake:
            self.handshake(capabilities, user, password, frame_max)

    def handshake(self, capabilities: dict[str, bool] | None = None, user: str = "guest",
                  password: str = "guest", frame_max: int = 131072, open_channel: bool = True) -> None:
        """Header, StartOk (PLAIN), TuneOk, Open and, by default, channel 1."""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        start = self.expect(spec.Connection.Start)
        self.start_properties = start.server_properties
        caps = {"authentication_failure_close": True, "consumer_cancel_notify": True}
        self.method(0, spec.Connection.StartOk({"capabilities": capabilities if capabilities is not None
                                                else caps}, "PLAIN", f"\0{user}\0{password}", "en_US"))
        tune = self.expect(spec.Connection.Tune)
        self.method(0, spec.Connection.TuneOk(tune.channel_max, frame_max, 0))
        self.method(0, spec.Connection.Open("/"))
        self.expect(spec.Connection.OpenOk)
        if open_channel:
            self.method(1, spec.Channel.Open())
            self.expect(spec.Channel.OpenOk)

    def send(self, data: bytes) -> None:
        """Raw bytes onto the socket."""
        self.sock.sendall(data)

    def method(self, channel: int, method: Any) -> None:
        """One method frame, encoded by pika."""
        self.send(pika.frame.Method(channel, method).marshal())

    def frame(self, kind: int, channel: int, payload: bytes, end: int = 0xCE) -> None:
        """A frame built by hand (for bad ones)."""
        self.send(struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes((end,)))

    def read_frame(self, timeout: float = 5.0) -> tuple[int, int, bytes] | None:
        """The next frame, or None when the server closed the socket."""
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 7:
                kind, channel, size = struct.unpack_from(">BHI", self.buf)
                if len(self.buf) >= 8 + size:
                    payload = self.buf[7:7 + size]
                    self.buf = self.buf[8 + size:]
                    return kind, channel, payload
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.buf += data

    def methods(self, timeout: float = 5.0) -> Iterator[tuple[int, Any]]:
        """(channel, decoded method) for each method frame until the socket closes."""
        while True:
            found = self.read_frame(timeout)
            if found is None:
                return
            kind, channel, payload = found
            if kind == 1:
                yield channel, spec.methods[struct.unpack_from(">I", payload)[0]]().decode(payload, 4)

    def expect(self, cls: type, timeout: float = 5.0) -> Any:
        """Read until a method of ``cls`` arrives (skipping heartbeats and other frames)."""
        for _, method in self.methods(timeout):
            if isinstance(method, cls):
                return method
        raise AssertionError(f"the socket closed before {cls.__name__}")

    def close_reply(self, timeout: float = 5.0) -> Any:
        """The first Connection.Close or Channel.Close the server sends (None if the socket just closes)."""
        for _, method in self.methods(timeout):
            if isinstance(method, spec.Connection.Close | spec.Channel.Close):
                return method
        return None

    def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the socket within ``timeout`` (everything before is discarded)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        """Close the socket (no AMQP goodbye)."""
        self.sock.close()


def data_files(directory: str) -> list[str]:
    """The journal segments in a data directory, oldest first."""
    segments = os.path.join(directory, "journal")
    return sorted(os.path.join(segments, name) for name in os.listdir(segments))
