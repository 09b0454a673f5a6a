"""The ``Task`` class: what ``@app.task`` turns a function into.

A task is a singleton instance of a class made for one function. Calling it runs the function here;
``delay``/``apply_async`` send a message; ``apply`` runs it through the tracer like a worker would;
``retry`` re-sends it from inside a run; ``s()``/``si()``/``signature()`` make a signature for the canvas
(:mod:`.canvas`). Celery's counterpart is ``celery.app.task``; left out are ``map``/``starmap``/``chunks``,
``replace``, rate limits and ``update_state`` from inside a worker child. Defining a task loads neither
the message, the tracer nor the results: the methods that need them import them (issue 9).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from . import _state, states
from .exceptions import ImproperlyConfigured, MaxRetriesExceededError, Retry
from .local import LocalStack

__all__ = ["Task", "Context"]

#: Task attributes filled from the app's configuration when a task is bound to an app.
_FROM_CONFIG = (
    ("serializer", "task_serializer"),
    ("rate_limit", "task_default_rate_limit"),
    ("priority", "task_default_priority"),
    ("track_started", "task_track_started"),
    ("acks_late", "task_acks_late"),
    ("acks_on_failure_or_timeout", "task_acks_on_failure_or_timeout"),
    ("reject_on_worker_lost", "task_reject_on_worker_lost"),
    ("ignore_result", "task_ignore_result"),
    ("store_errors_even_if_ignored", "task_store_errors_even_if_ignored"),
    ("time_limit", "task_time_limit"),
    ("soft_time_limit", "task_soft_time_limit"),
)

#: Task attributes that become message options unless the caller gives them.
_EXEC_OPTIONS = ("queue", "routing_key", "exchange", "priority", "expires", "serializer",
                 "delivery_mode", "time_limit", "soft_time_limit")


class Context:
    """The request of one run of a task: its id, arguments, retries and where its message came from.

    Only what is set shows in ``repr``; everything else reads as Celery's default.
    """

    id: str | None = None
    args: Any = None
    kwargs: Any = None
    retries = 0
    eta: Any = None
    expires: Any = None
    is_eager = False
    headers: Any = None
    delivery_info: Any = None
    reply_to: str | None = None
    correlation_id: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    origin: str | None = None
    hostname: str | None = None
    timelimit: Any = None
    ignore_result = False
    called_directly = True
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    # The message's canvas (its body's embed), followed after the run: see followup.py.
    callbacks: Any = None
    errbacks: Any = None
    chain: Any = None
    chord: Any = None

    def __init__(self, *args: Mapping[str, Any], **kwargs: Any) -> None:
        self.update(*args, **kwargs)
        # Celery's Context always stores ``headers`` on the instance, so its repr shows the field.
        self.__dict__.setdefault("headers", None)

    def update(self, *args: Mapping[str, Any], **kwargs: Any) -> None:
        """Set fields from mappings and keywords."""
        for mapping in args:
            self.__dict__.update(mapping)
        self.__dict__.update(kwargs)

    def get(self, key: str, default: Any = None) -> Any:
        """Read a field, with a default."""
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        """The fields that were set."""
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"<Context: {vars(self)!r}>"


class Task:
    """Base class of every task. ``app.Task`` is this class bound to one app."""

    name: str | None = None
    typing = True
    max_retries: int | None = 3
    default_retry_delay = 180
    rate_limit: Any = None
    ignore_result: Any = None
    store_errors_even_if_ignored: Any = None
    serializer: Any = None
    time_limit: Any = None
    soft_time_limit: Any = None
    acks_late: Any = None
    acks_on_failure_or_timeout: Any = None
    reject_on_worker_lost: Any = None
    track_started: Any = None
    priority: Any = None
    expires: Any = None
    trail = True
    #: At most this many characters of a return value go into the worker's log line (Celery's name).
    resultrepr_maxsize = 1024
    send_events = True
    throws: tuple[type[BaseException], ...] = ()
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: dict[str, Any] = {}
    retry_backoff: bool | int | float = False
    retry_backoff_max = 600
    retry_jitter = True
    abstract = True
    type = "regular"
    request_stack: LocalStack | None = None
    _app: Any = None
    _signature_check: Callable[..., Any] | None = None

    @classmethod
    def bind(cls, app: Any) -> Any:
        """Attach the task class to ``app`` and fill unset options from its configuration.

        Raises:
            ImproperlyConfigured: a negative or non-numeric time limit (0 means no limit, as in Celery).
        """
        from .protocol import read_time_limit

        cls._app = app
        conf = app.conf
        for attr, key in _FROM_CONFIG:
            if getattr(cls, attr, None) is None:
                setattr(cls, attr, conf.get(key))
        for attr in ("time_limit", "soft_time_limit"):
            try:
                setattr(cls, attr, read_time_limit(getattr(cls, attr)))  # 0 becomes None
            except ValueError as exc:
                raise ImproperlyConfigured(f"Task {cls.name!r}: {attr} (or the task_{attr} setting): "
                                           f"{exc}") from None
        if cls.__dict__.get("request_stack") is None:
            cls.request_stack = LocalStack()
        return app

    @property
    def app(self) -> Any:
        """The app this task belongs to (the current app for an unbound task)."""
        return type(self)._app or _state.get_current_app()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The body of the task; ``@app.task`` sets it to the decorated function."""
        raise NotImplementedError("Tasks must define the run method.")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _state.push_task(self)
        self.push_request(args=args, kwargs=kwargs)
        try:
            return self.run(*args, **kwargs)
        finally:
            self.pop_request()
            _state.pop_task()

    __call__.default_task_call = True  # type: ignore[attr-defined]  # trace calls .run directly then

    def __repr__(self) -> str:
        app = self.app
        return f"<@task: {self.name} of {app.main or '__main__'} at {id(app):#x}>"

    # -- requests ---------------------------------------------------------------------------------

    def push_request(self, *args: Any, **kwargs: Any) -> None:
        """Start a request (the run's context) on this thread."""
        self._requests().push(Context(*args, **kwargs))

    def pop_request(self) -> None:
        """End the innermost request on this thread."""
        self._requests().pop()

    def _requests(self) -> LocalStack:
        stack = type(self).request_stack
        if stack is None:
            stack = type(self).request_stack = LocalStack()
        return stack

    @property
    def request(self) -> Context:
        """The context of the run in progress on this thread, or a default one."""
        top = self._requests().top
        return top if top is not None else Context()

    # -- sending ----------------------------------------------------------------------------------

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Send the task with these arguments; shorthand for ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: str | None = None,
                    shadow: str | None = None, **options: Any) -> Any:
        """Send the task to a worker (or run it here under ``task_always_eager``) and return its result.

        Options are Celery's: ``countdown``, ``eta``, ``expires``, ``queue``, ``routing_key``,
        ``exchange``, ``priority``, ``headers``, ``serializer``, ``ignore_result``, ``time_limit``,
        ``soft_time_limit``, ``retries``, ``reply_to``.
        """
        from .message import SendOptions

        # A list stays a list, as in Celery, where it shows in the message as argsrepr '[1, 2]' (beat sends
        # lists); any other iterable becomes a tuple.
        args = args if isinstance(args, (list, tuple)) else tuple(args or ())
        kwargs = dict(kwargs or {})
        defaults = {attr: getattr(self, attr, None) for attr in _EXEC_OPTIONS}
        send_options = SendOptions.from_call({**defaults, "ignore_result": self.ignore_result, **options,
                                              "task_id": task_id, "shadow": shadow})
        if self.typing:
            self.check_arguments(*args, **kwargs)
        app = self.app
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, task_id=task_id, **options)
        return app.send_task(self.name, args, kwargs, options=send_options)

    def check_arguments(self, *args: Any, **kwargs: Any) -> None:
        """Raise Python's own ``TypeError`` when the arguments do not fit the task's signature."""
        cls = type(self)
        check = cls.__dict__.get("_signature_check")
        if check is None:  # built once per task class; a bound run() already hides `self`
            from .trace import signature_checker

            check = signature_checker(self.run)
            cls._signature_check = staticmethod(check)
        check(*args, **kwargs)

    def apply(self, args: Any = None, kwargs: Any = None, task_id: str | None = None,
              retries: int = 0, throw: bool | None = None, **options: Any) -> Any:
        """Run the task here, through the tracer, and return an ``EagerResult``.

        The arguments go through the serializer first, as they would on the wire. Exceptions propagate
        when ``throw`` is true (default: ``task_eager_propagates``).
        """
        from . import message, result, trace

        app = self.app
        task_id = task_id or message.new_task_id()
        args, kwargs = trace.round_trip(args or (), kwargs or {},
                                        options.get("serializer") or self.serializer or "json")
        throw = app.conf.task_eager_propagates if throw is None else throw
        request = {"id": task_id, "retries": retries, "is_eager": True, "called_directly": False,
                   "root_id": task_id, "delivery_info": {"is_eager": True}}
        outcome = trace.run_task(self, args, kwargs, request, eager=True)
        if options.get("link") or options.get("link_error"):  # eager callbacks/errbacks run inline
            from .followup import follow_eager  # same layer; the canvas side of a finished task

            follow_eager(self, {**request, "args": args, "kwargs": kwargs}, outcome, options)
        if throw and outcome.state == states.FAILURE:
            raise outcome.value
        return result.EagerResult(task_id, outcome.value, outcome.state, outcome.traceback, name=self.name)

    # -- canvas -------------------------------------------------------------------------------------

    def signature(self, args: Any = None, *starargs: Any, **starkwargs: Any) -> Any:
        """A signature of this task: ``signature((2, 2), {}, countdown=10)`` (see :mod:`.canvas`)."""
        from .canvas import Signature  # same layer; the canvas is optional, loaded when first used

        starkwargs.setdefault("app", self.app)
        return Signature(self, args, *starargs, **starkwargs)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Any:
        """A signature with these arguments: ``add.s(2, 2)``."""
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Any:
        """An immutable signature: in a chain or as a callback it ignores the previous result."""
        return self.signature(args, kwargs, immutable=True)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> Any:  # noqa: N802 - Celery's name
        """A result handle for ``task_id`` of this task."""
        return self.app.AsyncResult(task_id, task_name=self.name, **kwargs)

    # -- retrying ---------------------------------------------------------------------------------

    def retry(self, args: Any = None, kwargs: Any = None, exc: BaseException | None = None,
              throw: bool = True, eta: datetime | None = None, countdown: float | None = None,
              max_retries: int | None = None, **options: Any) -> Retry:
        """Send this task again (same id, ``retries`` + 1) and end the current run as RETRY.

        Raises ``Retry`` (or returns it with ``throw=False``); past ``max_retries`` raises ``exc`` if
        given, else ``MaxRetriesExceededError``. Called outside a worker run, re-raises ``exc``.
        """
        request = self.request
        retries = request.retries + 1
        max_retries = self.max_retries if max_retries is None else max_retries
        if request.called_directly:
            if exc is not None:
                raise exc
            raise Retry("Task can be retried", None)
        if max_retries is not None and retries > max_retries:
            if exc is not None:
                raise exc
            # Celery formats the retry signature's args: a tuple, even when the message held a list.
            sig_args = tuple((request.args if args is None else args) or ())
            sig_kwargs = dict((request.kwargs if kwargs is None else kwargs) or {})
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{sig_args} kwargs:{sig_kwargs}",
                task_args=sig_args, task_kwargs=sig_kwargs)
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        args = request.args if args is None else args
        kwargs = request.kwargs if kwargs is None else kwargs
        retry = Retry(exc=exc, when=eta or countdown, is_eager=request.is_eager)
        if request.is_eager:
            retry.sig = (args, kwargs, retries)
        else:
            self._resend(request, args, kwargs, retries, eta=eta, countdown=countdown, **options)
        if throw:
            raise retry
        return retry

    def _resend(self, request: Context, args: Any, kwargs: Any, retries: int, **options: Any) -> None:
        from .message import SendOptions

        delivery = request.delivery_info or {}
        hard, soft = request.timelimit or (None, None)
        same = {"root_id": request.root_id, "parent_id": request.id, "reply_to": request.reply_to,
                "ignore_result": request.ignore_result, "priority": delivery.get("priority") or None,
                "time_limit": hard, "soft_time_limit": soft,
                # back to the queue it came from, unless it came through a named exchange
                "queue": None if delivery.get("exchange") else delivery.get("routing_key"),
                # The canvas travels with every retry, so it is followed once, after the final run.
                "callbacks": request.get("callbacks"), "errbacks": request.get("errbacks"),
                "chain": request.get("chain"), "chord": request.get("chord")}
        send_options = SendOptions.from_call({**same, **options, "task_id": request.id, "retries": retries})
        self.app.send_task(self.name, args, kwargs, options=send_options)

    # -- handlers (no-ops, for subclasses) ----------------------------------------------------------

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Called in the worker before the task runs."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Called in the worker when the task succeeded."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Called in the worker when the task failed."""

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Called in the worker when the task is to be retried."""

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any,
                     einfo: Any) -> None:
        """Called in the worker after the task returned, whatever its state."""


def add_autoretry_behaviour(task: Task) -> None:
    """Wrap ``task.run`` so the exceptions in ``autoretry_for`` turn into ``task.retry(exc=...)``."""
    autoretry_for = tuple(task.autoretry_for or ())
    if not autoretry_for:
        return
    dont_autoretry_for = tuple(task.dont_autoretry_for or ())
    retry_kwargs = dict(task.retry_kwargs or {})
    inner = task.run

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return inner(*args, **kwargs)
        except Retry:
            raise
        except dont_autoretry_for:
            raise
        except autoretry_for as exc:
            options = dict(retry_kwargs)
            if task.retry_backoff and "countdown" not in options:
                options["countdown"] = backoff_countdown(
                    task.retry_backoff, task.request.retries, task.retry_backoff_max, task.retry_jitter)
            raise task.retry(exc=exc, **options)

    task.run = run  # type: ignore[method-assign]


def backoff_countdown(factor: bool | float, retries: int, maximum: float, jitter: bool) -> int:
    """Exponential backoff as Celery computes it: ``min(max, factor * 2**retries)``, then jitter."""
    countdown = min(int(maximum), int(max(1.0, float(factor))) * 2 ** retries)
    if not jitter:
        return countdown
    return random.randrange(countdown + 1)
