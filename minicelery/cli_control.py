"""The operating commands: ``inspect``, ``control`` and ``events --dump``, with Celery's output.

``inspect <command>`` and ``control <command>`` broadcast a remote control request (``-d/--destination``
names the nodes, ``-t/--timeout`` the wait for each reply), print each reply as it arrives
(``->  celery@host: OK`` and the reply indented) and, for ``inspect``, ``N node(s) online.``; ``--json``
prints the replies as JSON instead. With no reply they fail with ``Error: No nodes replied within time
constraint`` and exit 69, as Celery's do. ``events --dump`` prints every monitoring event as Celery's
dumper does, until interrupted. Celery's counterparts are ``celery.bin.control`` and
``celery.events.dumper``; left out: the curses monitor (``events`` without ``--dump``), ``status``,
``memdump``/``memsample``/``objgraph``, ``autoscale``, ``pool_restart``.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import serialization
from .exceptions import NoReplyError
from .monitor import utcoffset
from .transport import Delivery, QueueSpec

__all__ = ["add_parsers", "COMMANDS", "INSPECT_COMMANDS", "CONTROL_COMMANDS", "format_event"]

#: inspect command → how its positional arguments become the request's arguments.
INSPECT_COMMANDS: dict[str, Callable[[list[str]], dict[str, Any]]] = {
    "active": lambda a: {"safe": True} if a and a[0].lower() in ("1", "true", "safe") else {},
    "active_queues": lambda a: {}, "clock": lambda a: {},
    "conf": lambda a: {"with_defaults": bool(a and a[0].lower() in ("1", "true", "with_defaults"))},
    "ping": lambda a: {}, "query_task": lambda a: {"ids": a}, "registered": lambda a: {"taskinfoitems": a},
    "report": lambda a: {}, "reserved": lambda a: {}, "revoked": lambda a: {}, "scheduled": lambda a: {},
    "stats": lambda a: {},
}


def _revoke(a: list[str]) -> dict[str, Any]:
    return {"task_id": a}


def _terminate(a: list[str]) -> dict[str, Any]:
    if len(a) < 2:
        raise ValueError("terminate needs a signal and at least one task id")
    return {"signal": a[0], "task_id": a[1:]}


def _time_limit(a: list[str]) -> dict[str, Any]:
    return {"task_name": a[0], "soft": float(a[1]) if len(a) > 1 else None,
            "hard": float(a[2]) if len(a) > 2 else None}


def _add_consumer(a: list[str]) -> dict[str, Any]:
    padded = [*a, None, None, None][:4]
    return {"queue": padded[0], "exchange": padded[1], "exchange_type": padded[2] or "direct",
            "routing_key": padded[3]}


#: control command → how its positional arguments become the request's arguments.
CONTROL_COMMANDS: dict[str, Callable[[list[str]], dict[str, Any]]] = {
    "revoke": _revoke, "terminate": _terminate, "shutdown": lambda a: {},
    "enable_events": lambda a: {}, "disable_events": lambda a: {}, "heartbeat": lambda a: {},
    "rate_limit": lambda a: {"task_name": a[0], "rate_limit": a[1]}, "time_limit": _time_limit,
    "pool_grow": lambda a: {"n": int(a[0]) if a else 1},
    "pool_shrink": lambda a: {"n": int(a[0]) if a else 1},
    "add_consumer": _add_consumer, "cancel_consumer": lambda a: {"queue": a[0]},
}


def add_parsers(sub: Any, common: Callable[[Any], None]) -> None:
    """Add ``inspect``, ``control`` and ``events`` to the sub-command parsers (``common``: -A and -b)."""
    for name, commands in (("inspect", INSPECT_COMMANDS), ("control", CONTROL_COMMANDS)):
        parser = sub.add_parser(name, help=f"{name} the workers: {', '.join(sorted(commands))}")
        common(parser)
        parser.add_argument("action", metavar="COMMAND")
        parser.add_argument("arguments", nargs="*")
        parser.add_argument("-d", "--destination", help="comma-separated node names (default: all)")
        parser.add_argument("-t", "--timeout", type=float, default=1.0, help="seconds to wait for each reply")
        parser.add_argument("-j", "--json", action="store_true", help="print the replies as JSON")
    events = sub.add_parser("events", help="print the workers' monitoring events (--dump)")
    common(events)
    events.add_argument("-d", "--dump", action="store_true", help="print every event (required)")
    events.add_argument("--timeout", type=float, help="stop after this many seconds (default: until Ctrl+C)")


def _run(app: Any, args: Any, commands: dict[str, Callable[[list[str]], dict[str, Any]]]) -> int:
    name = args.command
    if args.action not in commands:
        raise ValueError(f"Command {args.action} not recognized. Available {name} commands: "
                         f"{', '.join(sorted(commands))}")
    try:
        arguments = commands[args.action](list(args.arguments))
    except (IndexError, ValueError) as exc:
        raise ValueError(f"{name} {args.action}: bad arguments {args.arguments!r} ({exc})") from None
    destination = [d.strip() for d in args.destination.split(",") if d.strip()] if args.destination else None
    replies = app.control.broadcast(args.action, arguments, destination=destination, reply=True,
                                    timeout=args.timeout, callback=None if args.json else _say_reply) or []
    if not replies:
        raise NoReplyError("No nodes replied within time constraint")
    if args.json:
        flat = {node: answer for reply in replies for node, answer in reply.items()}
        print(json.dumps(flat if name == "inspect" else replies))
    elif name == "inspect":
        print(f"\n{len(replies)} {'node' if len(replies) == 1 else 'nodes'} online.")
    return 0


def inspect_command(app: Any, args: Any) -> int:
    """``inspect COMMAND [ARGS]``: ask the workers and print their replies."""
    return _run(app, args, INSPECT_COMMANDS)


def control_command(app: Any, args: Any) -> int:
    """``control COMMAND [ARGS]``: tell the workers and print their replies."""
    return _run(app, args, CONTROL_COMMANDS)


def _say_reply(reply: dict[str, Any]) -> None:
    """One reply in Celery's words: the node line, then the reply's body indented."""
    for node, answer in reply.items():
        error = isinstance(answer, dict) and "error" in answer and "ok" not in answer
        print(f"->  {node}: {'ERROR' if error else 'OK'}")
        print(_body(answer), flush=True)


def _body(answer: Any) -> str:
    if isinstance(answer, dict) and ("ok" in answer or "error" in answer) and len(answer) == 1:
        text = answer.get("ok", answer.get("error"))
        if isinstance(text, str):
            return "\n".join(" " * 8 + line for line in text.splitlines() or [""])
        answer = text
    if isinstance(answer, list):
        return "\n".join(f"    * {item}" for item in answer) if answer else "    - empty -"
    if isinstance(answer, dict):
        dumped = json.dumps(answer, sort_keys=True, indent=4)
        return "\n".join(" " * 4 + line for line in dumped.splitlines()) + "\n    "
    return f"    {answer}"


# -- events --dump ----------------------------------------------------------------------------------------

_HUMAN = {"worker-online": "started", "worker-heartbeat": "heartbeat", "worker-offline": "shutdown"}


def format_event(event: dict[str, Any], names: dict[str, str]) -> str:
    """One event as ``celery events --dump`` prints it; ``names`` caches each task's description."""
    event = dict(event)
    stamp = datetime.fromtimestamp(event.pop("timestamp"), UTC)
    kind = str(event.pop("type")).lower()
    hostname = event.pop("hostname")
    human = _HUMAN.get(kind, kind.replace("-", " "))
    task = None
    if kind.startswith("task-"):
        task_id = event.pop("uuid", "")
        if kind in ("task-received", "task-sent"):
            names[task_id] = (f"{event.pop('name', None)}({task_id}) args={event.pop('args', None)} "
                              f"kwargs={event.pop('kwargs', None)}")
        task = names.get(task_id, "")
    fields = ", ".join(f"{key}={event[key]}" for key in sorted(event))
    sep = ":" if fields else ""
    middle = f" {task}" if task is not None else ""
    return f"{hostname} [{stamp}] {human}{sep}{middle} {fields}"


