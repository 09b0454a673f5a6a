"""The test broker and what the integration tests ask of it, on either broker.

``MINICELERY_TEST_BROKER`` picks the broker: ``rabbitmq`` (the default: the real RabbitMQ on 127.0.0.1:5672)
or ``embedded`` (one ``python -m minicelery broker`` for the session, on a free port, durable, in a temporary
data directory: conftest's ``test_broker`` fixture starts and stops it). ``MINICELERY_TEST_BROKER_URL`` holds
its URL; for the embedded broker it is chosen here, at import, and put into the environment, so the test
apps (``ctasks``, ``wtasks``, ``btasks``) and every worker subprocess find the same broker.

The admin seam (what ``rabbitmqctl`` does for RabbitMQ, the control socket for the embedded broker):
:func:`list_queues`, :func:`list_connections`, :func:`list_channels`, :func:`close_connection`,
:func:`stop_broker`, :func:`start_broker`. Plain pika helpers: a connection that waits out a broker
restart, queue depths, and deleting what a test declared.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
from collections.abc import Iterable
from typing import Any

import pika

from minicelery.embedded import BrokerChild
from minicelery.urls import mask_broker_url, parse_broker_url

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
BROKERS = ("rabbitmq", "embedded")
TARGET = os.environ.get("MINICELERY_TEST_BROKER", "rabbitmq")
if TARGET not in BROKERS:
    raise ValueError(f"MINICELERY_TEST_BROKER={TARGET!r}: choose one of {', '.join(BROKERS)}")
EMBEDDED = TARGET == "embedded"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if EMBEDDED and not os.environ.get("MINICELERY_TEST_BROKER_URL"):
    os.environ["MINICELERY_TEST_BROKER_URL"] = f"amqp://guest:guest@127.0.0.1:{_free_port()}//"
BROKER_URL = os.environ.get("MINICELERY_TEST_BROKER_URL") or RABBITMQ_URL
_ADDRESS = parse_broker_url(BROKER_URL)
HOST, PORT = _ADDRESS.host, _ADDRESS.port
MASKED_URL = mask_broker_url(BROKER_URL, mask="**")  # as minicelery prints it: amqp://guest:**@host:port//
BROKER_NAME = "the embedded broker" if EMBEDDED else "RabbitMQ"


def plain_connection() -> pika.BlockingConnection:
    """A plain pika connection; pika retries for up to 30 s, as the broker may be finishing a restart."""
    return pika.BlockingConnection(pika.ConnectionParameters(
        HOST, PORT, credentials=pika.PlainCredentials(_ADDRESS.userid, _ADDRESS.password),
        connection_attempts=150, retry_delay=0.2, socket_timeout=5))


def ready_count(queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare: fast, but blind to unacked messages)."""
    connection = plain_connection()
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def delete_queues(names: Iterable[str]) -> None:
    """Delete the queues and the exchanges of the same name (a worker declares both); missing is fine."""
    names = list(names)
    if not names:
        return
    connection = plain_connection()
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
            channel.exchange_delete(name)
    finally:
        connection.close()


