"""Running one task to an outcome: the request is pushed, handlers fire, the result is classified.

Both ``Task.apply()`` (eager mode) and the worker's child processes use :func:`run_task`, so a task
behaves the same in both. Celery's counterpart is ``celery.app.trace.build_tracer`` — a 345-line closure
there, three small functions here; what the canvas asks for after a run (next chain step, callbacks,
errbacks) is followup.py's. Left out: task events and signals.
"""

from __future__ import annotations

import inspect
import logging
import time
import traceback as tb
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _state, serialization, states
from .exceptions import Ignore, Reject, Retry

__all__ = ["Outcome", "run_task", "signature_checker", "round_trip"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How one run ended.

    Attributes:
        state: SUCCESS, FAILURE, RETRY, IGNORED or REJECTED.
        value: the return value, or the exception (for RETRY: the cause given to ``retry``, or None).
        traceback: the formatted traceback for FAILURE and RETRY, else None.
        runtime: seconds spent in the task body.
        retry: the ``Retry`` raised, for RETRY.
        requeue: for REJECTED, whether the task asked to requeue its message.
    """

    state: str
    value: Any
    traceback: str | None
    runtime: float
    retry: Retry | None = None
    requeue: bool = False


def run_task(task: Any, args: Any, kwargs: Any, request: dict[str, Any], *, eager: bool = False) -> Outcome:
    """Run ``task`` with ``args``/``kwargs`` under ``request`` and return how it ended; never raises.

    In eager mode a retry runs again here at once, as Celery's ``apply`` does.
    """
    while True:
        outcome = _run_once(task, args, kwargs, request)
        if not (eager and outcome.state == states.RETRY and outcome.retry is not None
                and outcome.retry.sig is not None):
            return outcome
        args, kwargs, retries = outcome.retry.sig
        request = {**request, "retries": retries}


def _run_once(task: Any, args: Any, kwargs: Any, request: dict[str, Any]) -> Outcome:
    task_id = request.get("id")
    _state.push_task(task)
    task.push_request(request, args=args, kwargs=kwargs)
    started = time.monotonic()
    try:
        task.before_start(task_id, args, kwargs)
        body = task if _has_custom_call(task) else task.run
        retval = body(*args, **kwargs)
    except Retry as exc:
        outcome = Outcome(states.RETRY, exc.exc, _format(exc), time.monotonic() - started, retry=exc)
        _call_handler(task.on_retry, exc, task_id, args, kwargs, outcome.traceback)
    except Ignore:
        outcome = Outcome(states.IGNORED, None, None, time.monotonic() - started)
    except Reject as exc:
        outcome = Outcome(states.REJECTED, exc, None, time.monotonic() - started, requeue=exc.requeue)
    except BaseException as exc:  # noqa: BLE001 - a task may raise anything, SystemExit included
        if isinstance(exc, KeyboardInterrupt):
            raise
        outcome = Outcome(states.FAILURE, exc, _format(exc), time.monotonic() - started)
        _call_handler(task.on_failure, exc, task_id, args, kwargs, outcome.traceback)
    else:
        outcome = Outcome(states.SUCCESS, retval, None, time.monotonic() - started)
        _call_handler(task.on_success, retval, task_id, args, kwargs)
    finally:
        task.pop_request()
        _state.pop_task()
    _call_handler(task.after_return, outcome.state, outcome.value, task_id, args, kwargs,
                  outcome.traceback)
    return outcome


def _has_custom_call(task: Any) -> bool:
    # A base class may override __call__ (Celery's documented DebugTask pattern); honour it.
    return not getattr(type(task).__call__, "default_task_call", False)


def _call_handler(handler: Callable[..., Any], *args: Any) -> None:
    try:
        handler(*args)
    except Exception:  # a broken handler must not change the task's outcome
        logger.exception("Task handler %r raised", handler)


def _format(exc: BaseException) -> str:
    return "".join(tb.format_exception(type(exc), exc, exc.__traceback__))


class _Default:
    def __repr__(self) -> str:
        return "_DEFAULT"


def signature_checker(fun: Callable[..., Any]) -> Callable[..., None]:
    """Return a function with ``fun``'s parameters and an empty body.

    Calling it with wrong arguments raises the very ``TypeError`` Python would raise for ``fun``
    (``add() missing 1 required positional argument: 'y'``), which is what Celery reports at
    ``delay()`` time. The stub is generated from ``fun``'s own signature, never from outside input.
    """
    try:
        signature = inspect.signature(fun)
    except (TypeError, ValueError):
        return lambda *args, **kwargs: None
    default = _Default()
    params = [p.replace(annotation=p.empty, default=p.empty if p.default is p.empty else default)
              for p in signature.parameters.values()]
    name = getattr(fun, "__name__", "task")
    if not name.isidentifier():
        name = "task"
    source = f"def {name}{signature.replace(parameters=params, return_annotation=inspect.Signature.empty)}:" \
             f"\n    pass\n"
    namespace: dict[str, Any] = {"_DEFAULT": default}
    try:
        exec(compile(source, f"<signature of {name}>", "exec"), namespace)  # noqa: S102
    except SyntaxError:  # pragma: no cover - exotic signatures: skip the check
        return lambda *args, **kwargs: None
    return namespace[name]


def round_trip(args: Any, kwargs: Any, serializer: str) -> tuple[Any, Any]:
    """Encode and decode the arguments, so eager runs see what a worker would see."""
    content_type, encoding, body = serialization.dumps([list(args), dict(kwargs)], serializer)
    decoded = serialization.loads(body, content_type, encoding, accept=[content_type])
    return tuple(decoded[0]), dict(decoded[1])
