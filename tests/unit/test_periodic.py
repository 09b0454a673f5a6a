"""``app.add_periodic_task`` and the app signals Celery users call it from (spec part C.1, AC-C4)."""

from __future__ import annotations

import logging
from datetime import timedelta

from minicelery import Celery
from minicelery.schedules import crontab
from minicelery.signals import Signal


class Sig:
    """A stand-in for a canvas signature (``task.s(...)``): name, args, kwargs, options, clone, repr."""

    def __init__(self, name, args=(), kwargs=None, options=None):
        self.name, self.args, self.kwargs, self.options = name, tuple(args), dict(kwargs or {}), options or {}

    def clone(self, args=(), kwargs=None):
        return Sig(self.name, tuple(args) + self.args, {**self.kwargs, **(kwargs or {})}, dict(self.options))

    def __repr__(self):
        shown = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(shown)})"


def make_app(**settings):
    app = Celery("proj", set_as_current=False, **settings)

    @app.task(name="proj.tick", shared=False)
    def tick(*args):
        return args

    return app, tick


def test_on_after_configure_adds_named_and_unnamed_entries_as_in_celerys_docs():
    app, tick = make_app()
    seen = []

    @app.on_after_configure.connect
    def setup(sender, **kwargs):
        seen.append((sender, sorted(kwargs)))
        sender.add_periodic_task(7.0, Sig("proj.tick", ("added",)), name="added-7s")
        sender.add_periodic_task(crontab(minute="*/2"), Sig("proj.tick", ("cron2",)), expires=10)

    assert seen == []  # nothing is read before the first setting
    schedule = app.conf.beat_schedule
    assert seen == [(app, ["signal", "source"])]
    assert schedule["added-7s"] == {"schedule": 7.0, "task": "proj.tick", "args": ("added",), "kwargs": {},
                                    "options": {}}
    assert schedule["proj.tick('cron2')"]["options"] == {"expires": 10}
    assert schedule["proj.tick('cron2')"]["schedule"] == crontab(minute="*/2")


def test_on_after_finalize_works_too_and_a_task_may_be_given_directly():
    app, tick = make_app()

    @app.on_after_finalize.connect
    def setup(sender, **kwargs):
        sender.add_periodic_task(timedelta(seconds=5), tick, args=(1, 2), kwargs={"k": "v"}, queue="q")

    app.finalize()
    assert app.conf.beat_schedule == {"proj.tick(1, 2, k='v')": {
        "schedule": timedelta(seconds=5), "task": "proj.tick", "args": (1, 2), "kwargs": {"k": "v"},
        "options": {"queue": "q"}}}


def test_calls_before_configuration_wait_for_it_and_the_last_unnamed_twin_wins(caplog):
    app, tick = make_app()
    assert app.add_periodic_task(10, Sig("proj.tick", ("dup",))) == "proj.tick('dup')"
    assert not app.configured
    app.add_periodic_task(11, Sig("proj.tick", ("dup",)))
    with caplog.at_level(logging.WARNING):
        assert app.conf.beat_schedule["proj.tick('dup')"]["schedule"] == 11
    assert "shadowed a previous unnamed periodic task" in caplog.text
    assert list(app.conf.beat_schedule) == ["proj.tick('dup')"]


def test_signature_args_are_prepended_and_options_merged():
    app, _ = make_app()
    app.conf.beat_schedule = {"existing": {"task": "x", "schedule": 1}}
    key = app.add_periodic_task(3, Sig("proj.tick", ("b",), {"k": 1}, {"queue": "a"}), args=("a",),
                                priority=3)
    assert key == "proj.tick('a', 'b', k=1)"
    assert app.conf.beat_schedule[key]["options"] == {"queue": "a", "priority": 3}
    assert "existing" in app.conf.beat_schedule


def test_signal_connect_send_sender_filter_and_failing_receiver(caplog):
    signal, calls = Signal("test.signal"), []
    first, second = object(), object()

    def everyone(sender, **kwargs):
        calls.append(("everyone", sender, kwargs))
        return 1

    @signal.connect(sender=first)
    def only_first(sender, **kwargs):
        raise RuntimeError("boom")

    signal.connect(everyone)
    signal.connect(everyone)  # twice: called once
    with caplog.at_level(logging.ERROR):
        responses = signal.send(first, extra=2)
    assert [r[0] for r in responses] == [only_first, everyone]
    assert isinstance(responses[0][1], RuntimeError) and responses[1][1] == 1
    assert "Signal handler" in caplog.text and "boom" in caplog.text
    assert calls == [("everyone", first, {"signal": signal, "extra": 2})]
    assert [r[0] for r in signal.send(second)] == [everyone]
    assert signal.disconnect(everyone) and not signal.disconnect(everyone)
    assert repr(signal) == "<Signal: test.signal>"


def test_a_real_signature_from_task_s_makes_the_entry_celerys_docs_show():
    app, tick = make_app()

    @app.on_after_configure.connect
    def setup(sender, **kwargs):
        sender.add_periodic_task(10.0, tick.s("hello", "world"), name="say hello every 10")
        sender.add_periodic_task(crontab(hour=7, minute=30, day_of_week=1), tick.s("monday"),
                                 expires=60)

    app.conf.timezone  # noqa: B018 - the first read configures the app, which fires on_after_configure
    entries = app.conf.beat_schedule
    hello = entries["say hello every 10"]
    assert (hello["task"], tuple(hello["args"]), hello["schedule"]) == ("proj.tick", ("hello", "world"), 10.0)
    (monday,) = [entry for name, entry in entries.items() if name != "say hello every 10"]
    assert monday["task"] == "proj.tick" and tuple(monday["args"]) == ("monday",)
    assert monday["options"]["expires"] == 60 and monday["schedule"] == crontab(hour=7, minute=30, day_of_week=1)
