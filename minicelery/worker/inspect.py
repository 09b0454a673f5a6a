"""What ``inspect active|reserved|scheduled|query_task|active_queues`` report: Celery's info dicts.

A request is described as Celery's ``Request.info()`` does: id, name, args and kwargs (decoded from the
raw body, or the message's ``argsrepr``/``kwargsrepr`` with ``safe``), type, hostname, when it started,
whether its message is acknowledged, its delivery info and the child running it. Read only, from the
dispatcher's bookkeeping (``worker/state.py``: held = scheduled, ready/accepted = reserved, running =
active). Celery's counterpart is ``Request.info`` and the dump helpers of ``celery.worker.control``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .. import protocol
from .request import Request

__all__ = ["requests", "request_info", "queue_info", "jsonable"]


def request_info(request: Request, hostname: str, accept: Any, *, safe: bool, pid: int | None = None,
                 running: bool = False) -> dict[str, Any]:
    """Celery's ``Request.info()`` for one request (a body that cannot be decoded shows its reprs)."""
    headers, job = request.headers, request.job
    args: Any = headers.argsrepr
    kwargs: Any = headers.kwargsrepr
    if not safe:
        try:
            compression = headers.headers.get("compression")
            args, kwargs, _embed = protocol.decode_body(job.body, job.content_type, job.content_encoding,
                                                        accept, compression)
        except Exception:  # noqa: BLE001 - a report must not fail for one odd body
            pass
    return {"id": headers.id, "name": headers.task, "args": args, "kwargs": kwargs, "type": headers.task,
            "hostname": hostname, "time_start": request.time_start if running else None,
            "acknowledged": running and not request.acks_late,
            "delivery_info": job.request.get("delivery_info"), "worker_pid": pid if running else None}


def requests(node: Any, stages: tuple[str, ...], safe: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(stage, info)`` for the worker's requests in ``stages`` (active, reserved, scheduled)."""
    dispatch = node.consumer.dispatch
    state, accept, hostname = dispatch.requests, dispatch.accept, node.hostname
    if "active" in stages:
        pids = node.consumer.pool.active()
        for job_id, request in list(state.running.items()):
            yield "active", request_info(request, hostname, accept, safe=safe, pid=pids.get(job_id),
                                         running=True)
    if "reserved" in stages:
        for request in [*state.accepted, *state.ready]:
            yield "reserved", request_info(request, hostname, accept, safe=safe)
    if "scheduled" in stages:
        for request in state.held():
            eta = request.headers.eta
            yield "scheduled", {"eta": eta.isoformat() if eta else None, "priority": 6,
                                "request": request_info(request, hostname, accept, safe=safe)}


def queue_info(name: str) -> dict[str, Any]:
    """kombu's ``Queue.as_dict(recurse=True)`` for a queue declared as Celery's default ones are."""
    exchange = {"name": name, "type": "direct", "arguments": None, "durable": True, "passive": False,
                "auto_delete": False, "delivery_mode": None, "no_declare": False}
    return {"name": name, "exchange": exchange, "routing_key": name, "queue_arguments": None,
            "binding_arguments": None, "consumer_arguments": None, "durable": True, "exclusive": False,
            "auto_delete": False, "no_ack": False, "alias": None, "bindings": [], "no_declare": None,
            "expires": None, "message_ttl": None, "max_length": None, "max_length_bytes": None,
            "max_priority": None}


def jsonable(value: Any) -> Any:
    """``value`` with everything JSON cannot hold turned into its ``str`` (a setting may hold a class)."""
    return json.loads(json.dumps(value, default=str))
