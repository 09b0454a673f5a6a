"""The task registry: a dict of task name to task instance, one per app.

Celery's counterpart is ``celery.app.registry.TaskRegistry``. A missing name raises ``NotRegistered``, which
is both a ``KeyError`` (so ``dict`` habits keep working) and a task error that suggests close names.
"""

from __future__ import annotations

import difflib
from typing import Any

from .exceptions import InvalidTaskError, NotRegistered

__all__ = ["TaskRegistry"]


class TaskRegistry(dict[str, Any]):
    """Map of task name → task instance; ``registry['nope']`` raises ``NotRegistered``."""

    NotRegistered = NotRegistered

    def __missing__(self, key: str) -> Any:
        raise NotRegistered(key, self.suggest(key))

    def suggest(self, name: str) -> tuple[str, ...]:
        """Registered names that look like ``name``, best first (for error messages)."""
        return tuple(difflib.get_close_matches(str(name), list(self), n=3, cutoff=0.6))

    def register(self, task: Any) -> None:
        """Store ``task`` (a task class is instantiated) under its name; it is not bound to any app."""
        if task.name is None:
            raise InvalidTaskError(
                f"Task class {type(task).__name__!r} must specify .name attribute")
        self[task.name] = task() if isinstance(task, type) else task

    def unregister(self, name: Any) -> None:
        """Remove a task by name or instance; raise ``NotRegistered`` when it is not there."""
        key = getattr(name, "name", name)
        try:
            self.pop(key)
        except KeyError:
            raise NotRegistered(key, self.suggest(key))

    def regular(self) -> dict[str, Any]:
        """The tasks of type ``'regular'`` (all of them: minicelery has no periodic tasks)."""
        return self.filter_types("regular")

    def periodic(self) -> dict[str, Any]:
        """The tasks of type ``'periodic'`` (always empty; kept for Celery compatibility)."""
        return self.filter_types("periodic")

    def filter_types(self, type: str) -> dict[str, Any]:  # noqa: A002 - Celery's parameter name
        """The tasks whose ``type`` attribute equals ``type``."""
        return {name: task for name, task in self.items() if getattr(task, "type", "regular") == type}
