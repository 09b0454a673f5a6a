"""``app.add_periodic_task()``: turning a signature and a schedule into an entry of ``beat_schedule``.

An entry is the dict a user would write in ``beat_schedule``: ``{schedule, task, args, kwargs, options}``.
It is keyed by the ``name`` given, else by ``repr(sig)``, so the same unnamed signature added twice keeps
only the last one (with Celery's warning). Nothing here knows schedules or beat: the entry is only stored,
and beat reads it. Celery's counterpart is ``Celery.add_periodic_task`` and its helpers in
``celery.app.base``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["PeriodicTasks", "entry_for", "add_entry"]

logger = logging.getLogger(__name__)


def entry_for(schedule: Any, sig: Any, args: Any = (), kwargs: Any = None, name: str | None = None,
              options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``(key, entry)`` for ``add_periodic_task(schedule, sig, args, kwargs, name, **options)``.

    ``sig`` is a signature (``task.s(...)``: ``args`` are prepended to its own by ``clone``) or anything
    with a task ``name``, such as a task itself.
    """
    kwargs = dict(kwargs) if kwargs else {}
    if callable(getattr(sig, "clone", None)):
        sig = sig.clone(tuple(args or ()), kwargs)
        task, args, kwargs = sig.name, tuple(sig.args), dict(sig.kwargs)
        base_options, key = dict(sig.options or {}), repr(sig)
    else:
        task, args, base_options = getattr(sig, "name", sig), tuple(args or ()), {}
        if not isinstance(task, str):
            raise TypeError(f"add_periodic_task() needs a signature or a task, not {sig!r}")
        shown = [repr(arg) for arg in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
        key = f"{task}({', '.join(shown)})"
    entry = {"schedule": schedule, "task": task, "args": args, "kwargs": kwargs,
             "options": {**base_options, **(options or {})}}
    return name or key, entry


def add_entry(conf: Any, key: str, entry: dict[str, Any], named: bool) -> None:
    """Store ``entry`` under ``key`` in ``conf.beat_schedule`` (an unnamed entry replaces its twin)."""
    schedule = conf.beat_schedule
    if not named and key in schedule:
        logger.warning("Periodic task key='%s' shadowed a previous unnamed periodic task. Pass a name kwarg "
                       "to add_periodic_task to silence this warning.", key)
    schedule[key] = entry


class PeriodicTasks:
    """An app's ``add_periodic_task`` calls: stored at once, or kept until the configuration is read."""

    def __init__(self) -> None:
        self.pending: deque[tuple[str, dict[str, Any], bool]] = deque()

    def add(self, conf: Any, schedule: Any, sig: Any, args: Any, kwargs: Any, name: str | None,
            options: Mapping[str, Any]) -> str:
        """Add one entry to ``conf.beat_schedule``, or to the pending ones when ``conf`` is None."""
        key, entry = entry_for(schedule, sig, args, kwargs, name, options)
        if conf is None:
            self.pending.append((key, entry, name is not None))
        else:
            add_entry(conf, key, entry, named=name is not None)
        return key

    def add_pending(self, conf: Any) -> None:
        """Store the entries that waited for the configuration, in the order they were added."""
        while self.pending:
            add_entry(conf, *self.pending.popleft())
