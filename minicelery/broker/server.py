"""The broker process: configuration, the listening socket, the periodic tick, the memory alarm, shutdown.

One asyncio loop in one thread serves every connection; :func:`run` is what ``python -m minicelery broker``
calls. A graceful stop (SIGTERM, SIGINT) stops accepting, closes every connection with
``320 CONNECTION_FORCED - broker shutdown`` (their unacked messages are requeued, exclusive and auto-delete
queues go, as when RabbitMQ stops), then flushes and syncs the journal and releases its lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import signal
import time
from dataclasses import dataclass

from . import control
from .connection import Connection
from .frames import CONNECTION_FORCED, AMQPError
from .journal import Journal
from .vhost import VirtualHost

log = logging.getLogger("minicelery.broker")

TICK = 0.1


def default_max_memory() -> int:
    """A quarter of the machine's RAM (RabbitMQ's default high watermark is 40 %; this broker keeps all
    ready messages in memory, so it stops publishers earlier)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 1 << 30


@dataclass
class Config:
    """Everything the broker can be told (the CLI's options)."""

    host: str = "127.0.0.1"
    port: int = 5672
    data_dir: str | None = None        # None: memory only
    user: str = "guest"
    password: str = "guest"
    frame_max: int = 131072
    channel_max: int = 2047
    heartbeat: int = 60
    max_message_size: int = 16 << 20
    max_memory: int = 0                # 0: default_max_memory()
    sync_interval: float = 0.2
    max_connections: int = 1000
    repair: bool = False               # cut a damaged journal segment at the damage instead of refusing
    handshake_timeout: float = 10.0    # a connection not open by then is dropped (RabbitMQ: 10 s)
    segment_size: int = 16 << 20
    version: str = "0"
    platform: str = f"Python {platform.python_version()}"


class Broker:
    """The running broker: its virtual host, journal, connections and listening socket."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.max_memory = config.max_memory or default_max_memory()
        self.journal = None if not config.data_dir else Journal(
            config.data_dir, sync_interval=config.sync_interval, segment_size=config.segment_size,
            repair=config.repair)
        self.vhost = VirtualHost(self.journal)
        if self.journal is not None:
            self.journal.on_failure = self.check_memory
        self.connections: set[Connection] = set()
        self.alarm = ""  # the reason of the resource alarm, when raised
        self.port = config.port
        self._server: asyncio.base_events.Server | None = None
        self._control: asyncio.AbstractServer | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self.stop_requested: asyncio.Event | None = None  # set by the control socket's ``stop``

    async def start(self) -> None:
        """Recover the journal (if any), then listen. A port already in use raises ``OSError``."""
        if self.journal is not None:
            self.journal.open(self.vhost)
        else:
            log.warning("memory-only broker: nothing survives a restart (give --data-dir for durability)")
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: Connection(self), self.config.host,
                                                    self.config.port, reuse_address=True)
        except OSError:
            if self.journal is not None:
                self.journal.close()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        self.stop_requested = asyncio.Event()
        if self.config.data_dir:
            self._control = await control.start(self, self.control_path, self.stop_requested.set)
        self._ticker = loop.call_later(TICK, self._tick)
        log.info("broker listening on %s:%d", self.config.host, self.port)

    @property
    def control_path(self) -> str:
        """Where the control socket listens (in the data directory)."""
        return os.path.join(self.config.data_dir or ".", "control.sock")

    async def stop(self) -> None:
        """Graceful shutdown: close the connections (requeueing), flush and sync the journal."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            self._server.close()
        if self._control is not None:
            self._control.close()
            if os.path.exists(self.control_path):
                os.unlink(self.control_path)
        for connection in list(self.connections):
            connection.close(AMQPError(CONNECTION_FORCED, "broker shutdown", connection=True))
            connection.flush()
        await asyncio.sleep(0)
        for connection in list(self.connections):
            connection.abort()
        if self.journal is not None:
            self.journal.close()
        log.info("broker stopped")

    def _tick(self) -> None:
        now = time.monotonic()
        try:
            for connection in list(self.connections):
                connection.tick(now)
            self.vhost.tick()
            if self.alarm:
                self.check_memory()
        except Exception:  # noqa: BLE001 - the tick must keep running
            log.exception("broker tick failed")
        self._ticker = asyncio.get_running_loop().call_later(TICK, self._tick)

    def check_memory(self) -> None:
        """Raise the resource alarm above the memory limit or after a journal write failed (blocking
        publishers); clear it below 80 % of the limit (a failed journal keeps it raised)."""
        used = self.vhost.memory
        disk = self.journal is not None and self.journal.failed
        if not self.alarm and (used > self.max_memory or disk):
            self.alarm = "low on disk" if disk else "low on memory"
            log.warning("resource alarm (%s): %d bytes of messages held (limit %d): blocking publishers",
                        self.alarm, used, self.max_memory)
            recent = time.monotonic() - 60
            for connection in self.connections:
                if connection.last_publish >= recent:
                    connection.block(self.alarm)
        elif self.alarm and used < self.max_memory * 0.8 and not disk:
            self.alarm = ""
            log.warning("resource alarm cleared: unblocking publishers")
            for connection in self.connections:
                connection.unblock()


async def serve(config: Config, ready: asyncio.Future[int] | None = None) -> None:
    """Run a broker until SIGTERM or SIGINT; ``ready`` gets the port once it listens."""
    broker = Broker(config)
    await broker.start()
    stop = broker.stop_requested
    assert stop is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready.set_result(broker.port)
    print(f"minicelery broker listening on {config.host}:{broker.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await broker.stop()


def run(config: Config) -> None:
    """Run the broker in this thread until a signal stops it (``python -m minicelery broker``)."""
    asyncio.run(serve(config))
