"""Hypothesis properties of the app layer: task naming and proxy transparency."""

from __future__ import annotations

import keyword
import operator
import sys
import types

from hypothesis import given, settings
from hypothesis import strategies as st

from minicelery import Celery
from minicelery.local import PromiseProxy, Proxy

identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True).filter(
    lambda s: not keyword.iskeyword(s))
dotted = st.lists(identifiers, min_size=1, max_size=3).map(".".join)
mains = st.one_of(st.none(), st.just(""), dotted)


def celery_name(module: str, function: str, main: str | None) -> str:
    """Celery's rule, written out independently of minicelery."""
    if module == "__main__" and main:
        return f"{main}.{function}"
    return f"{module}.{function}"


def make_function(module: str, name: str):
    def fun():
        return name
    fun.__name__ = fun.__qualname__ = name
    fun.__module__ = module
    return fun


@settings(max_examples=150, deadline=None)
@given(module=st.one_of(st.just("__main__"), dotted), function=identifiers, main=mains)
def test_default_task_names_follow_celery(module, function, main):
    app = Celery(main, set_as_current=False)
    registered = module in sys.modules
    if not registered:  # a module that exists only for this example
        sys.modules[module] = types.ModuleType(module)
    try:
        task = app.task(shared=False)(make_function(module, function))
        assert task.name == celery_name(module, function, main)
        assert repr(task) == f"<@task: {task.name} of {main or '__main__'} at {id(app):#x}>"
    finally:
        if not registered:
            del sys.modules[module]


@settings(max_examples=60, deadline=None)
@given(name=st.text(min_size=1, max_size=30), main=mains)
def test_explicit_names_win(name, main):
    app = Celery(main, set_as_current=False)
    assert app.task(name=name, shared=False)(make_function("__main__", "f")).name == name


values = st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=4),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
                   st.tuples(st.integers(), st.integers()), st.booleans(),
                   st.floats(allow_nan=False, allow_infinity=False))  # nan != nan would fail any op

UNARY = [repr, str, bool, len, hash, list, operator.neg, abs, int]
BINARY = [operator.eq, operator.ne, operator.lt, operator.add, operator.mul, operator.contains,
          operator.getitem, operator.mod]


def outcome(fn, *args):
    """(result, None) or (None, exception type): what a call does."""
    try:
        return fn(*args), None
    except Exception as exc:  # noqa: BLE001 - comparing behaviour, whatever it is
        return None, type(exc)


@settings(max_examples=300, deadline=None)
@given(target=values, other=values, op=st.sampled_from(UNARY + BINARY), promise=st.booleans())
def test_a_proxy_behaves_like_its_target(target, other, op, promise):
    proxy = (PromiseProxy if promise else Proxy)(lambda: target)
    args = (other,) if op in BINARY else ()
    assert outcome(op, proxy, *args) == outcome(op, target, *args)
    # Reflected: `other <op> proxy`. `%` is left out: `'' % proxy` sees an object with __getitem__ and
    # formats it as a mapping (Celery's proxy does the same).
    if op in (operator.eq, operator.ne, operator.lt, operator.add, operator.mul):
        assert outcome(op, other, proxy) == outcome(op, other, target)


@settings(max_examples=100, deadline=None)
@given(target=values)
def test_proxy_forwards_attributes_and_isinstance(target):
    proxy = Proxy(lambda: target)
    assert isinstance(proxy, type(target))
    assert dir(proxy) == dir(target)
    assert outcome(getattr, proxy, "real") == outcome(getattr, target, "real")


def test_promise_builds_once_and_proxy_looks_up_every_time():
    built = []
    promise = PromiseProxy(lambda: built.append(1) or len(built))
    assert promise.__evaluated__() is False
    assert promise + 0 == 1 and promise + 0 == 1 and built == [1]
    counter = iter(range(10))
    proxy = Proxy(lambda: next(counter))
    assert [proxy + 0, proxy + 0] == [0, 1]
