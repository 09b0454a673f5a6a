"""Results of several tasks at once: ``ResultSet``, and ``GroupResult`` (a result set with a group id).

``GroupResult.get()`` returns the members' values in the group's order, whatever order they finished
in. ``result_from_tuple`` rebuilds a result from Celery's tuple form, the one a result's ``children``
and ``celery.chord_unlock``'s ``result`` argument use. Celery's counterpart is ``celery.result``; left
out are ``join_native`` as a separate path (it is ``join``), ``iter_native`` and ``collect``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from . import _state

__all__ = ["GroupResult", "ResultSet", "result_from_tuple"]


class ResultSet:
    """A list of results, waited on together.

    Args:
        results: the member results (``AsyncResult``, or nested ``GroupResult``).
        app: the app (default: the current app).
    """

    def __init__(self, results: list[Any], app: Any = None, **_: Any) -> None:
        self.results = list(results)
        self._app = app

    @property
    def app(self) -> Any:
        """The app these results belong to."""
        return self._app or _state.get_current_app()

    @property
    def children(self) -> list[Any]:
        """The member results (Celery's alias of ``results``)."""
        return self.results

    def add(self, result: Any) -> None:
        """Add a member (once)."""
        if result not in self.results:
            self.results.append(result)

    def remove(self, result: Any) -> None:
        """Remove a member (``KeyError`` if absent)."""
        try:
            self.results.remove(result)
        except ValueError:
            raise KeyError(result) from None

    def discard(self, result: Any) -> None:
        """Remove a member if present."""
        if result in self.results:
            self.results.remove(result)

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            **options: Any) -> list[Any]:
        """Wait for every member and return their values in order (see :meth:`join`)."""
        return self.join(timeout=timeout, propagate=propagate, interval=interval, **options)

    def join(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
             **options: Any) -> list[Any]:
        """Wait for every member in order; raise the first failure when ``propagate`` is true.

        ``timeout`` bounds the whole wait, not each member (``TimeoutError`` when it runs out).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(result.get(timeout=remaining, propagate=propagate, interval=interval, **options))
        return values

    join_native = join

    def ready(self) -> bool:
        """True once every member has finished."""
        return all(result.ready() for result in self.results)

    def successful(self) -> bool:
        """True when every member succeeded."""
        return all(result.successful() for result in self.results)

    def failed(self) -> bool:
        """True when any member failed."""
        return any(result.failed() for result in self.results)

    def waiting(self) -> bool:
        """True while any member has not finished."""
        return not self.ready()

    def completed_count(self) -> int:
        """How many members succeeded."""
        return sum(1 for result in self.results if result.successful())

    def revoke(self, connection: Any = None, terminate: bool = False, signal: Any = None,
               wait: bool = False, timeout: float | None = None) -> None:
        """Revoke every member that has not run yet, when the app can (it needs remote control)."""
        control = getattr(self.app, "control", None)
        if control is None:
            raise NotImplementedError("revoke needs remote control, which minicelery does not have yet")
        control.revoke([r.id for r in self.results], terminate=terminate, signal=signal)

    @property
    def supports_native_join(self) -> bool:
        """Whether the backend pushes results (rpc) rather than being polled."""
        return bool(getattr(self.app.backend, "supports_native_join", False))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """The result of a group: its id and its members' results, in the group's order.

    Args:
        id: the group id (the ``group`` header of every member).
        results: the members' results.
        parent: the result of the step before the group, in a chain.
    """

    def __init__(self, id: str | None = None, results: list[Any] | None = None,  # noqa: A002
                 parent: Any = None, app: Any = None, **kwargs: Any) -> None:
        super().__init__(list(results or ()), app=app)
        self.id = id
        self.parent = parent

    def as_tuple(self) -> tuple[Any, Any]:
        """Celery's tuple form: ``((id, parent tuple), [member tuples])``."""
        parent = self.parent.as_tuple() if self.parent is not None else None
        return (self.id, parent), [r.as_tuple() for r in self.results]

    def save(self, backend: Any = None) -> Any:
        """Store the group (``celery-taskset-meta-<id>``) so :meth:`restore` finds it."""
        backend = backend or self.app.backend
        if not hasattr(backend, "save_group"):
            raise NotImplementedError("save_group is not supported by this backend.")
        return backend.save_group(self.id, self)

    @classmethod
    def restore(cls, id: str, backend: Any = None, app: Any = None) -> GroupResult | None:  # noqa: A002
        """Read back a group stored with :meth:`save` (None if there is none)."""
        app = app or _state.get_current_app()
        backend = backend or app.backend
        if not hasattr(backend, "restore_group"):
            raise NotImplementedError("restore_group is not supported by this backend.")
        return backend.restore_group(id)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


def result_from_tuple(value: Any, app: Any = None) -> Any:
    """Rebuild a result from its tuple form: ``((id, parent), None)`` or ``((gid, parent), [members])``.

    Raises:
        ValueError: ``value`` is not in that form.
    """
    app = app or _state.get_current_app()
    try:
        (task_id, parent), nodes = value
    except (TypeError, ValueError):
        raise ValueError(f"not a result tuple ((id, parent), children): {value!r:.200}") from None
    parent_result = result_from_tuple(parent, app) if parent else None
    if nodes is not None:
        members = [result_from_tuple(node, app) for node in nodes]
        return GroupResult(task_id, members, parent=parent_result, app=app)
    return app.AsyncResult(task_id, parent=parent_result)

