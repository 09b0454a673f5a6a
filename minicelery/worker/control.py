"""The remote control commands a worker answers: plain functions ``handler(node, **arguments)``.

Each takes the :class:`~minicelery.worker.remote.Remote` that received the request (``node``: the app,
the consumer, the revoked set, the event dispatcher) and the request's arguments, and returns the reply
Celery's worker gives, word for word (``{"ok": "pong"}``, ``{"error": "unknown task"}``...). Unknown
keyword arguments are ignored, as Celery's handlers do. What the worker cannot do (resize the pool,
consume more queues, rate limits) answers Celery's error shape saying so. The info dicts of ``active``,
``reserved`` and ``scheduled`` are built in :mod:`minicelery.worker.inspect`.
Celery's counterpart is ``celery.worker.control``; left out: ``election``, ``autoscale``,
``pool_restart``, ``objgraph``, ``memsample``/``memdump`` (answered as unknown commands).
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import signal as signals
import time
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..urls import parse_broker_url
from . import inspect

__all__ = ["HANDLERS", "NO_REPLY", "parse_signal"]

logger = logging.getLogger("minicelery.worker.control")

#: Returned by a handler that must not be answered (``shutdown``: the worker is going away).
NO_REPLY = object()

HANDLERS: dict[str, Callable[..., Any]] = {}


def _command(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a handler under its own name and Celery's aliases."""
    def register(handler: Callable[..., Any]) -> Callable[..., Any]:
        for name in (handler.__name__, *names):
            HANDLERS[name] = handler
        return handler
    return register


def _unsupported(name: str) -> Callable[..., Any]:
    def handler(node: Any, **_: Any) -> dict[str, str]:
        return {"error": f"{name} is not supported by minicelery"}
    handler.__name__ = name
    HANDLERS[name] = handler
    return handler


for _name in ("rate_limit", "pool_grow", "pool_shrink", "add_consumer", "cancel_consumer"):
    _unsupported(_name)


# -- inspect --------------------------------------------------------------------------------------------

@_command()
def ping(node: Any, **_: Any) -> dict[str, str]:
    """``{"ok": "pong"}``: the liveness probe."""
    return {"ok": "pong"}


@_command()
def clock(node: Any, **_: Any) -> dict[str, int]:
    """The worker's Lamport clock."""
    return {"clock": node.clock.value}


@_command("dump_active")
def active(node: Any, safe: bool = False, **_: Any) -> list[dict[str, Any]]:
    """The requests running in children now."""
    return [info for _stage, info in inspect.requests(node, ("active",), safe)]


@_command("dump_reserved")
def reserved(node: Any, safe: bool = False, **_: Any) -> list[dict[str, Any]]:
    """The requests received and waiting for a child (not those held for an ETA)."""
    return [info for _stage, info in inspect.requests(node, ("reserved",), safe)]


@_command("dump_schedule")
def scheduled(node: Any, safe: bool = False, **_: Any) -> list[dict[str, Any]]:
    """The requests held for their ETA: ``{"eta", "priority", "request"}`` each."""
    return [info for _stage, info in inspect.requests(node, ("scheduled",), safe)]


@_command()
def query_task(node: Any, ids: Any = (), **_: Any) -> dict[str, Any]:
    """``{id: [stage, info]}`` for the given ids this worker holds; unknown ids are left out."""
    wanted = {ids} if isinstance(ids, str) else set(ids or ())
    found: dict[str, Any] = {}
    for stage, info in inspect.requests(node, ("active", "reserved", "scheduled"), False):
        request = info.get("request", info)
        if request["id"] in wanted:
            found[request["id"]] = [stage, request]
    return found


@_command("dump_tasks")
def registered(node: Any, taskinfoitems: Any = None, builtins: bool = False, **_: Any) -> list[str]:
    """The registered task names, sorted, ``celery.*`` ones only with ``builtins``; each with its
    non-None ``taskinfoitems`` attributes (default exchange, routing_key, rate_limit) appended."""
    items = taskinfoitems or ("exchange", "routing_key", "rate_limit")
    names = []
    for name, task in sorted(node.app.tasks.items()):
        if name.startswith("celery.") and not builtins:
            continue
        fields = [f"{item}={getattr(task, item)}" for item in items
                  if not item.startswith("_") and getattr(task, item, None) is not None]
        names.append(f"{name} [{' '.join(fields)}]" if fields else name)
    return names


@_command("dump_revoked")
def revoked(node: Any, **_: Any) -> list[str]:
    """The revoked ids, oldest first."""
    return list(node.revoked)


@_command()
def active_queues(node: Any, **_: Any) -> list[dict[str, Any]]:
    """The queues consumed, in kombu's ``Queue.as_dict(recurse=True)`` shape (Flower's Queues tab)."""
    return [inspect.queue_info(name) for name in node.consumer.queues]


@_command("dump_conf")
def conf(node: Any, with_defaults: bool = False, **_: Any) -> dict[str, Any]:
    """The changed settings (every one ``with_defaults``), censored as ``humanize``/``table`` do."""
    return inspect.jsonable(node.app.conf.table(with_defaults=with_defaults))


@_command()
def report(node: Any, **_: Any) -> dict[str, str]:
    """A short bug report: versions, platform, transport and results, then the changed settings."""
    app_conf = node.app.conf
    transport = str(app_conf.broker_url or "amqp://").partition("://")[0]
    text = (f"software -> minicelery:{__version__} py:{platform.python_version()}\n"
            f"            {platform.python_implementation()}\n"
            f"platform -> system:{platform.system()} arch:{platform.machine()}\n"
            f"settings -> transport:{transport} results:{app_conf.result_backend or 'disabled'}\n\n"
            f"{app_conf.humanize()}\n")
    return {"ok": text}


