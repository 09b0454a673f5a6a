"""``@shared_task``: tasks for reusable libraries, which cannot know the user's app.

The decorator returns a proxy that always resolves to the *current* app's instance of the task; the task
is added to every app finalized from now on and, at once, to every live app already finalized. Celery's
counterpart is ``celery.app.shared_task``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _state
from .local import Proxy

__all__ = ["shared_task"]


def shared_task(*args: Any, **kwargs: Any) -> Any:
    """Decorator for tasks of reusable libraries: the result always resolves to the current app's task.

    The task is added to every app finalized from now on and, at once, to every live app that is
    already finalized.
    """
    def create_shared_task(fun: Callable[..., Any]) -> Any:
        if getattr(fun, "_shared_task_applied", False):
            raise TypeError("@shared_task was applied more than once to the same function. "
                            "Remove the extra @shared_task decorator.")
        name = kwargs.get("name")
        _state.connect_on_app_finalize(lambda app: app._task_from_fun(fun, **kwargs))
        for app in _state.live_apps():
            if app.finalized:
                with app._finalize_mutex:
                    app._task_from_fun(fun, **kwargs)
        fun._shared_task_applied = True  # type: ignore[attr-defined]

        def current_task() -> Any:
            app = _state.get_current_app()
            return app.tasks[name or app.gen_task_name(fun.__name__, fun.__module__)]

        return Proxy(current_task)

    if len(args) == 1 and callable(args[0]):
        return create_shared_task(args[0])
    return create_shared_task

