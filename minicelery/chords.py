"""The chord: a group (the header) whose list of results is given to one more task (the body).

``chord([add.s(1, 1), add.s(2, 2)], tsum.s())`` is a signature like the others (``subtask_type``
``'chord'``); ``group | task`` and a group followed by a step in a chain become one. Applying it needs a
result backend that can join results (``file://`` here), see :mod:`.canvas_send` and
:mod:`.builtin_tasks`. Celery's counterpart is ``celery.canvas._chord``. The module is ``chords``: importing
a module named ``chord`` would set the package's ``chord``, the name that ``minicelery`` exports lazily.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .canvas import Signature, _chain, group, maybe_signature

__all__ = ["chord"]


class _chord(Signature):  # noqa: N801 - Celery's name
    """A group (the header) whose list of results is passed to one more task (the body)."""

    def __init__(self, header: Any = (), body: Any = None, args: Any = None, kwargs: Any = None,
                 app: Any = None, **options: Any) -> None:
        if isinstance(header, Mapping):
            header = maybe_signature(header, app=app)  # a group (dict): kept as a group, as in Celery
        else:
            header = [maybe_signature(t, app=app) for t in header]  # a list stays a list on the wire
        if body is not None:
            body = maybe_signature(body, app=app)
            if isinstance(body, _chain) and len(body.tasks) == 1 and not body.options:
                body = body.tasks[0]  # a chain of one is that task: keeps `|` associative
        super().__init__("celery.chord", (), {"kwargs": dict(kwargs or {}), "header": header, "body": body},
                         options, subtask_type="chord", app=app)

    @classmethod
    def _from_dict(cls, d: dict[str, Any], app: Any = None) -> Signature:
        inner = d.get("kwargs", {})
        header = inner.get("header") or []
        header = maybe_signature(header, app=app) if isinstance(header, Mapping) else \
            [maybe_signature(t, app=app) for t in header]
        new = cls(header, inner.get("body"), kwargs=inner.get("kwargs"), app=app)
        new["options"] = dict(d.get("options") or {})
        new["immutable"] = bool(d.get("immutable"))
        return new

    @property
    def tasks(self) -> list[Signature]:
        """The header's tasks."""
        header = self["kwargs"]["header"]
        return header.tasks if isinstance(header, group) else list(header)

    @property
    def body(self) -> Signature:
        """The task given the header's results."""
        return self["kwargs"]["body"]

    def __call__(self, body: Any = None, **options: Any) -> Any:
        """``chord(header)(body)``: apply the chord with this body."""
        if body is not None:
            self["kwargs"]["body"] = maybe_signature(body, app=self._app)
        return self.apply_async((), {}, **options)

    def link(self, callback: Mapping[str, Any]) -> Any:
        """Callbacks of a chord belong to its body."""
        return self.body.link(callback)

    def link_error(self, errback: Mapping[str, Any]) -> Any:
        """Errbacks of a chord belong to its body."""
        return self.body.link_error(errback)

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, Signature):
            new = self.clone()
            new["kwargs"]["body"] = self.body.clone() | other
            return new
        return NotImplemented

    def __repr__(self) -> str:
        tasks = ", ".join(repr(t) for t in self.tasks)
        if self.body is None:
            return f"chord(({tasks}))"
        prefix = self.body.task.rpartition(".")[0]
        return f"%{self.body.task}(({tasks.replace(prefix + '.', '') if prefix else tasks}))"


chord = _chord
Signature.TYPES["chord"] = _chord