@_command()
def stats(node: Any, **_: Any) -> dict[str, Any]:
    """Celery's eight keys: what Flower's worker page reads (``broker`` and ``total`` directly)."""
    consumer, pool = node.consumer, node.consumer.pool
    hard, soft = consumer.dispatch.time_limits
    url = node.app.conf.broker_read_url or node.app.conf.broker_url
    return {
        "total": dict(consumer.dispatch.total), "pid": os.getpid(), "clock": str(node.clock.value),
        "uptime": int(time.monotonic() - node.started),
        "pool": {"implementation": "minicelery.worker.pool:Pool", "max-concurrency": node.concurrency,
                 "processes": pool.pids(), "max-tasks-per-child": node.max_tasks_per_child or "N/A",
                 "put-guarded-by-semaphore": False, "timeouts": [soft or 0, hard or 0], "writes": {}},
        "broker": _broker(url, node.app.conf.broker_heartbeat),
        "prefetch_count": consumer.prefetch_count + consumer.dispatch.requests.held_count,
        "rusage": _rusage(),
    }


def _broker(url: str | None, heartbeat: float | None) -> dict[str, Any]:
    """kombu's ``Connection.info()`` for the worker's broker (``memory://`` reads as a local host)."""
    if str(url or "").startswith("memory://"):
        host, userid, vhost, port, ssl, transport = "localhost", None, "/", None, False, "memory"
    else:
        address = parse_broker_url(url)
        host, userid, vhost, port = address.host, address.userid, address.virtual_host, address.port
        ssl, transport = address.ssl, "amqp"
    return {"hostname": host, "userid": userid, "virtual_host": vhost, "port": port, "insist": False,
            "ssl": ssl, "transport": transport, "connect_timeout": 4, "transport_options": {},
            "login_method": "PLAIN", "uri_prefix": None, "heartbeat": float(heartbeat or 0),
            "failover_strategy": "round-robin", "alternates": [], "credential_provider": None}


def _rusage() -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    names = ("utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap", "inblock",
             "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw")
    return {name: getattr(usage, f"ru_{name}") for name in names}


@_command()
def hello(node: Any, from_node: str | None = None, revoked: Any = (), **_: Any) -> dict[str, Any] | None:
    """Mingle: another node's revoked ids are merged and ours returned; from ourselves, None."""
    if from_node == node.hostname:
        return None
    node.revoked.update(task_id for task_id in revoked or () if isinstance(task_id, str))
    return {"revoked": list(node.revoked), "clock": node.clock.forward()}


# -- control --------------------------------------------------------------------------------------------

@_command()
def enable_events(node: Any, **_: Any) -> dict[str, str]:
    """Turn task events on (Flower asks every 5 s)."""
    if node.task_events:
        return {"ok": "task events already enabled"}
    node.set_task_events(True)
    logger.info("Events of group {task} enabled by remote.")
    return {"ok": "task events enabled"}


@_command()
def disable_events(node: Any, **_: Any) -> dict[str, str]:
    """Turn task events off."""
    if not node.task_events:
        return {"ok": "task events already disabled"}
    node.set_task_events(False)
    logger.info("Events of group {task} disabled by remote.")
    return {"ok": "task events disabled"}


@_command()
def heartbeat(node: Any, **_: Any) -> None:
    """Send one ``worker-heartbeat`` now (monitors ask at start to see the worker at once)."""
    node.send_heartbeat(wakeup=True)


@_command()
def shutdown(node: Any, **_: Any) -> object:
    """Warm shutdown, with no reply (Celery's worker exits before it could send one)."""
    logger.warning("Got shutdown from remote")
    node.consumer.shutdown.warm()
    return NO_REPLY


def parse_signal(value: Any) -> int:
    """``'TERM'``, ``'SIGTERM'``, ``15`` or ``'15'`` → 15; ``ValueError`` for anything else."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    name = str(value).upper()
    try:
        return int(signals.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        raise ValueError(f"unknown signal {value!r}") from None


@_command()
def revoke(node: Any, task_id: Any, terminate: bool = False, signal: Any = None, **_: Any) -> dict[str, str]:
    """Revoke ids (a str or a list), kept in the revoked set; ``terminate`` signals running ones too."""
    ids = [task_id] if isinstance(task_id, str) else [str(one) for one in task_id]
    node.revoked.update(ids)
    if terminate:
        signum = parse_signal(signal or "SIGTERM")
        done = node.consumer.dispatch.terminate(ids, signum)
        for one in done:
            logger.info("Terminating %s (%s)", one, signum)
        return {"ok": f"terminate: {', '.join(done)}" if done else "terminate: tasks unknown"}
    logger.info("Tasks flagged as revoked: %s", ", ".join(ids))
    return {"ok": f"tasks {set(ids)!r} flagged as revoked"}


@_command()
def terminate(node: Any, signal: Any, task_id: Any, **_: Any) -> dict[str, str]:
    """``revoke`` with ``terminate=True``."""
    return revoke(node, task_id, terminate=True, signal=signal)


@_command()
def time_limit(node: Any, task_name: str | None = None, soft: float | None = None, hard: float | None = None,
               **_: Any) -> dict[str, str]:
    """Set a task's soft and hard time limits for the tasks started from now on."""
    task = node.app.tasks.get(task_name)
    if task is None:
        logger.error("Change time limit attempt for unknown task %s", task_name)
        return {"error": "unknown task"}
    task.soft_time_limit, task.time_limit = soft, hard
    logger.info("New time limits for tasks of type %s: soft=%s hard=%s", task_name, soft, hard)
    return {"ok": "time limits set successfully"}
