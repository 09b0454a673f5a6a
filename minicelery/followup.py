"""What a worker does after a task, following its message's embed: the canvas on the worker side.

A task message's body ends with ``{"callbacks", "errbacks", "chain", "chord"}``. Once the task's outcome
is known, :func:`follow_embed` does what Celery's tracer does with it (``docs/canvas.md``):

* on success: apply the callbacks (one as a task, several as one group), then the next chain step (the
  last element of ``chain``, with the result prepended unless it is immutable), and report what was sent
  so that the task's stored result lists it in ``children``;
* on failure: store the same FAILURE under the id of every remaining chain step (so ``get()`` on the
  last one raises at once), then call each errback: new style (``f(request, exc, traceback)``) here and
  now, old style (``f(task_id)``) as one group of messages.

Everything is checked before anything is sent: a malformed embed fails the task with
``InvalidTaskError`` and sends nothing. Celery's counterpart is the canvas part of
``celery.app.trace.build_tracer`` and ``Task.on_failure``'s errback handling (``celery.backends.base``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from . import protocol, serialization, states
from .canvas import Signature, _chain, group, signature
from .canvas_send import apply, send
from .chords import _chord
from .exceptions import InvalidTaskError
from .task import Context
from .trace import Outcome

__all__ = ["EMBED_KEYS", "embed_fields", "follow_embed", "follow_eager", "store_result_meta"]

logger = logging.getLogger(__name__)

#: The embed's keys, which become request fields of the same name (as in Celery's ``Context``).
EMBED_KEYS = ("callbacks", "errbacks", "chain", "chord")


def embed_fields(embed: Mapping[str, Any] | None) -> dict[str, Any]:
    """The request fields of a decoded embed: ``callbacks``, ``errbacks``, ``chain``, ``chord``."""
    embed = embed or {}
    return {key: embed.get(key) for key in EMBED_KEYS}


def follow_embed(app: Any, task: Any, request: Mapping[str, Any],
                 outcome: Outcome) -> tuple[Outcome, list[Any]]:
    """Send what the embed asks for after ``outcome``; return the outcome to store and its ``children``.

    A malformed embed turns a success into FAILURE (``InvalidTaskError``) with nothing sent; a failure
    keeps its own exception whatever happens to its errbacks.
    """
    if outcome.state == states.SUCCESS:
        try:
            callbacks, steps = _checked(request, "callbacks"), _checked(request, "chain")
            return outcome, _on_success(app, request, outcome.value, callbacks, steps)
        except Exception as exc:  # noqa: BLE001 - a bad embed fails this task, the worker lives
            logger.error("Task %s[%s] cannot follow its canvas: %r", task.name, request.get("id"), exc)
            return Outcome(states.FAILURE, exc, None, outcome.runtime), []
    if outcome.state == states.FAILURE:
        try:
            _on_failure(app, task, request, outcome, _checked(request, "chain"),
                        _checked(request, "errbacks"))
        except Exception:  # noqa: BLE001 - the task's own failure is what gets stored
            logger.exception("Task %s[%s] could not run its errbacks", task.name, request.get("id"))
    return outcome, []


def _checked(request: Mapping[str, Any], key: str) -> list[Signature]:
    value = request.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidTaskError(f"embed {key!r} must be a list of signatures or null, "
                               f"got {type(value).__name__}")
    return [check_signature(item, key) for item in value]


def check_signature(item: Any, where: str) -> Signature:
    """Check a signature dict from a message and return it as a signature of its class.

    Raises:
        InvalidTaskError: not an object with ``task`` (a string), ``args`` (an array), ``kwargs`` and
            ``options`` (objects); or a chain/group/chord whose parts are not such objects.
    """
    if not isinstance(item, Mapping):
        raise InvalidTaskError(f"{where}: a signature must be an object, got {type(item).__name__}")
    for key, kinds in (("task", str), ("args", (list, tuple)), ("kwargs", Mapping), ("options", Mapping)):
        if not isinstance(item.get(key), kinds):
            raise InvalidTaskError(f"{where}: signature {item.get('task')!r} needs {key!r} "
                                   f"({'missing' if key not in item else type(item[key]).__name__})")
    kind = item.get("subtask_type")
    inner = item["kwargs"]
    if kind in ("chain", "group"):
        if not isinstance(inner.get("tasks"), list):
            raise InvalidTaskError(f"{where}: a {kind} needs kwargs.tasks, a list")
        for part in inner["tasks"]:
            check_signature(part, where)
    elif kind == "chord":
        header = inner.get("header")
        for part in (header["kwargs"]["tasks"] if isinstance(header, Mapping) and "kwargs" in header
                     else header if isinstance(header, list) else [header]):
            check_signature(part, where)
        check_signature(inner.get("body"), where)
    elif kind is not None:
        raise InvalidTaskError(f"{where}: unknown subtask_type {kind!r}")
    return signature(dict(item))


def _lineage(request: Mapping[str, Any]) -> dict[str, Any]:
    task_id = request.get("id")
    return {"parent_id": task_id, "root_id": request.get("root_id") or task_id}


def _reply_to(sig: Signature, reply_to: str | None) -> Signature:
    """Give every task of ``sig`` a reply queue if it has none: the one the finished task replied to.

    Celery replies to the worker's own (undeclared) queue there, which loses the result; see
    docs/celery-mapping.md.
    """
    if isinstance(sig, (_chain, group)):
        for part in sig.tasks:
            _reply_to(part, reply_to)
    elif isinstance(sig, _chord):
        header = sig["kwargs"]["header"]
        _reply_to(header if isinstance(header, Signature) else group(*header), reply_to)
        _reply_to(sig.body, reply_to)
    elif reply_to:
        sig.options.setdefault("reply_to", reply_to)
    return sig


def _on_success(app: Any, request: Mapping[str, Any], retval: Any, callbacks: list[Signature],
                steps: list[Signature]) -> list[Any]:
    reply_to = request.get("reply_to")
    sent = []
    if callbacks:
        head = callbacks[0] if len(callbacks) == 1 else group(*callbacks, app=app)
        sent.append(send(_reply_to(bind_app(head, app), reply_to), (retval,), {}, _lineage(request)))
    if steps:
        step = _reply_to(bind_app(steps[-1], app), reply_to)
        rest = [dict(s) for s in steps[:-1]]
        sent.append(send(step, (retval,), {}, {**_lineage(request), "chain": rest}))
    return [result.as_tuple() for result in sent if result is not None]


def bind_app(sig: Signature, app: Any) -> Signature:
    sig._app = app
    for part in getattr(sig, "tasks", ()):
        bind_app(part, app)
    return sig


def _on_failure(app: Any, task: Any, request: Mapping[str, Any], outcome: Outcome,
                steps: list[Signature], errbacks: list[Signature]) -> None:
    for step in steps:
        for target in failure_targets(step):
            task_id = target.options.get("task_id")
            if task_id:
                meta = protocol.result_meta(task_id, states.FAILURE, outcome.value,
                                            traceback=outcome.traceback,
                                            group_id=target.options.get("group_id"))
                store_result_meta(app, task_id, meta, target.options.get("reply_to")
                                  or request.get("reply_to"))
    call_errbacks(app, request, outcome.value, outcome.traceback, errbacks)


def failure_targets(step: Signature) -> list[Signature]:
    """The tasks whose results a client waits on in ``step``: a chord's body, every member of a group
    (Celery stores the failure under the group's own id, where no ``GroupResult.get()`` looks)."""
    if isinstance(step, _chord):
        return failure_targets(step.body)
    if isinstance(step, (_chain, group)):
        return [t for part in step.tasks for t in failure_targets(part)]
    return [step]


def call_errbacks(app: Any, request: Mapping[str, Any], exc: BaseException, traceback: str | None,
                  errbacks: list[Signature]) -> None:
    """Call new-style errbacks here (errors logged, swallowed); send the old-style ones as one group."""
    old = []
    for errback in errbacks:
        task = app.tasks.get(errback.task) if errback.subtask_type is None else None
        if task is None or not _new_style(task, errback):
            old.append(bind_app(errback, app))
            continue
        args = errback.args if errback.immutable else (Context(request), exc, traceback, *errback.args)
        try:
            task(*args, **errback.kwargs)
        except Exception:  # noqa: BLE001 - an errback must not change the task's outcome
            logger.exception("Errback %r raised an exception", errback.task)
    if old:
        errgroup = _reply_to(group(*old, app=app), request.get("reply_to"))
        send(errgroup, (request.get("id"),), {}, _lineage(request))


def _new_style(task: Any, errback: Signature) -> bool:
    """Celery's rule: a function task that takes more than one positional argument after its stored
    args. Unlike Celery, a bound task (``bind=True``) counts too: ``self`` is not an argument here."""
    if getattr(type(task), "__wrapped__", None) is None:
        return False
    try:
        params = list(inspect.signature(task.run).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) - len(errback.args) > 1


def store_result_meta(app: Any, task_id: str, meta: dict[str, Any], reply_to: str | None) -> None:
    """Store a result meta for ``task_id``: into the backend's store, or as an rpc reply to ``reply_to``."""
    backend = app.backend
    serializer = app.conf.result_serializer
    content_type, encoding, body = serialization.dumps(meta, serializer)
    if hasattr(backend, "store_encoded"):
        backend.store_encoded(task_id, body)
    elif reply_to and backend.url == "rpc://":
        app.broker.publish(body, {"content_type": content_type, "content_encoding": encoding,
                                  "correlation_id": task_id, "delivery_mode": 1, "priority": 0,
                                  "headers": {}}, exchange="", routing_key=reply_to)


def follow_eager(task: Any, request: Mapping[str, Any], outcome: Outcome,
                 options: Mapping[str, Any]) -> None:
    """Eager mode: run ``link`` callbacks with the result, or the ``link_error`` errbacks, right here."""
    links = [signature(dict(s)) for s in _as_list(options.get("link"))]
    errbacks = [signature(dict(s)) for s in _as_list(options.get("link_error"))]
    app = task.app
    if outcome.state == states.SUCCESS:
        for callback in links:
            apply(bind_app(callback, app), (outcome.value,), {}, {})
    elif outcome.state == states.FAILURE:
        for errback in errbacks:
            found = app.tasks.get(errback.task)
            if found is not None and _new_style(found, errback):
                call_errbacks(app, request, outcome.value, outcome.traceback, [errback])
            else:
                apply(bind_app(errback, app), (request.get("id"),), {}, {})


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
