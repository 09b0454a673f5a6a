"""A recording broker and a small task app for the canvas unit tests (no RabbitMQ needed).

:class:`RecordingBroker` is ``app.broker``: the real ``memory://`` transport, which also keeps every
published message, decoded, in order, so a test can check exactly what a client or a worker put on the
wire (and the messages really sit in the in-process broker's queues).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from minicelery import Celery
from minicelery.memory import MemoryTransport


@dataclass
class Published:
    """One message as it would have gone out."""

    exchange: str
    routing_key: str
    properties: dict[str, Any]
    body: Any

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.get("headers") or {}

    @property
    def args(self) -> list[Any]:
        return self.body[0]

    @property
    def embed(self) -> dict[str, Any]:
        return self.body[2]


class RecordingBroker(MemoryTransport):
    """The real memory transport, noting every message published through it, decoded, in order."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.sent: list[Published] = []
        self.reply_queues: list[str] = []

    def publish(self, body: bytes, properties: dict[str, Any], *, exchange: str = "", routing_key: str,
                declare: Any = ()) -> None:
        super().publish(body, properties, exchange=exchange, routing_key=routing_key, declare=declare)
        self.sent.append(Published(exchange, routing_key, dict(properties), json.loads(body)))

    def declare_reply_queue(self, name: str, expires_ms: Any = None, consume: bool = True) -> None:
        super().declare_reply_queue(name, expires_ms, consume)
        self.reply_queues.append(name)

    def tasks(self) -> list[Published]:
        """The task messages (those with a ``task`` header)."""
        return [m for m in self.sent if "task" in m.headers]


def make_app(backend: str = "rpc://", **conf: Any) -> tuple[Celery, RecordingBroker, dict[str, Any]]:
    """An app with tasks ``add``, ``mul``, ``tsum``, ``echo``, ``boom`` and a recording broker."""
    url = f"memory://canvas-{uuid.uuid4().hex}"
    app = Celery("cs_tasks", broker=url, backend=backend)
    app.conf.task_default_queue = "canvas-test"
    app.conf.update(conf)
    broker = RecordingBroker(url)
    app._broker = broker  # the app's broker slot, filled before first use with the recording transport

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def mul(x, y):
        return x * y

    @app.task
    def tsum(xs):
        return sum(xs)

    @app.task
    def echo(*args, **kwargs):
        return [list(args), kwargs]

    @app.task
    def boom(*args):
        raise ValueError("boom", *args)

    return app, broker, {"add": add, "mul": mul, "tsum": tsum, "echo": echo, "boom": boom}
