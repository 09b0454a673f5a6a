"""The application object: creation, current app, naming, finalization, sharing (spec checks 1-25)."""

from __future__ import annotations

import re
import sys
import threading
import warnings

import pytest

from minicelery import Celery, current_app, shared_task
from minicelery.exceptions import DuplicateTaskNameWarning, ImproperlyConfigured, NotRegistered
from minicelery.local import PromiseProxy
from minicelery.registry import TaskRegistry


def in_main(source: str, **names):
    """Run ``source`` as if typed into ``python`` (module ``__main__``) and return its namespace."""
    namespace = {"__name__": "__main__", **names}
    exec(compile(source, "<main>", "exec"), namespace)
    return namespace


def test_repr_matches_celery():
    app = Celery()
    assert repr(app) == f"<Celery __main__ at {id(app):#x}>"
    assert re.fullmatch(r"<Celery tasks at 0x[0-9a-f]+>", repr(Celery("tasks")))

    class MyCelery(Celery):
        pass

    assert repr(MyCelery("m")).startswith("<MyCelery m at 0x")


def test_creation_does_only_what_the_tutorial_says():
    app = Celery("tasks")
    assert app.main == "tasks" and Celery().main is None
    assert app.clock.value == 0
    assert app.finalized is False and app.configured is False
    assert isinstance(app._tasks, TaskRegistry) and len(app._tasks) == 0
    assert app._broker is None  # no connection


def test_default_app_is_created_on_first_use():
    assert current_app.main == "default"
    assert re.fullmatch(r"<Celery default at 0x[0-9a-f]+>", repr(current_app))


def test_new_app_becomes_current_unless_told_not_to():
    a = Celery("a")
    assert current_app._get_current_object() is a
    assert repr(current_app) == repr(a) and str(current_app) == str(a)
    assert current_app == a and current_app is not a
    Celery("b", set_as_current=False)
    assert current_app._get_current_object() is a


def test_current_app_is_per_thread_and_default_is_global():
    main = Celery("m")
    seen = []

    def look():
        seen.append(current_app.main)

    thread = threading.Thread(target=look)
    thread.start()
    thread.join()
    main.set_default()
    thread = threading.Thread(target=look)
    thread.start()
    thread.join()
    assert seen == ["default", "m"]


def test_names_in_main_and_in_modules():
    ns = in_main("from minicelery import Celery\napp = Celery('tasks')\n@app.task\ndef add(x, y): return x + y\n")
    assert ns["add"].name == "tasks.add"
    assert repr(ns["add"]) == f"<@task: tasks.add of tasks at {id(ns['app']):#x}>"
    ns = in_main("from minicelery import Celery\napp = Celery()\n@app.task\ndef add(x, y): return x + y\n")
    assert ns["add"].name == "__main__.add"

    app = Celery("whatever")

    @app.task
    def add(x, y):
        return x + y

    assert add.name == f"{__name__}.add"
    assert app.task(name="sum-of-two-numbers")(lambda x, y: x + y).name == "sum-of-two-numbers"


