"""Proxies: objects that stand in for another object found (or built) at the moment of use.

``current_app`` is a :class:`Proxy` that looks the current app up on every access, and ``@app.task`` returns
a :class:`PromiseProxy` that builds its task the first time it is touched and keeps it. Celery's counterpart
is ``celery.local`` (itself after werkzeug's ``LocalProxy``); left out are the Python 2 leftovers and
``maybe_evaluate`` helpers minicelery has no use for.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Proxy", "PromiseProxy", "LocalStack"]


def _forward(op: Callable[..., Any]) -> Callable[..., Any]:
    """Make a dunder method that applies ``op`` to the proxied object."""
    def method(self: Proxy, *args: Any) -> Any:
        return op(self._get_current_object(), *args)
    method.__name__ = getattr(op, "__name__", "method")
    return method


def _reflect(op: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """Make a reflected operator method (``__radd__`` and friends)."""
    def method(self: Proxy, other: Any) -> Any:
        return op(other, self._get_current_object())
    return method


class Proxy:
    """Forward every operation to the object that ``target()`` returns at that moment.

    Attribute access, calls, ``repr``, ``str``, ``bool``, comparisons, hashing, containers and arithmetic
    all reach the real object, so a proxy behaves like it in every observable way but identity.
    """

    __slots__ = ("_Proxy__target", "_Proxy__args", "_Proxy__kwargs", "__dict__")

    def __init__(self, target: Callable[..., Any], args: tuple[Any, ...] | None = None,
                 kwargs: dict[str, Any] | None = None, name: str | None = None,
                 __doc__: str | None = None) -> None:
        object.__setattr__(self, "_Proxy__target", target)
        object.__setattr__(self, "_Proxy__args", args or ())
        object.__setattr__(self, "_Proxy__kwargs", kwargs or {})
        if name is not None:
            object.__setattr__(self, "__custom_name__", name)
        if __doc__ is not None:
            object.__setattr__(self, "__doc__", __doc__)

    def _get_current_object(self) -> Any:
        """Return the real object behind the proxy, looked up now."""
        target = object.__getattribute__(self, "_Proxy__target")
        args = object.__getattribute__(self, "_Proxy__args")
        kwargs = object.__getattribute__(self, "_Proxy__kwargs")
        return target(*args, **kwargs)

    @property
    def __dict__(self) -> Any:  # type: ignore[override]
        try:
            return self._get_current_object().__dict__
        except RuntimeError:  # pragma: no cover - the target cannot be built right now
            raise AttributeError("__dict__")

    @property  # type: ignore[misc]
    def __class__(self) -> Any:  # so that isinstance(current_app, Celery) holds
        return self._get_current_object().__class__

    @property
    def __name__(self) -> str:
        try:
            return object.__getattribute__(self, "__custom_name__")
        except AttributeError:
            return self._get_current_object().__name__

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get_current_object(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._get_current_object(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._get_current_object(), name)

    def __dir__(self) -> list[str]:
        try:
            return dir(self._get_current_object())
        except RuntimeError:  # pragma: no cover
            return []

    def __repr__(self) -> str:
        return repr(self._get_current_object())

    def __str__(self) -> str:
        return str(self._get_current_object())

    def __bool__(self) -> bool:
        return bool(self._get_current_object())

    def __hash__(self) -> int:
        return hash(self._get_current_object())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get_current_object()(*args, **kwargs)

    def __reduce__(self) -> Any:
        return self._get_current_object().__reduce__()

    __eq__ = _forward(operator.eq)
    __ne__ = _forward(operator.ne)
    __lt__ = _forward(operator.lt)
    __le__ = _forward(operator.le)
    __gt__ = _forward(operator.gt)
    __ge__ = _forward(operator.ge)
    __len__ = _forward(len)
    __iter__ = _forward(iter)
    __reversed__ = _forward(reversed)
    __contains__ = _forward(operator.contains)
    __getitem__ = _forward(operator.getitem)
    __setitem__ = _forward(operator.setitem)
    __delitem__ = _forward(operator.delitem)
    __add__ = _forward(operator.add)
    __sub__ = _forward(operator.sub)
    __mul__ = _forward(operator.mul)
    __truediv__ = _forward(operator.truediv)
    __floordiv__ = _forward(operator.floordiv)
    __mod__ = _forward(operator.mod)
    __pow__ = _forward(operator.pow)
    __and__ = _forward(operator.and_)
    __or__ = _forward(operator.or_)
    __xor__ = _forward(operator.xor)
    __lshift__ = _forward(operator.lshift)
    __rshift__ = _forward(operator.rshift)
    __neg__ = _forward(operator.neg)
    __pos__ = _forward(operator.pos)
    __abs__ = _forward(abs)
    __invert__ = _forward(operator.invert)
    __int__ = _forward(int)
    __float__ = _forward(float)
    __index__ = _forward(operator.index)
    __enter__ = _forward(lambda obj: obj.__enter__())
    __exit__ = _forward(lambda obj, *exc: obj.__exit__(*exc))
    __radd__ = _reflect(operator.add)
    __rsub__ = _reflect(operator.sub)
    __rmul__ = _reflect(operator.mul)
    __rtruediv__ = _reflect(operator.truediv)
    __rfloordiv__ = _reflect(operator.floordiv)
    __rmod__ = _reflect(operator.mod)


class PromiseProxy(Proxy):
    """A proxy that builds its object on first use and keeps it from then on.

    ``@app.task`` returns one while the app is not finalized: the task is created when the proxy is
    first touched (an attribute, a call, ``repr``) or when the app finalizes, whichever comes first.
    """

    __slots__ = ("_PromiseProxy__thing", "_PromiseProxy__lock", "__weakref__")

    def __init__(self, target: Callable[..., Any], args: tuple[Any, ...] | None = None,
                 kwargs: dict[str, Any] | None = None, name: str | None = None,
                 __doc__: str | None = None) -> None:
        super().__init__(target, args, kwargs, name, __doc__)
        object.__setattr__(self, "_PromiseProxy__lock", threading.Lock())

    def _get_current_object(self) -> Any:
        try:
            return object.__getattribute__(self, "_PromiseProxy__thing")
        except AttributeError:
            return self.__evaluate__()

    def __evaluated__(self) -> bool:
        """Tell whether the object has been built yet."""
        try:
            object.__getattribute__(self, "_PromiseProxy__thing")
        except AttributeError:
            return False
        return True

    def __maybe_evaluate__(self) -> Any:
        """Build the object if needed and return it."""
        return self._get_current_object()

    def __evaluate__(self) -> Any:
        """Build the object now (once, even when several threads race here) and keep it."""
        with object.__getattribute__(self, "_PromiseProxy__lock"):
            if self.__evaluated__():
                return object.__getattribute__(self, "_PromiseProxy__thing")
            thing = Proxy._get_current_object(self)
            object.__setattr__(self, "_PromiseProxy__thing", thing)
            return thing


class LocalStack:
    """A stack per thread: the running tasks and their requests live on one."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _items(self) -> list[Any]:
        try:
            return self._local.stack
        except AttributeError:
            self._local.stack = []
            return self._local.stack

    def push(self, item: Any) -> None:
        """Put ``item`` on top of this thread's stack."""
        self._items().append(item)

    def pop(self) -> Any:
        """Remove and return the top item, or None when the stack is empty."""
        items = self._items()
        return items.pop() if items else None

    @property
    def top(self) -> Any:
        """The top item of this thread's stack, or None."""
        items = self._items()
        return items[-1] if items else None

    def __len__(self) -> int:
        return len(self._items())
