"""Tasks run here: direct calls, apply(), eager mode, retries, argument checks, handlers."""

from __future__ import annotations

import re

import pytest

from minicelery import Celery, EagerResult, current_task, states
from minicelery.exceptions import MaxRetriesExceededError, Retry
from minicelery.task import Context, backoff_countdown


@pytest.fixture
def app():
    app = Celery("t", task_always_eager=True)
    app.finalize()
    return app


def test_default_request_context():
    assert repr(Context()) == "<Context: {'headers': None}>"
    ctx = Context(id="x", retries=2)
    assert (ctx.id, ctx.retries, ctx.called_directly, ctx.delivery_info) == ("x", 2, True, None)


def test_arguments_are_checked_with_pythons_own_message(app):
    @app.task
    def add(x, y):
        return x + y

    with pytest.raises(TypeError, match=re.escape("add() missing 1 required positional argument: 'y'")):
        add.delay(1)
    with pytest.raises(TypeError, match=re.escape("add() takes 2 positional arguments but 3 were given")):
        add.delay(1, 2, 3)

    @app.task(bind=True)
    def bound(self, x):
        return x

    assert bound.delay(1).get() == 1
    with pytest.raises(TypeError):
        bound.delay()


def test_soft_limit_above_hard_limit_is_refused(app):
    @app.task
    def noop():
        return None

    with pytest.raises(ValueError, match="soft_time_limit must be less than or equal to time_limit"):
        noop.apply_async(time_limit=1, soft_time_limit=2)


def test_always_eager_returns_an_eager_result(app):
    @app.task
    def div(a, b):
        return a / b

    result = div.delay(4, 2)
    assert isinstance(result, EagerResult) and repr(result) == f"<EagerResult: {result.id}>"
    assert (result.get(), result.state, result.successful()) == (2.0, states.SUCCESS, True)
    failed = div.delay(1, 0)
    assert failed.state == states.FAILURE and isinstance(failed.result, ZeroDivisionError)
    assert failed.traceback.rstrip().endswith("ZeroDivisionError: division by zero")
    with pytest.raises(ZeroDivisionError):
        failed.get()
    assert isinstance(failed.get(propagate=False), ZeroDivisionError)
    app.conf.task_eager_propagates = True
    with pytest.raises(ZeroDivisionError):
        div.delay(1, 0)


def test_eager_arguments_go_through_the_serializer(app):
    @app.task
    def echo(value):
        return value

    assert echo.delay((1, 2)).get() == [1, 2]  # a tuple comes back a list, as from a worker
    with pytest.raises(Exception, match="not JSON serializable"):
        echo.delay(object())


def test_apply_runs_with_a_request_and_handlers(app):
    seen = []

    class Tracked(app.Task):
        def on_success(self, retval, task_id, args, kwargs):
            seen.append(("success", retval, task_id))

        def after_return(self, status, retval, task_id, args, kwargs, einfo):
            seen.append(("after", status))

    @app.task(bind=True, base=Tracked)
    def who(self):
        assert current_task._get_current_object() is self
        return self.request.id, self.request.is_eager, self.request.called_directly

    result = who.apply(task_id="abc")
    assert result.get() == ("abc", True, False)  # eager results are not serialized, as in Celery
    assert seen == [("success", ("abc", True, False), "abc"), ("after", states.SUCCESS)]


def test_retry_called_directly_raises(app):
    @app.task(bind=True)
    def flaky(self):
        raise self.retry()

    with pytest.raises(Retry, match="^Task can be retried$"):
        flaky()


def test_eager_retries_until_max_retries(app):
    calls = []

    @app.task(bind=True, max_retries=2)
    def always(self):
        calls.append(self.request.retries)
        raise self.retry(countdown=0)

    result = always.apply()
    assert calls == [0, 1, 2]
    assert result.state == states.FAILURE and isinstance(result.result, MaxRetriesExceededError)
    assert str(result.result) == f"Can't retry {always.name}[{result.id}] args:() kwargs:{{}}"


def test_retry_with_exc_ends_with_that_exception(app):
    @app.task(bind=True, max_retries=1)
    def flaky(self):
        raise self.retry(exc=KeyError("k"), countdown=0)

    result = flaky.apply()
    assert result.state == states.FAILURE and result.result.args == ("k",)
    assert isinstance(result.result, KeyError)


def test_autoretry_for(app):
    calls = []

    @app.task(autoretry_for=(ValueError,), retry_kwargs={"max_retries": 3, "countdown": 0})
    def wobbly():
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("not yet")
        return "done"

    assert wobbly.apply().get() == "done" and len(calls) == 3

    @app.task(autoretry_for=(ValueError,), dont_autoretry_for=(KeyError,))
    def picky():
        raise KeyError("no retry")

    assert picky.apply().state == states.FAILURE


def test_backoff_countdown_follows_celery():
    assert [backoff_countdown(True, n, 600, False) for n in range(5)] == [1, 2, 4, 8, 16]
    assert backoff_countdown(3, 10, 600, False) == 600
    assert all(0 <= backoff_countdown(2, 3, 600, True) <= 16 for _ in range(50))


def test_custom_call_in_a_base_class_is_used(app):
    class Debug(app.Task):
        def __call__(self, *args, **kwargs):
            return ("wrapped", self.run(*args, **kwargs))

    @app.task(base=Debug)
    def inner():
        return 1

    assert inner.apply().get() == ("wrapped", 1)
