"""The ``celery.*`` tasks every app registers, because they appear on the wire in canvas flows.

* ``celery.chord_unlock``: sent with a chord on a backend without native chord counting (``file://``).
  It polls the header results; while one is not ready it retries itself (1 s apart by default); then it
  sends the body with the list of header values, or stores ``ChordError`` under the body's id and calls
  the body's errbacks when a header task failed.
* ``celery.accumulate``: returns its arguments (or one of them): a chord body Celery uses for
  ``Task.replace(group)``.
* ``celery.map``, ``celery.starmap``: what a Celery client's ``task.map(items)``, ``task.starmap(items)``
  and ``task.chunks(items, n)`` send; the task is called here, once per item (``task(item)``,
  ``task(*item)``), and the list of values is the result.
* ``celery.chain``, ``celery.group``, ``celery.chord``: names only, the ``task`` of a composite signature;
  running one is an error, as in Celery.

Celery's counterpart is ``celery.app.builtins``; left out are ``celery.chunks`` (Celery's client sends
chunks as ``celery.starmap`` messages) and ``celery.backend_cleanup``. minicelery's own client has no
``map``/``starmap``/``chunks`` primitives: the tasks are here so that a Celery client's work runs.

Registering the tasks (``import minicelery`` connects ``add_builtin_tasks`` to every app's finalize)
needs only their names and options; what they run (the canvas, its follow-up, the results of several
tasks) is imported when one of them first runs, so that an app that never meets a canvas never loads it.
"""

from __future__ import annotations

import logging
import traceback as tb
from typing import Any

from . import _state, states
from .exceptions import ChordError

__all__ = ["add_builtin_tasks"]

logger = logging.getLogger(__name__)

#: Celery's default of ``result_chord_retry_interval``: seconds between two polls of a chord's header.
CHORD_RETRY_INTERVAL = 1.0


def add_builtin_tasks(app: Any) -> None:
    """Register the ``celery.*`` tasks in ``app`` (called when any app finalizes)."""

    @app.task(name="celery.chord_unlock", shared=False, lazy=False, bind=True, ignore_result=True,
              max_retries=None, default_retry_delay=CHORD_RETRY_INTERVAL)
    def unlock_chord(self: Any, group_id: str, body: Any, interval: float | None = None,
                     max_retries: int | None = None, result: Any = None, **kwargs: Any) -> None:
        return _unlock_chord(self, group_id, body, interval, max_retries, result)

    @app.task(name="celery.accumulate", shared=False, lazy=False)
    def accumulate(*args: Any, index: int | None = None) -> Any:
        return args[index] if index is not None else args

    @app.task(name="celery.map", shared=False, lazy=False)
    def xmap(task: Any, it: Any) -> list[Any]:
        from .followup import check_signature

        run = check_signature(task, "celery.map task").type
        return [run(item) for item in it]

    @app.task(name="celery.starmap", shared=False, lazy=False)
    def xstarmap(task: Any, it: Any) -> list[Any]:
        from .followup import check_signature

        run = check_signature(task, "celery.starmap task").type
        return [run(*item) for item in it]

    for kind in ("chain", "group", "chord"):
        _add_name_only(app, kind)


def _add_name_only(app: Any, kind: str) -> None:
    def run(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{kind} is not a real task")

    run.__name__ = kind
    app.task(name=f"celery.{kind}", shared=False, lazy=False)(run)


def _unlock_chord(task: Any, group_id: str, body: Any, interval: float | None, max_retries: int | None,
                  result: Any) -> None:
    from .canvas_send import send
    from .followup import bind_app, check_signature
    from .resultset import result_from_tuple

    app = task.app
    body = bind_app(check_signature(body, "celery.chord_unlock body"), app)
    header = [result_from_tuple(item, app) for item in result or ()]
    if not all(member.ready() for member in header):
        conf = app.conf
        countdown = interval if interval is not None else conf.get("result_chord_retry_interval",
                                                                   CHORD_RETRY_INTERVAL)
        raise task.retry(countdown=countdown, max_retries=max_retries)
    try:
        values = [member.get(propagate=True, disable_sync_subtasks=False) for member in header]
    except Exception as exc:  # noqa: BLE001 - a header task failed: the body gets ChordError
        logger.error("Chord %r raised: %r", group_id, exc)
        _fail_body(app, task, body, ChordError(repr(exc)))
        return None
    send(body, (values,), {}, {})
    return None


def _fail_body(app: Any, task: Any, body: Any, error: ChordError) -> None:
    """Store ``error`` as the FAILURE of the body (every task id it holds) and call its errbacks."""
    from . import protocol
    from .followup import call_errbacks, check_signature, failure_targets, store_result_meta

    trace = "".join(tb.format_exception(type(error), error, None))
    request = task.request
    for target in failure_targets(body):
        task_id = target.options.get("task_id")
        if task_id:
            meta = protocol.result_meta(task_id, states.FAILURE, error, traceback=trace)
            store_result_meta(app, task_id, meta, target.options.get("reply_to") or request.reply_to)
    errbacks = [check_signature(e, "chord body link_error") for e in body.options.get("link_error") or ()]
    body_request = {"id": body.id, "root_id": request.root_id, "reply_to": body.options.get("reply_to"),
                    "args": [], "kwargs": {}}
    call_errbacks(app, body_request, error, trace, errbacks)


_state.connect_on_app_finalize(add_builtin_tasks)
