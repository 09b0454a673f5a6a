"""Process-wide state: the current and default app, live apps, finalize callbacks and the task stack.

Celery's counterpart is ``celery._state``. The current app is per thread (a new thread sees the default
app until it sets its own), the default app is per process and is created on first use, by the factory
that ``minicelery.app`` registers when it is imported (this module never imports the app layer). Left out:
the ``CELERY_TRACE_APP`` debugging switch.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .local import LocalStack, Proxy

if TYPE_CHECKING:  # pragma: no cover
    from .app import Celery

__all__ = [
    "current_app", "current_task", "get_current_app", "get_current_task", "set_current_app",
    "set_default_app", "set_default_app_factory", "connect_on_app_finalize", "announce_app_finalized",
    "live_apps",
]

_tls = threading.local()
_default_app: Celery | None = None
_default_app_lock = threading.Lock()
_default_app_factory: Callable[[], Celery] | None = None
_apps: weakref.WeakSet[Celery] = weakref.WeakSet()
_on_app_finalizers: dict[Callable[[Any], Any], None] = {}  # a dict as an ordered set
_task_stack = LocalStack()


def set_current_app(app: Celery) -> None:
    """Make ``app`` the current app of the calling thread."""
    _tls.current_app = app


def set_default_app(app: Celery) -> None:
    """Make ``app`` the fallback of every thread that has no current app."""
    global _default_app
    _default_app = app


def set_default_app_factory(factory: Callable[[], Celery]) -> None:
    """Register how the default app is built on first use (``minicelery.app`` does it at import)."""
    global _default_app_factory
    _default_app_factory = factory


def get_current_app() -> Celery:
    """Return this thread's current app, else the default app (creating it on first use)."""
    app = getattr(_tls, "current_app", None)
    if app is not None:
        return app
    return _get_default_app()


def _get_default_app() -> Celery:
    global _default_app
    if _default_app is None:
        with _default_app_lock:
            if _default_app is None:
                if _default_app_factory is None:
                    raise RuntimeError("No default app: import minicelery (or minicelery.app) first.")
                _default_app = _default_app_factory()
    return _default_app


def get_current_task() -> Any:
    """Return the task running in this thread, or None."""
    return _task_stack.top


def push_task(task: Any) -> None:
    """Record that ``task`` starts running in this thread."""
    _task_stack.push(task)


def pop_task() -> Any:
    """Record that the innermost running task in this thread has ended."""
    return _task_stack.pop()


def register_app(app: Celery) -> None:
    """Add ``app`` to the live apps that ``@shared_task`` joins."""
    _apps.add(app)


def deregister_app(app: Celery) -> None:
    """Remove ``app`` from the live apps (``app.close()``)."""
    _apps.discard(app)


def live_apps() -> list[Celery]:
    """Every app of this process that has not been closed or collected."""
    return list(_apps)


def connect_on_app_finalize(callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Run ``callback(app)`` when any app finalizes from now on (how shared tasks reach every app)."""
    _on_app_finalizers[callback] = None
    return callback


def announce_app_finalized(app: Celery) -> None:
    """Call every finalize callback with ``app``."""
    for callback in list(_on_app_finalizers):
        callback(app)


#: The current app of this thread, looked up at every access.
current_app: Any = Proxy(get_current_app)
#: The task running in this thread (None outside a task), looked up at every access.
current_task: Any = Proxy(get_current_task)
