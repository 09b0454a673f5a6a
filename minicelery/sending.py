"""From ``send_task`` arguments to a protocol-v2 message and a route (exchange, routing key, queue).

Routing follows Celery for the cases minicelery supports: an explicit ``queue=``, then ``task_routes``
(a dict or list of dicts keyed by task name or glob pattern, each giving ``{'queue': ...}``), then
``task_default_queue``. A queue is reached through the default exchange ``''`` with the queue's name as
routing key, after declaring it the way Celery does. Celery's counterpart is ``celery.app.amqp`` and
``celery.app.routes``; left out are routers given as dotted strings and ``kombu.Queue`` objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .exceptions import ImproperlyConfigured
from .protocol import TaskMessage
from .transport import QueueSpec

__all__ = ["build_message", "route", "queue_declarations"]

#: Options that ``send_task`` consumes itself rather than passing on to the message.
_MESSAGE_OPTIONS = ("retries", "time_limit", "soft_time_limit", "root_id", "parent_id", "shadow",
                    "reply_to", "priority", "headers", "group_id", "group_index")


def build_message(app: Any, name: str, args: Any, kwargs: Any, *, task_id: str | None,
                  countdown: float | None, eta: datetime | None, expires: float | datetime | None,
                  ignore_result: bool, options: Mapping[str, Any], reply_queue: str) -> TaskMessage:
    """Build the task message for one ``send_task`` call; replies go to ``reply_queue`` unless an
    explicit ``reply_to`` option says otherwise."""
    extra = {key: options[key] for key in _MESSAGE_OPTIONS if options.get(key) is not None}
    extra.setdefault("reply_to", reply_queue)
    needs_clock = countdown is not None or eta is not None or expires is not None
    return TaskMessage.create(
        name, args if args is not None else (), kwargs if kwargs is not None else {},
        task_id=task_id, countdown=countdown, eta=eta, expires=expires,
        now=app.now() if needs_clock else None, ignore_result=ignore_result,
        delivery_mode=options.get("delivery_mode") or app.conf.task_default_delivery_mode, **extra)


def route(app: Any, name: str, options: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """Decide where a task goes: ``(exchange, routing_key, queue to declare or None)``.

    An explicit ``exchange`` is used as given (nothing is declared); otherwise the message goes to the
    default exchange with the queue's name as routing key, and that queue is declared first.
    """
    queue = options.get("queue")
    exchange = options.get("exchange")
    routing_key = options.get("routing_key")
    if queue is None and exchange is None and routing_key is None:
        found = _lookup_route(app.conf.task_routes, name)
        queue, exchange, routing_key = found.get("queue"), found.get("exchange"), found.get("routing_key")
    if exchange is not None:
        return str(exchange), str(routing_key or queue or name), None
    if queue is None and routing_key is not None:
        return str(app.conf.task_default_exchange), str(routing_key), None
    queue = queue or app.conf.task_default_queue
    if not isinstance(queue, str):
        raise ImproperlyConfigured(f"queue must be a queue name (a str), not {queue!r}")
    return "", queue, queue


def queue_declarations(app: Any, queue: str | None) -> tuple[Any, ...]:
    """The declarations to make (once per connection) before publishing to ``queue``, made once per app."""
    if queue is None:
        return ()
    specs = app.__dict__.setdefault("_queue_specs", {})
    if queue not in specs:
        specs[queue] = (QueueSpec(queue),)
    return specs[queue]


def _lookup_route(routes: Any, name: str) -> Mapping[str, Any]:
    """Find the first entry of ``task_routes`` that matches ``name`` (exact name or glob)."""
    if not routes:
        return {}
    for table in routes if isinstance(routes, (list, tuple)) else (routes,):
        if not isinstance(table, Mapping):
            raise ImproperlyConfigured(
                f"task_routes entries must be dicts of task name → route, not {table!r}")
        found = table.get(name)
        if found is None:
            import fnmatch  # only glob routes need it: keep it out of `import minicelery`

            found = next((value for pattern, value in table.items()
                          if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern)),
                         None)
        if found is not None:
            return {"queue": found} if isinstance(found, str) else found
    return {}
