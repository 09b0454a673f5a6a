"""The embedded broker's own figures: its memory idle and with queued messages, and how long it takes to
recover its journal after a restart (issue 12).

A broker is started as ``python -m minicelery broker`` on a free port with a fresh data directory; plain
pika publishes ``count`` persistent messages of 1 KiB into a durable queue (publisher confirms on, so
every message is in the journal before it counts; ``--no-confirms`` fills a large journal faster, and
the graceful stop still writes everything); the broker's RSS is read idle and then with the
messages queued; then it is stopped (SIGTERM, which flushes) and started again on the same directory,
and the recovery time runs from the start until a passive declare shows every message back. The
journal's size on disk is reported with it. Run: ``python bench/embedded.py --count 100000``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import emit, memory_of, stop_process  # noqa: E402

BODY = b"x" * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(port: int, data_dir: str) -> subprocess.Popen[Any]:
    return subprocess.Popen([sys.executable, "-m", "minicelery", "broker", "--port", str(port),
                             "--data-dir", data_dir, "-l", "WARNING"], start_new_session=True)


def _connect(port: int, timeout: float = 600.0) -> Any:
    """A pika connection, retried until the broker answers (it may be replaying its journal)."""
    import pika

    deadline = time.monotonic() + timeout
    while True:
        try:
            return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, socket_timeout=5))
        except pika.exceptions.AMQPConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _disk_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(folder) for name in names)


def run(count: int, confirms: bool = True) -> dict[str, Any]:
    import pika

    folder = tempfile.mkdtemp(prefix="bench-embedded-")
    port = _free_port()
    broker = _start(port, folder)
    try:
        connection = _connect(port)
        time.sleep(0.5)
        idle = memory_of(broker.pid)["main_rss_kb"]
        channel = connection.channel()
        channel.queue_declare("bench.embedded", durable=True)
        if confirms:  # without: faster to fill, and the graceful stop below still writes everything
            channel.confirm_delivery()
        properties = pika.BasicProperties(delivery_mode=2)
        started = time.monotonic()
        for _ in range(count):
            channel.basic_publish("", "bench.embedded", BODY, properties)
        publish_s = time.monotonic() - started
        queued = memory_of(broker.pid)["main_rss_kb"]
        connection.close()
        stop_process(broker, timeout=120)
        journal = _disk_bytes(folder)
        started = time.monotonic()
        broker = _start(port, folder)
        connection = _connect(port)
        back = connection.channel().queue_declare("bench.embedded", durable=True, passive=True).method
        recovery_s = time.monotonic() - started
        connection.close()
        assert back.message_count == count, f"{back.message_count} of {count} messages came back"
    finally:
        stop_process(broker, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
    return {"count": count, "idle_rss_kb": idle, "queued_rss_kb": queued, "publish_s": publish_s,
            "journal_bytes": journal, "recovery_s": recovery_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000, help="1 KiB messages to queue")
    parser.add_argument("--no-confirms", action="store_true", help="publish without publisher confirms")
    args = parser.parse_args()
    figures = run(args.count, confirms=not args.no_confirms)
    print(f"embedded broker: idle {figures['idle_rss_kb'] / 1024:.0f} MB RSS; "
          f"{figures['count']:,} x 1 KiB queued {figures['queued_rss_kb'] / 1024:.0f} MB RSS "
          f"(published in {figures['publish_s']:.1f} s); journal "
          f"{figures['journal_bytes'] / 2**20:.0f} MiB recovered in {figures['recovery_s']:.2f} s",
          file=sys.stderr)
    emit(figures)


if __name__ == "__main__":
    main()
