"""Result handles: ``AsyncResult`` for a task sent to a worker, ``EagerResult`` for one run here.

``AsyncResult`` asks the app's result backend for the task's latest state and rebuilds a failure as the
original exception. ``parent`` links the steps of a chain (built when it is sent) and ``children``
rebuilds what the task sent, from its result; groups of results are :mod:`.resultset`'s. Celery's
counterpart is ``celery.result``; left out are ``forget()`` with a store and ``follow_parents``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import _state, protocol, states
from .exceptions import TaskRevokedError

__all__ = ["AsyncResult", "EagerResult"]

_SYNC_SUBTASK_MESSAGE = (
    "Never call result.get() within a task!\n"
    "See https://docs.celeryq.dev/en/latest/userguide/tasks.html#avoid-launching-synchronous-subtasks\n"
)


class AsyncResult:
    """The pending result of a task sent to a worker.

    Args:
        id: the task id.
        backend: the result backend to ask (default: the app's).
        task_name: the task's name, when known.
        app: the app (default: the current app).
        ignored: the task was sent with ``ignore_result``; ``get()`` returns None at once.
        parent: the result of the previous step of a chain, else None.
    """

    app: Any = None
    parent: Any = None

    def __init__(self, id: str, backend: Any = None, task_name: str | None = None,  # noqa: A002
                 app: Any = None, ignored: bool = False, parent: Any = None) -> None:
        self.id = id
        self.parent = parent
        self.app = app or self.app or _state.get_current_app()
        self._backend = backend
        self.name = task_name
        self.ignored = ignored
        self._meta: dict[str, Any] | None = None

    @property
    def backend(self) -> Any:
        """The result backend this handle reads from."""
        return self._backend or self.app.backend

    @property
    def task_id(self) -> str:
        """The task id (an alias of ``id``)."""
        return self.id

    def _latest(self) -> dict[str, Any] | None:
        if self._meta is None or self._meta["status"] not in states.READY_STATES:
            meta = self.backend.get_meta(self.id)
            if meta is not None:
                self._meta = meta
        return self._meta

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            disable_sync_subtasks: bool = True, **_: Any) -> Any:
        """Wait for the task to finish and return its result.

        Raises the task's exception (rebuilt) when it failed and ``propagate`` is true; with
        ``propagate=False`` the exception is returned. Raises ``TimeoutError`` after ``timeout`` s.
        """
        if self.ignored:
            return None
        if disable_sync_subtasks and _state.get_current_task() is not None \
                and not getattr(_state.get_current_task().request, "called_directly", True):
            raise RuntimeError(_SYNC_SUBTASK_MESSAGE)
        if self._meta is None or self._meta["status"] not in states.READY_STATES:
            self._meta = self.backend.wait_for(self.id, timeout=timeout, interval=interval)
        if propagate and self.state in states.PROPAGATE_STATES:
            raise self.result
        return self.result

    wait = get

    @property
    def state(self) -> str:
        """The latest known state: PENDING until the worker reports something."""
        meta = self._latest()
        return meta["status"] if meta else states.PENDING

    status = state

    @property
    def result(self) -> Any:
        """The return value, or the exception for a failed task, or None while pending."""
        meta = self._latest()
        if not meta:
            return None
        value = meta.get("result")
        if meta["status"] in states.EXCEPTION_STATES and isinstance(value, dict) and "exc_type" in value:
            return protocol.meta_to_exception(value)
        if meta["status"] == states.REVOKED and value is None:
            return TaskRevokedError("revoked")
        return value

    info = result

    @property
    def traceback(self) -> str | None:
        """The formatted traceback of a failure, else None."""
        meta = self._latest()
        return meta.get("traceback") if meta else None

    @property
    def date_done(self) -> datetime | None:
        """When the task finished (an aware datetime), else None."""
        meta = self._latest()
        done = meta.get("date_done") if meta else None
        return protocol.parse_iso(done) if done else None

    @property
    def children(self) -> list[Any]:
        """The results of what the task sent (next chain step, callbacks), rebuilt from its result."""
        from .resultset import result_from_tuple  # same layer; results of several tasks live there

        meta = self._latest()
        return [result_from_tuple(child, self.app) for child in meta.get("children") or ()] if meta else []

    def ready(self) -> bool:
        """True once the task has finished (SUCCESS, FAILURE or REVOKED)."""
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        """True when the task finished with SUCCESS."""
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        """True when the task finished with FAILURE."""
        return self.state == states.FAILURE

    def forget(self) -> None:
        """Drop the cached state (the rpc backend stores nothing else)."""
        self._meta = None

    def revoke(self, connection: Any = None, terminate: bool = False, signal: str | None = None,
               wait: bool = False, timeout: float | None = None) -> None:
        """Revoke the task on every worker (``terminate``: also kill it if running); with ``wait``, wait
        up to ``timeout`` s for the workers' replies. See ``app.control.revoke``."""
        self.app.control.revoke(self.id, terminate=terminate, signal=signal or "SIGTERM", reply=wait,
                                timeout=timeout or 1.0)

    def as_tuple(self) -> tuple[tuple[str, Any], None]:
        """Celery's tuple form of a result, as used in a message's ``children``: ``((id, parent), None)``."""
        return (self.id, self.parent.as_tuple() if self.parent is not None else None), None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)


class EagerResult(AsyncResult):
    """The result of a task run here (``apply()`` or ``task_always_eager``); it is ready at once."""

    def __init__(self, id: str, ret_value: Any, state: str, traceback: str | None = None,  # noqa: A002
                 name: str | None = None) -> None:
        self.id = id
        self.parent = None
        self.name = name
        self.ignored = False
        self._result = ret_value
        self._state = state
        self._traceback = traceback
        self._meta = {"status": state, "result": ret_value, "traceback": traceback, "children": [],
                      "date_done": None, "task_id": id}

    def _latest(self) -> dict[str, Any] | None:
        return self._meta

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            disable_sync_subtasks: bool = True, **_: Any) -> Any:
        """Return the result, raising the task's exception when it failed and ``propagate`` is true."""
        if propagate and self._state in states.PROPAGATE_STATES:
            raise self._result
        return self._result

    wait = get

    @property
    def result(self) -> Any:
        """The return value, or the exception of a failed run."""
        return self._result

    info = result

    @property
    def state(self) -> str:
        """SUCCESS, FAILURE (or RETRY/IGNORED/REJECTED for the rarer outcomes)."""
        return self._state

    status = state

    @property
    def traceback(self) -> str | None:
        """The formatted traceback of a failure, else None."""
        return self._traceback