def test_imported_task_is_named_after_its_module(tmp_path, monkeypatch):
    (tmp_path / "rand.py").write_text(
        "from minicelery import Celery\napp = Celery('main_name')\n@app.task\ndef runme(): return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import rand
    try:
        assert rand.runme.name == "rand.runme"
    finally:
        sys.modules.pop("rand", None)


def test_promise_is_built_on_touch_without_finalizing():
    app = Celery("tasks")

    @app.task
    def add(x, y):
        return x + y

    assert type(add) is PromiseProxy and add.__evaluated__() is False
    assert repr(add) == f"<@task: {__name__}.add of tasks at {id(app):#x}>"
    assert add.__evaluated__() is True and app.finalized is False
    assert add(2, 3) == 5 and app.finalized is False
    assert add.request.called_directly is True and add.request.id is None
    assert list(app._tasks) == [f"{__name__}.add"]


def test_tasks_finalizes_and_autofinalize_false_refuses():
    app = Celery("af", autofinalize=False)

    @app.task
    def aft():
        return 1

    with pytest.raises(RuntimeError, match="^Contract breach: app not finalized$"):
        app.tasks
    with pytest.raises(RuntimeError, match="Contract breach"):
        aft()
    with pytest.raises(RuntimeError, match="Contract breach"):
        aft.name
    app.finalize()
    assert aft() == 1 and aft.name.endswith(".aft")
    assert app.finalized


def test_task_defined_after_finalize_is_created_at_once():
    app = Celery()
    app.finalize()

    @app.task
    def now():
        return 1

    assert type(now) is not PromiseProxy and now.name in app.tasks


def test_decorator_argument_errors():
    app = Celery()
    with pytest.raises(TypeError, match=r"^argument 1 to @task\(\) must be a callable$"):
        app.task(1)
    with pytest.raises(TypeError, match=re.escape("@task() takes exactly 1 argument (2 given)")):
        app.task(len, abs)


def test_not_registered_is_a_keyerror_with_celerys_texts_and_suggestions():
    app = Celery()
    with pytest.raises(NotRegistered) as info:
        app.tasks["nope"]
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "'nope'"
    assert repr(info.value) == "Task of kind 'nope' never registered, please make sure it's imported."
    app.task(name="proj.add")(lambda: 1)
    with pytest.raises(NotRegistered) as info:
        app.tasks["proj.ad"]
    assert "Did you mean 'proj.add'?" in repr(info.value)
    with pytest.raises(NotRegistered):
        app.tasks.unregister("nope")
    assert app.tasks.periodic() == {} and len(app.tasks.regular()) == len(app.tasks)


def test_task_defaults_and_options():
    app = Celery()

    @app.task
    def plain(x):
        return x

    assert (plain.max_retries, plain.default_retry_delay, plain.acks_late, plain.ignore_result,
            plain.rate_limit, plain.serializer, plain.typing) == (3, 180, False, False, None, "json", True)
    assert getattr(plain, "queue", "<none>") == "<none>"

    class MyBase(app.Task):
        def hello(self):
            return "base!"

    @app.task(bind=True, base=MyBase, name="custom.name", max_retries=5, queue="q1", foo_custom=1)
    def custom(self, a):
        return self.name, a, self.request.id, self.hello()

    assert (custom.max_retries, custom.queue, custom.foo_custom) == (5, "q1", 1)
    assert isinstance(custom, MyBase) and custom.__class__.__mro__[1] is MyBase
    assert custom(1) == ("custom.name", 1, None, "base!")


def test_duplicate_name_warns_and_keeps_the_first():
    app = Celery()
    app.finalize()
    first = app.task(name="dup")(lambda: "first")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = app.task(name="dup")(lambda: "second")
        assert second() == "first"
    assert any(issubclass(w.category, DuplicateTaskNameWarning) for w in caught)
    assert first() == "first"


def test_task_sharing_between_apps(tmp_path, monkeypatch):
    (tmp_path / "pkg_shared.py").write_text(
        "from minicelery import Celery\napp1 = Celery('app1')\n"
        "@app1.task\ndef add(x, y): return x + y\n"
        "@app1.task(shared=False)\ndef private(): return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import pkg_shared as mod
    try:
        app2 = Celery("app2")
        assert "pkg_shared.add" in app2.tasks and "pkg_shared.private" not in app2.tasks
        assert app2.tasks["pkg_shared.add"].app is app2
        assert app2.tasks["pkg_shared.add"] is not mod.app1.tasks["pkg_shared.add"]
        assert mod.add.app is mod.app1
    finally:
        sys.modules.pop("pkg_shared", None)


def test_already_finalized_apps_do_not_get_later_tasks_but_get_shared_tasks():
    app0 = Celery("app0")
    app0.finalize()
    app1 = Celery("app1")
    app1.task(name="later")(lambda: 1)
    assert "later" not in app0.tasks

    @shared_task(name="shared.one")
    def one():
        return 1

    assert "shared.one" in app0.tasks


def test_shared_task_follows_the_current_app():
    app1 = Celery("xproj")

    @shared_task
    def foo():
        return 1

    assert foo.app is app1
    app2 = Celery("yproj")
    assert foo.app is app2
    assert foo() == 1
    with pytest.raises(TypeError, match="applied more than once"):
        shared_task(foo.run)


def test_shared_task_from_main_is_named_per_app():
    ns = in_main("from minicelery import Celery, shared_task\nCelery('app2')\n"
                 "@shared_task\ndef sh(): return 1\n")
    assert ns["sh"].name == "app2.sh"
    Celery("a3")
    assert ns["sh"].name == "a3.sh"


def test_constructor_settings():
    app = Celery("c", broker="amqp://b//", backend="rpc://", include=["x.tasks"],
                 task_serializer="msgpack", foo="bar")
    assert app.conf.broker_url == "amqp://b//" and app.conf.result_backend == "rpc://"
    assert app.conf.include == ["x.tasks"] and app.conf.task_serializer == "msgpack"
    assert app.conf.foo == "bar"


def test_configuration_write_does_not_load_but_read_does():
    app = Celery()
    app.conf.task_serializer = "x"
    assert app.configured is False
    assert app.conf.broker_url is None
    assert app.configured is True


def test_config_from_envvar(monkeypatch):
    monkeypatch.delenv("MY_CFG", raising=False)
    app = Celery()
    with pytest.raises(ImproperlyConfigured) as info:
        app.config_from_envvar("MY_CFG")
    assert str(info.value).startswith(
        "The environment variable 'MY_CFG' is not set,\nand as such the configuration could not be loaded.")
    assert 'MY_CFG="proj.celeryconfig"' in str(info.value)
    assert app.config_from_envvar("MY_CFG", silent=True) is False


def test_app_task_base_and_register_task():
    app = Celery("reg")
    assert app.Task is app.Task and app.Task._app is app

    class NoName(app.Task):
        def run(self):
            return 42

    task = app.register_task(NoName)
    assert task.name == f"{__name__}.NoName" and app.tasks[task.name] is task and task() == 42


def test_app_is_a_context_manager():
    with Celery("ctx") as app:
        assert isinstance(app, Celery)
