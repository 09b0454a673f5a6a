"""How ``app.send_task`` sends (:func:`send`): what the app adds to a call's ``SendOptions``, where the
message goes, the publish. The app imports this module with its first message, and with it the message
and its serializers (issue 9: creating an app and defining tasks load none of them).

Routing follows Celery for the cases minicelery supports: an explicit ``queue=``, then ``task_routes``
(a dict or list of dicts keyed by task name or glob pattern, each giving ``{'queue': ...}``), then
``task_default_queue``. A queue is reached through the default exchange ``''`` with the queue's name as
routing key, after declaring it the way Celery does. Celery's counterpart is ``celery.app.amqp`` and
``celery.app.routes``; left out are routers given as dotted strings and ``kombu.Queue`` objects.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from typing import Any

from . import _state
from .config import Settings
from .exceptions import ImproperlyConfigured
from .message import SendOptions, TaskMessage
from .transport import QueueSpec

__all__ = ["send", "complete", "route"]


def send(app: Any, name: str, args: Any, kwargs: Any, options: SendOptions | None,
         call_options: Mapping[str, Any]) -> Any:
    """``app.send_task``: complete the options, build and route the message, make sure a reply can come
    back, publish, and return the app's ``AsyncResult`` for it."""
    if options is None:
        options = SendOptions.from_call(call_options)
    elif call_options:
        raise TypeError(f"send_task() takes options= or keyword options, not both: "
                        f"{sorted(call_options)}")
    conf = app.conf
    own_queue = app.reply_queue
    parent = _state.get_current_task()
    options = complete(options, conf, reply_queue=own_queue,
                       parent=parent.request if parent is not None else None)
    now = app.now() if options.needs_clock else None
    message = TaskMessage.create(name, args, kwargs, options, now)
    exchange, routing_key, queue = route(conf, name, options)
    if not options.ignore_result and message.reply_to == own_queue:
        # Only our own queue, never a reply_to passed through (a retry sent for another client).
        app.backend.prepare(own_queue)
    envelope = message.encode()
    app.broker.publish(envelope.body, envelope.properties, exchange=exchange, routing_key=routing_key,
                       declare=(QueueSpec(queue),) if queue is not None else ())
    if conf.task_send_sent_event:  # monitoring (optional): Celery's task-sent event, loaded when enabled
        from .monitor import task_sent

        task_sent(app, message, queue, exchange, routing_key)
    return app.AsyncResult(message.id, task_name=name, ignored=bool(options.ignore_result))


def complete(options: SendOptions, conf: Settings, *, reply_queue: str,
             parent: Any = None) -> SendOptions:
    """Fill in what one call left to the app, once: the settings' defaults, replies to ``reply_queue``
    (unless the call names a ``reply_to``), and, inside a running task (``parent``: its request), the
    parent and root ids that link the new task to it."""
    changes: dict[str, Any] = {"reply_to": options.reply_to or reply_queue}
    if options.ignore_result is None:
        changes["ignore_result"] = bool(conf.task_ignore_result)
    if options.delivery_mode is None:
        changes["delivery_mode"] = conf.task_default_delivery_mode
    if options.serializer is None:
        changes["serializer"] = conf.task_serializer
    if options.compression is None:
        changes["compression"] = conf.task_compression
    if parent is not None and not parent.called_directly:
        changes["parent_id"] = options.parent_id or parent.id
        changes["root_id"] = options.root_id or parent.root_id or parent.id
    return dataclasses.replace(options, **changes)


def route(conf: Settings, name: str, options: SendOptions) -> tuple[str, str, str | None]:
    """Decide where a task goes: ``(exchange, routing_key, queue to declare or None)``.

    An explicit ``exchange`` is used as given (nothing is declared); otherwise the message goes to the
    default exchange with the queue's name as routing key, and that queue is declared first.
    """
    queue, exchange, routing_key = options.queue, options.exchange, options.routing_key
    if queue is None and exchange is None and routing_key is None:
        found = _lookup_route(conf.task_routes, name)
        queue, exchange, routing_key = found.get("queue"), found.get("exchange"), found.get("routing_key")
    if exchange is not None:
        return str(exchange), str(routing_key or queue or name), None
    if queue is None and routing_key is not None:
        return str(conf.task_default_exchange), str(routing_key), None
    queue = queue or conf.task_default_queue
    if not isinstance(queue, str):
        raise ImproperlyConfigured(f"queue must be a queue name (a str), not {queue!r}")
    return "", queue, queue


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
            found = next((value for pattern, value in table.items()
                          if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern)),
                         None)
        if found is not None:
            return {"queue": found} if isinstance(found, str) else found
    return {}