def events_command(app: Any, args: Any) -> int:
    """``events --dump``: print every event on ``event_exchange`` until interrupted (or ``--timeout``)."""
    if not args.dump:
        raise ValueError("minicelery events: only --dump is supported (the curses monitor is not)")
    conf = app.conf
    arrived: list[Delivery] = []
    connection = app.broker.connection()
    connection.connect()
    try:
        # Celery's receiver queue: celeryev.<uuid>, transient, bound to every routing key.
        spec = QueueSpec(f"{conf.event_exchange}.{uuid.uuid4()}", exchange=conf.event_exchange,
                         exchange_type="topic", routing_key="#", durable=False, auto_delete=True,
                         exclusive=True, arguments={"x-message-ttl": int(conf.event_queue_ttl * 1000),
                                                    "x-expires": int(conf.event_queue_expires * 1000)})
        connection.declare(spec)
        connection.consume(spec.name, arrived.append, lambda _queue: None, no_ack=True)
        print("-> evdump: starting capture...", flush=True)
        app.control.heartbeat()  # the wake-up: workers answer at once instead of at their next beat
        _dump(app, connection, arrived, args.timeout)
    except KeyboardInterrupt:
        pass
    finally:
        connection.close()
    return 0


def _dump(app: Any, connection: Any, arrived: list[Delivery], timeout: float | None) -> None:
    names: dict[str, str] = {}
    local_offset = utcoffset()
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        connection.wait(0.25)
        deliveries = list(arrived)
        arrived.clear()
        for delivery in deliveries:
            props = delivery.properties
            try:
                body = serialization.loads(delivery.body, props.get("content_type"),
                                           props.get("content_encoding"), app.conf.accept_content)
            except Exception:  # noqa: BLE001 - one unreadable event must not end the dump
                continue
            for event in body if isinstance(body, list) else [body]:
                if isinstance(event, dict) and "type" in event and "timestamp" in event:
                    event["local_received"] = time.time()
                    if isinstance(event.get("utcoffset"), int | float):
                        event["timestamp"] -= (event["utcoffset"] - local_offset) * 3600
                    print(format_event(event, names), flush=True)
    sys.stdout.flush()


COMMANDS: dict[str, Callable[[Any, Any], int]] = {
    "inspect": inspect_command, "control": control_command, "events": events_command,
}
