"""Signatures and the canvas: a task call as data, and chain, group and chord built from such calls.

A :class:`Signature` is a dict with Celery's six keys (``task``, ``args``, ``kwargs``, ``options``,
``subtask_type``, ``immutable``), so it travels inside a task message's embed exactly as Celery's does.
``chain`` and ``group`` (and ``chord``, in :mod:`.chords`) are signatures too, told apart by
``subtask_type``; :func:`signature` turns a dict back into the right class. Sending them
(``apply_async``) lives in :mod:`.canvas_send`, so this module holds only the data and the ``|``
algebra. Celery's counterpart is ``celery.canvas``; left out are ``map``/``starmap``/``chunks``,
stamping, ``Task.replace`` and ``chord_size``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from . import _state
from .message import new_task_id

__all__ = ["Signature", "chain", "flatten_chain", "group", "maybe_signature", "signature", "subtask"]


class Signature(dict):
    """One task call as data: ``add.s(2, 2)`` is ``Signature('proj.add', (2, 2))``.

    Args:
        task: a task name, a task object, or a signature dict to copy.
        args, kwargs: the arguments (partial: ``apply_async`` may prepend args and add kwargs).
        options: ``apply_async`` options (``queue``, ``countdown``, ``link``, ...).
        subtask_type: None for a task; ``'chain'``, ``'group'`` or ``'chord'`` for the composites.
        immutable: ignore the result of a previous step instead of prepending it to ``args``.
        app: the app to send with (default: the task's app, else the current app).
    """

    #: ``subtask_type`` → class, filled as the composite classes are defined.
    TYPES: dict[str | None, type[Signature]] = {}

    def __init__(self, task: Any = None, args: Iterable[Any] | None = None,
                 kwargs: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
                 type: Any = None, subtask_type: str | None = None,  # noqa: A002 - Celery's name
                 immutable: bool = False, app: Any = None, **ex: Any) -> None:
        self._app = app
        self._type = None
        if isinstance(task, dict):  # a copy of a signature dict (after a trip over the wire)
            super().__init__(task)
            self.setdefault("options", {})
            self.setdefault("subtask_type", None)
            self.setdefault("immutable", False)
            return
        self._type = task if task is not None and not isinstance(task, str) else type
        name = task if isinstance(task, str) or task is None else task.name
        super().__init__(task=name, args=tuple(args or ()), kwargs=dict(kwargs or {}),
                         options=dict(options or {}, **ex), subtask_type=subtask_type,
                         immutable=bool(immutable))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: Any = None) -> Signature:
        """Rebuild a signature of the class ``d['subtask_type']`` names."""
        klass = Signature.TYPES.get(d.get("subtask_type"), Signature)
        return klass._from_dict(dict(d), app=app)

    @classmethod
    def _from_dict(cls, d: dict[str, Any], app: Any = None) -> Signature:
        return cls(d, app=app)

    # -- the keys, as attributes --------------------------------------------------------------------

    task = property(lambda self: self["task"], doc="The task name.")
    name = task
    args = property(lambda self: self["args"], doc="The positional arguments.")
    kwargs = property(lambda self: self["kwargs"], doc="The keyword arguments.")
    options = property(lambda self: self["options"], doc="The ``apply_async`` options.")
    subtask_type = property(lambda self: self["subtask_type"], doc="None, 'chain', 'group' or 'chord'.")
    immutable = property(lambda self: self["immutable"], doc="Whether a previous result is ignored.")

    @property
    def id(self) -> str | None:
        """The task id once frozen (``options['task_id']``), else None."""
        return self.options.get("task_id")

    @property
    def app(self) -> Any:
        """The app this signature is sent with."""
        own = getattr(self, "_app", None) or self._app_of_parts()
        task = getattr(self, "_type", None)
        return own or (task.app if task is not None else _state.get_current_app())

    def _app_of_parts(self) -> Any:
        """A composite built from signatures of one app (``chord(header, body)``) is sent with that app."""
        inner = self.get("kwargs") if self.get("subtask_type") else None
        if not isinstance(inner, dict):
            return None
        parts = [*inner.get("tasks", ()), *(inner.get("header") or ()), inner.get("body")]
        found = (part.app for part in parts if isinstance(part, Signature))
        return next(found, None)

    @property
    def type(self) -> Any:
        """The task object, looked up in the app by name (raises ``NotRegistered``)."""
        return getattr(self, "_type", None) or self.app.tasks[self.task]

    # -- building -------------------------------------------------------------------------------------

    def clone(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **opts: Any) -> Signature:
        """A copy with ``args`` prepended and ``kwargs``/``opts`` merged (args ignored if immutable).

        Options and keyword arguments are copied deeply: a chain's, group's or chord's members live in its
        kwargs, and sending the copy freezes ids into them, which must not reach the original (a group sent
        twice would send the same ids twice). Positional arguments stay the caller's values, as in Celery.
        """
        merged_args, merged_kwargs, options = self._merge(args, kwargs, opts)
        new = type(self)._from_dict({**self, "args": merged_args, "kwargs": copy.deepcopy(merged_kwargs),
                                     "options": copy.deepcopy(options)}, app=getattr(self, "_app", None))
        new._type = getattr(self, "_type", None)
        return new

    def _merge(self, args: Iterable[Any] | None, kwargs: Mapping[str, Any] | None,
               options: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        """Partial application, Celery's rule: ``(new args + own args, own kwargs | new kwargs)``."""
        merged_options = {**self.options, **options}
        if self.immutable:
            return tuple(self.args), dict(self.kwargs), merged_options
        return (tuple(args or ()) + tuple(self.args), {**self.kwargs, **dict(kwargs or {})},
                merged_options)

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options (and immutability) in place; returns the signature, for chaining calls."""
        if immutable is not None:
            self["immutable"] = bool(immutable)
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        """Make the signature ignore (True) or take (False) a previous step's result."""
        self["immutable"] = bool(immutable)

    def link(self, callback: Mapping[str, Any]) -> Any:
        """Add a callback applied with this task's result after it succeeds; returns the callback."""
        return self._append_option("link", callback)

    def link_error(self, errback: Mapping[str, Any]) -> Any:
        """Add an errback applied when this task fails; returns the errback."""
        return self._append_option("link_error", errback)

    def on_error(self, errback: Mapping[str, Any]) -> Signature:
        """Like :meth:`link_error`, but return this signature (Celery's chaining form)."""
        self.link_error(errback)
        return self

    def _append_option(self, key: str, value: Mapping[str, Any]) -> Any:
        items = self.options.setdefault(key, [])
        if not isinstance(items, list):
            items = self.options[key] = list(items) if isinstance(items, tuple) else [items]
        if value not in items:
            items.append(value)
        return value

    def freeze(self, _id: str | None = None, group_id: str | None = None, chord: Any = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> Any:
        """Give the signature its task id and reply queue now, and return its future result.

        Celery's order of keys: ``task_id``, ``reply_to``, then ``group_id``, ``chord``, ``group_index``,
        ``root_id``, ``parent_id`` when given (a frozen id is kept).
        """
        options = self.options
        task_id = options.get("task_id") or _id or new_task_id()
        options["task_id"] = task_id
        options.setdefault("reply_to", self.app.reply_queue)
        if group_id and "group_id" not in options:
            options["group_id"] = group_id
        if chord:
            options["chord"] = chord
        if group_index is not None:
            options["group_index"] = group_index
        if root_id:
            options["root_id"] = root_id
        if parent_id:
            options["parent_id"] = parent_id
        return self.app.AsyncResult(task_id, task_name=self.task)

    # -- sending (see canvas_send) --------------------------------------------------------------------

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Send with these extra arguments: ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task here, in this process, with the merged arguments (no message)."""
        merged_args, merged_kwargs, _ = self._merge(args, kwargs, {})
        return self.type(*merged_args, **merged_kwargs)

    def apply_async(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> Any:
        """Send the task (or run it here under ``task_always_eager``) and return its result."""
        from .canvas_send import send  # same layer; the sending half of the canvas

        return send(self, args, kwargs, options)

    def apply(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """Run it here, eagerly, and return an ``EagerResult`` (or a ``GroupResult`` of them)."""
        from .canvas_send import apply

        return apply(self, args, kwargs, options)

    # -- the | operator -------------------------------------------------------------------------------

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, _chain):
            return _chain(self, *other.tasks, app=self._app)
        if isinstance(other, Signature):
            return _chain(self, other, app=self._app)
        return NotImplemented

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        new = type(self)._from_dict(copy.deepcopy(dict(self), memo), app=getattr(self, "_app", None))
        new._type = getattr(self, "_type", None)
        return new

    def __reduce__(self) -> tuple[Any, ...]:
        return signature, (dict(self),)

    def __repr__(self) -> str:
        return _reprcall(self)


def _reprcall(sig: Mapping[str, Any]) -> str:
    parts = [repr(a) for a in sig.get("args") or ()]
    parts += [f"{k}={v!r}" for k, v in (sig.get("kwargs") or {}).items()]
    return f"{sig.get('task')}({', '.join(parts)})"


class _chain(Signature):  # noqa: N801 - Celery's name
    """Steps run one after another, each given the previous result (``a | b | c``)."""

    def __init__(self, *tasks: Any, app: Any = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping) and not hasattr(tasks[0], "name"):
            tasks = tuple(tasks[0])  # chain([a, b]) and chain(generator)
        steps = flatten_chain([maybe_signature(t, app=app) for t in tasks])
        super().__init__("celery.chain", (), {"tasks": steps}, options, subtask_type="chain", app=app)

    @classmethod
    def _from_dict(cls, d: dict[str, Any], app: Any = None) -> Signature:
        return _steps_from_dict(cls, d, app)

    @property
    def tasks(self) -> list[Signature]:
        """The steps, in the order they run."""
        return self["kwargs"]["tasks"]

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, _chain):
            return _chain(*self.tasks, *other.tasks, app=self._app)
        if isinstance(other, Signature):
            return _chain(*self.tasks, other, app=self._app)
        return NotImplemented

    def __repr__(self) -> str:
        if not self.tasks:
            return f"<{type(self).__name__}: empty>"
        text = " | ".join(repr(t) for t in self.tasks)
        prefix = self.tasks[0].task.rpartition(".")[0]
        return text[: len(self.tasks[0].task)] + text[len(self.tasks[0].task):].replace(f"{prefix}.", "") \
            if prefix else text


class chain(_chain):  # noqa: N801 - Celery's name
    """``chain(a, b, c)``: a chain; applying a chain of one sends that one task (with ``chain: []``)."""


def _steps_from_dict(cls: Any, d: dict[str, Any], app: Any) -> Signature:
    """A chain or group rebuilt from its dict: its steps as signatures, the rest of the dict kept."""
    tasks = d.get("kwargs", {}).get("tasks") or ()
    new = cls(*[maybe_signature(t, app=app) for t in tasks], app=app)
    new.update({k: v for k, v in d.items() if k not in ("kwargs", "task")})
    new.setdefault("options", {})
    return new


def flatten_chain(steps: list[Signature]) -> list[Signature]:
    """Inline nested chains, and upgrade a group followed by another step to a chord, as Celery does."""
    flat: list[Signature] = []
    for step in steps:
        inner = step.tasks if isinstance(step, _chain) and not step.options else [step]
        for sig in inner:
            if flat and isinstance(flat[-1], group):
                flat[-1] = Signature.TYPES["chord"](flat[-1], body=sig, app=sig._app)
            elif flat and flat[-1].subtask_type == "chord":
                flat[-1] = flat[-1] | sig
            else:
                flat.append(sig)
    return flat


class group(Signature):  # noqa: N801 - Celery's name
    """Tasks run in parallel; the result is the list of their values, in the group's order."""

    def __init__(self, *tasks: Any, app: Any = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping) and not hasattr(tasks[0], "name"):
            tasks = tuple(tasks[0])  # group([a, b]) and group(generator)
        members = [maybe_signature(t, app=app) for t in tasks]
        super().__init__("celery.group", (), {"tasks": members}, options, subtask_type="group", app=app)

    @classmethod
    def _from_dict(cls, d: dict[str, Any], app: Any = None) -> Signature:
        return _steps_from_dict(cls, d, app)

    @property
    def tasks(self) -> list[Signature]:
        """The members, in order."""
        return self["kwargs"]["tasks"]

    def link(self, callback: Mapping[str, Any]) -> Any:
        """Link ``callback`` to the first member only, made immutable (Celery's rule)."""
        callback = maybe_signature(callback, app=self._app).clone().set(immutable=True)
        if self.tasks:
            self.tasks[0].link(callback)
        return callback

    def link_error(self, errback: Mapping[str, Any]) -> Any:
        """Give every member ``errback``."""
        for task in self.tasks:
            task.link_error(errback)
        return errback

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, Signature):
            return Signature.TYPES["chord"](self, body=other, app=self._app)
        return NotImplemented

    def __repr__(self) -> str:
        if not self.tasks:
            return "group(<empty>)"
        return f"group(({', '.join(repr(t) for t in self.tasks)}))"


Signature.TYPES.update({None: Signature, "chain": _chain, "group": group})  # chords.py adds "chord"


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """A signature from a task name (``signature('proj.add', args=(2, 2))``) or from a signature dict."""
    app = kwargs.pop("app", None)
    if isinstance(varies, dict):
        if isinstance(varies, Signature) and app is None:
            return varies.clone()
        return Signature.from_dict(varies, app=app)
    made = Signature(varies, *args, **kwargs)
    made._app = app
    return made


subtask = signature


def maybe_signature(d: Any, app: Any = None, clone: bool = False) -> Any:
    """``None`` stays None; a dict becomes (or stays) a signature of its class."""
    if d is None:
        return None
    if isinstance(d, Signature):
        if clone:
            d = d.clone()
        if app is not None and getattr(d, "_app", None) is None:
            d._app = app
        return d
    if isinstance(d, dict):
        return Signature.from_dict(d, app=app)
    return d  # a list, or something else: the caller checks