def amqp_sockets() -> dict[int, int]:
    """This process's TCP connections to the test broker's port: local port → file descriptor (/proc)."""
    inodes: dict[str, int] = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes[target[8:-1]] = int(fd)
    found: dict[int, int] = {}
    with open("/proc/self/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if remote.endswith(f":{PORT:04X}") and inode in inodes:  # the port, in hex (0x1628 == 5672)
                found[int(local.split(":")[1], 16)] = inodes[inode]
    return found


# -- the admin seam ------------------------------------------------------------------------------------------


class EmbeddedBroker:
    """The session's embedded broker: a child process on ``PORT`` with a data directory, restartable."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.child: BrokerChild | None = None

    def start(self) -> None:
        """Start it (again) on the same port and data directory; returns once it listens."""
        if self.child is None:
            self.child = BrokerChild(BROKER_URL, data_dir=self.data_dir)
            self.child.start()

    def stop(self) -> None:
        """A graceful stop (SIGTERM: every connection goes, the journal is flushed); must exit 0."""
        child, self.child = self.child, None
        if child is not None:
            code = child.stop()
            assert code == 0, f"the embedded broker exited {code}"

    def ctl(self, command: str, *args: str) -> Any:
        """One request to its control socket (what ``broker ctl`` sends); returns the ``result``."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(os.path.join(self.data_dir, "control.sock"))
            sock.sendall(json.dumps({"command": command, "args": list(args)}).encode() + b"\n")
            reply = json.loads(sock.makefile("rb").readline())
        assert reply["ok"], f"broker ctl {command} {args}: {reply['error']}"
        return reply["result"]


_embedded: EmbeddedBroker | None = None


def start_session_broker(data_dir: str) -> EmbeddedBroker:
    """Start the session's embedded broker (conftest's ``test_broker`` fixture)."""
    global _embedded
    _embedded = EmbeddedBroker(data_dir)
    _embedded.start()
    return _embedded


def _session_broker() -> EmbeddedBroker:
    assert _embedded is not None, "the embedded test broker is not running (the test_broker fixture starts it)"
    return _embedded


def _rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done.stdout


def _rabbitmqctl_json(command: str, *fields: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(_rabbitmqctl(command, "-q", "--formatter", "json", *fields))
    return rows


QUEUE_FIELDS = ("name", "durable", "auto_delete", "exclusive", "arguments", "consumers", "messages_ready",
                "messages_unacknowledged")


def list_queues() -> list[dict[str, Any]]:
    """Every queue: ``QUEUE_FIELDS``; ``arguments`` is a list of ``[name, type, value]``."""
    if EMBEDDED:
        rows: list[dict[str, Any]] = _session_broker().ctl("list_queues")
        return rows
    return _rabbitmqctl_json("list_queues", *QUEUE_FIELDS)


def list_connections() -> list[dict[str, Any]]:
    """Every connection: ``id`` (for :func:`close_connection`), ``peer_port``, ``timeout`` (the heartbeat)."""
    if EMBEDDED:
        rows: list[dict[str, Any]] = _session_broker().ctl("list_connections")
        return rows
    # Not --formatter json: it writes a pid as '#PID<n.n.n>', which close_connection rejects; the table
    # writes '<rabbit@host.n.n.n>', which it takes.
    out = _rabbitmqctl("list_connections", "-q", "--no-table-headers", "pid", "peer_port", "timeout")
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return [{"id": pid, "peer_port": int(port), "timeout": int(timeout)} for pid, port, timeout in rows]


def list_channels() -> list[dict[str, Any]]:
    """Every channel: ``prefetch_count``, ``global_prefetch_count``, ``consumers``."""
    if EMBEDDED:
        rows: list[dict[str, Any]] = _session_broker().ctl("list_channels")
        return rows
    return [dict(row, consumers=row["consumer_count"]) for row in _rabbitmqctl_json(
        "list_channels", "prefetch_count", "global_prefetch_count", "consumer_count")]


def close_connection(connection_id: Any, reason: str) -> None:
    """Close a connection from the broker's side (``320 CONNECTION_FORCED - reason``)."""
    if EMBEDDED:
        closed = _session_broker().ctl("close_connection", str(connection_id), reason)
        assert closed == 1, f"no connection {connection_id} to close"
    else:
        _rabbitmqctl("close_connection", str(connection_id), reason)


def stop_broker() -> None:
    """Every connection is closed and the port stops listening: ``rabbitmqctl stop_app`` (the Erlang node
    stays up), or a graceful stop of the embedded broker's process."""
    if EMBEDDED:
        _session_broker().stop()
    else:
        _rabbitmqctl("stop_app")


def start_broker() -> None:
    """Start it again and wait until AMQP connections are accepted (harmless on a running broker): RabbitMQ's
    ``start_app`` and ``await_startup``, or a new embedded broker process on the same port and data dir."""
    if EMBEDDED:
        _session_broker().start()
    else:
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")
    plain_connection().close()
