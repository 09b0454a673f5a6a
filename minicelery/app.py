"""The application: ``Celery``, the object that holds configuration, tasks and the way to the broker.

Creating an app only creates a logical clock and a task registry, makes the app current and calls
``on_init()``; configuration is read on first use, tasks are built when touched or when the app
finalizes, and the broker connection opens with the first message sent.
Only that much is imported with the app, so that ``import minicelery; Celery('x')`` stays cheap (issue 9):
sending (``sending.send`` and the message, the transport, uuids), results, remote control and monitoring
are imported by the methods that first use them, as Celery's lazy attributes do.
Two signals let a program hook in: ``on_after_configure`` (sent once the configuration is read) and
``on_after_finalize``; Celery users call ``add_periodic_task`` from them. Celery's counterpart is
``celery.app.base``; left out are loaders, fixups, the ``on_configure`` and ``on_after_fork`` signals,
and the canvas. ``app.control`` (remote control of workers) lives in ``control.py``.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from . import _state, periodic
from .clock import LamportClock
from .config import Settings
from .exceptions import DuplicateTaskNameWarning, ImproperlyConfigured
from .imports import config_module_from_envvar
from .local import PromiseProxy
from .registry import TaskRegistry
from .signals import Signal
from .task import Task, add_autoretry_behaviour

if TYPE_CHECKING:  # pragma: no cover
    from .control import Control
    from .message import SendOptions
    from .result import AsyncResult
    from .transport import Transport

__all__ = ["Celery"]

class Celery:
    """A minicelery application.

    Args:
        main: the name of the main module; tasks defined in ``__main__`` are named after it.
        broker: the broker URL (the ``broker_url`` setting).
        backend: the result backend URL (``result_backend``), e.g. ``'rpc://'``.
        include: modules the worker imports at start-up (``include``).
        set_as_current: make this app the current app of the calling thread.
        autofinalize: finalize on first access to ``app.tasks``; otherwise ``finalize()`` is required.
        config_source: an object for ``config_from_object``, loaded lazily.
        namespace: a settings prefix such as ``'CELERY'`` (``CELERY_BROKER_URL`` → ``broker_url``).
        **settings: any other setting, by its lowercase name.
    """

    def __init__(self, main: str | None = None, broker: str | None = None, backend: str | None = None, *,
                 include: Iterable[str] | None = None, set_as_current: bool = True,
                 autofinalize: bool = True, config_source: Any = None, namespace: str | None = None,
                 tasks: TaskRegistry | None = None, changes: dict[str, Any] | None = None,
                 task_cls: type[Task] | None = None, strict_typing: bool = True, **settings: Any) -> None:
        self.main = main
        self.clock = LamportClock()
        self._tasks = tasks if isinstance(tasks, TaskRegistry) else TaskRegistry(tasks or {})
        self._pending: deque[PromiseProxy] = deque()
        self.finalized = False
        self._finalize_mutex = threading.RLock()
        self.autofinalize = autofinalize
        self.namespace = namespace
        self.set_as_current = set_as_current
        self.strict_typing = strict_typing
        self.task_cls = task_cls or Task
        self._local = threading.local()
        self._broker: Transport | None = None
        self._backend: Any = None
        self._lock = threading.Lock()
        preconf = dict(changes or {})
        preconf.update({k: v for k, v in (("broker_url", broker), ("result_backend", backend),
                                          ("include", include)) if v is not None})
        preconf.update({k: v for k, v in settings.items() if v is not None})
        self._conf = Settings(changes=preconf, namespace=namespace)
        self._periodic_tasks = periodic.PeriodicTasks()
        self.on_after_configure = Signal("app.on_after_configure")  #: sent with ``source=app.conf``
        self.on_after_finalize = Signal("app.on_after_finalize")
        self._conf.on_load.append(self._after_configure)
        if config_source is not None:
            self._conf.config_from_object(config_source, namespace=namespace)
        if set_as_current:
            self.set_current()
        self.on_init()
        _state.register_app(self)

    def on_init(self) -> None:
        """Called at the end of ``__init__``; does nothing (a hook for subclasses)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.main or '__main__'} at {id(self):#x}>"

    # -- current app ------------------------------------------------------------------------------

    def set_current(self) -> None:
        """Make this the current app of the calling thread."""
        _state.set_current_app(self)

    def set_default(self) -> None:
        """Make this the default app: the current app of every thread that has not set one."""
        _state.set_default_app(self)

    @property
    def current_task(self) -> Any:
        """The task running in this thread, or None."""
        return _state.get_current_task()

    def close(self) -> None:
        """Close this thread's broker connection and leave the set of live apps."""
        if self._broker is not None:
            self._broker.close()
        _state.deregister_app(self)

    def __enter__(self) -> Celery:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- configuration ----------------------------------------------------------------------------

    @property
    def conf(self) -> Settings:
        """The settings (read lazily: nothing is loaded until the first read)."""
        return self._conf

    @property
    def configured(self) -> bool:
        """True once the configuration has been read."""
        return self._conf.loaded

    def config_from_object(self, obj: Any, silent: bool = False, force: bool = False,
                           namespace: str | None = None) -> None:
        """Use ``obj`` (a module name, ``'module:attr'``, a module, class, object or dict) as the
        configuration source; it is loaded on first read unless ``force`` is true."""
        if namespace is not None:
            self.namespace = namespace
        self._conf.config_from_object(obj, namespace=namespace, silent=silent, force=force)

    def config_from_envvar(self, variable_name: str, silent: bool = False, force: bool = False) -> Any:
        """Load the configuration module named by an environment variable.

        Raises ``ImproperlyConfigured`` when the variable is not set (returns False with ``silent``).
        """
        try:
            module_name = config_module_from_envvar(variable_name)
        except ImproperlyConfigured:
            if silent:
                return False
            raise
        return self.config_from_object(module_name, silent=silent, force=force)

    def _after_configure(self, conf: Settings) -> None:
        """Called once the configuration is read: add the waiting periodic tasks, then tell receivers."""
        self._periodic_tasks.add_pending(conf)
        self.on_after_configure.send(sender=self, source=conf)

    def add_periodic_task(self, schedule: Any, sig: Any, args: Any = (), kwargs: Any = (),
                          name: str | None = None, **opts: Any) -> str:
        """Add an entry to ``beat_schedule``: send ``sig`` on ``schedule`` (seconds, timedelta, crontab).

        The key is ``name``, else ``repr(sig)``; ``opts`` are ``apply_async`` options. Before the
        configuration is read, the entry waits for it. Returns the key.
        """
        conf = self.conf if self.configured else None
        return self._periodic_tasks.add(conf, schedule, sig, args, kwargs, name, opts)

    @property
    def timezone(self) -> tzinfo:
        """The app's time zone: UTC unless ``timezone`` is set (or ``enable_utc`` is off)."""
        name = self.conf.timezone
        if name:
            return ZoneInfo(name)
        if self.conf.enable_utc:
            return UTC
        return datetime.now().astimezone().tzinfo or UTC

    def now(self) -> datetime:
        """The current time as an aware datetime in the app's time zone."""
        return datetime.now(self.timezone)

    # -- tasks ------------------------------------------------------------------------------------

    @property
    def tasks(self) -> TaskRegistry:
        """The task registry; the first access finalizes the app."""
        self.finalize(auto=True)
        return self._tasks

    def finalize(self, auto: bool = False) -> None:
        """Build every pending and shared task and bind all tasks to this app (once).

        Raises ``RuntimeError('Contract breach: app not finalized')`` when ``auto`` is true and the app
        was created with ``autofinalize=False``.
        """
        with self._finalize_mutex:
            if self.finalized:
                return
            if auto and not self.autofinalize:
                raise RuntimeError("Contract breach: app not finalized")
            self.finalized = True
            _state.announce_app_finalized(self)
            while self._pending:
                self._pending.popleft().__maybe_evaluate__()
            for task in self._tasks.values():
                task.bind(self)
            self.on_after_finalize.send(sender=self)

    def task(self, *args: Any, **opts: Any) -> Any:
        """Decorator that turns a function into a task: ``@app.task`` or ``@app.task(name=..., ...)``.

        Options: ``name``, ``bind``, ``base``, ``shared`` (default True: every app finalized later gets
        its own copy), ``lazy``, and any task attribute (``max_retries``, ``queue``, ``acks_late``...).
        """
        def decorate(fun: Callable[..., Any]) -> Any:
            options = dict(opts)  # a decorator object may be applied to several functions
            shared = options.pop("shared", True)
            lazy = options.pop("lazy", True)
            options.pop("filter", None)
            if shared:
                _state.connect_on_app_finalize(lambda app: app._task_from_fun(fun, **options))
            if not lazy or self.finalized:
                return self._task_from_fun(fun, **options)
            promise = PromiseProxy(self._task_from_fun, (fun,), options, __doc__=fun.__doc__)
            self._pending.append(promise)
            return promise

        if len(args) == 1 and not opts:
            if callable(args[0]):
                return decorate(args[0])
            raise TypeError("argument 1 to @task() must be a callable")
        if args:
            raise TypeError(f"@task() takes exactly 1 argument ({len(args) + len(opts)} given)")
        return decorate

    def _task_from_fun(self, fun: Callable[..., Any], name: str | None = None, base: type | None = None,
                       bind: bool = False, **options: Any) -> Task:
        if not self.finalized and not self.autofinalize:
            raise RuntimeError("Contract breach: app not finalized")
        name = name or self.gen_task_name(fun.__name__, fun.__module__)
        with self._lock:
            existing = self._tasks.get(name)
            if existing is not None:
                if type(existing).__dict__.get("__wrapped__", fun) is not fun:
                    warnings.warn(DuplicateTaskNameWarning(
                        f"Task name {name!r} is already registered to a different callable. "
                        "The first registration is kept."), stacklevel=3)
                return existing
            attrs = {"_app": self, "name": name, "run": fun if bind else staticmethod(fun),
                     "__wrapped__": fun, "__doc__": fun.__doc__, "__module__": fun.__module__,
                     "__qualname__": fun.__qualname__, "_signature_check": None, **options}
            task: Task = type(fun.__name__, (base or self.Task,), attrs)()
            self._tasks[name] = task
        task.bind(self)
        add_autoretry_behaviour(task)
        return task

    def gen_task_name(self, name: str, module: str) -> str:
        """Celery's default task name: ``module.function``, with the main name for ``__main__``."""
        module_obj = sys.modules.get(module)
        module_name = getattr(module_obj, "__name__", module) if module_obj else module
        if module_name == "__main__" and self.main:
            return f"{self.main}.{name}"
        return ".".join(part for part in (module_name, name) if part)

    def register_task(self, task: Any) -> Task:
        """Register a task class or instance (naming it if needed), bind it to this app and return it."""
        if isinstance(task, type):
            task = task()
        if task.name is None:
            type(task).name = self.gen_task_name(type(task).__name__, type(task).__module__)
        self._tasks[task.name] = task
        task.bind(self)
        add_autoretry_behaviour(task)
        return task

    @property
    def Task(self) -> type[Task]:  # noqa: N802 - Celery's name
        """The base class of this app's tasks: ``task_cls`` bound to the app."""
        return self._bound_class("Task", self.task_cls, _app=self, abstract=True)

    @Task.setter
    def Task(self, cls: type[Task]) -> None:  # noqa: N802
        self.__dict__["_bound_Task"] = cls

    def _bound_class(self, name: str, base: type, **attrs: Any) -> Any:
        """A subclass of ``base`` that knows this app, made once (Celery's ``subclass_with_self``)."""
        key = f"_bound_{name}"
        if key not in self.__dict__:
            self.__dict__[key] = type(name, (base,), {"__module__": base.__module__,
                                                      "__doc__": base.__doc__, **attrs})
        return self.__dict__[key]

    @functools.cached_property
    def control(self) -> Control:
        """Remote control of the workers: ``app.control.ping()``, ``.revoke()``, ``.inspect()``..."""
        from .control import Control

        return Control(self)

    # -- sending ----------------------------------------------------------------------------------

    @property
    def oid(self) -> str:
        """A uuid-like id of this app in this process."""
        from .pidbox import oid_from

        return oid_from(self, "process")

    @property
    def thread_oid(self) -> str:
        """A uuid-like id of this app in this thread: the name of this thread's reply queue."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.__dict__.clear()
            local.pid = os.getpid()
        if not hasattr(local, "thread_oid"):
            from .pidbox import oid_from

            local.thread_oid = oid_from(self, threading.get_ident())
        return local.thread_oid

    @property
    def reply_queue(self) -> str:
        """The queue rpc:// results come back to: ``thread_oid`` unless set (the CLI sets it)."""
        return self.__dict__.get("_reply_queue") or self.thread_oid

    @reply_queue.setter
    def reply_queue(self, name: str) -> None:
        self.__dict__["_reply_queue"] = name

    @property
    def broker(self) -> Transport:
        """The broker client (a :class:`~minicelery.transport.Transport`), created on first use."""
        if self._broker is None:
            with self._lock:
                if self._broker is None:
                    from .brokers import open_transport

                    conf = self.conf
                    self._broker = open_transport(conf.broker_write_url or conf.broker_url, conf)
        return self._broker

    @property
    def backend(self) -> Any:
        """The result backend for ``result_backend`` (``rpc://`` or disabled)."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    from .backends import backend_for

                    self._backend = backend_for(self)
        return self._backend

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, *,
                  options: SendOptions | None = None, **call_options: Any) -> AsyncResult:
        """Send a task by name (it need not be registered here) and return its ``AsyncResult``.

        Options are Celery's keywords: ``task_id``, ``countdown``, ``eta``, ``expires``, ``queue``,
        ``routing_key``, ``exchange``, ``priority``, ``headers``, ``serializer``, ``ignore_result``,
        ``retries``, ``time_limit``, ``soft_time_limit``, ``reply_to``, ``shadow``, ``root_id``,
        ``parent_id``; or ``options``, a ready :class:`~minicelery.message.SendOptions` (what
        ``Task.apply_async`` passes), but not both. The steps are in :func:`.sending.send`.
        """
        from .sending import send

        return send(self, name, args, kwargs, options, call_options)

    @functools.cached_property
    def AsyncResult(self) -> type[AsyncResult]:  # noqa: N802 - Celery's name
        """``AsyncResult`` bound to this app (made once, as Celery's cached property)."""
        from .result import AsyncResult

        return self._bound_class("AsyncResult", AsyncResult, app=self)

    # -- worker -----------------------------------------------------------------------------------

    def worker_main(self, argv: list[str] | None = None) -> int:
        """Run the worker command line for this app (``argv`` like ``['worker', '-l', 'INFO']``)."""
        # Whitelisted upward import: the app layer knows nothing of the worker, except this entry
        # point Celery offers, which hands over to the command line at call time.
        from .cli import main

        return main(list(argv or ["worker"]), app=self)


_state.set_default_app_factory(lambda: Celery("default", set_as_current=False))
