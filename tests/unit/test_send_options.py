"""One ``SendOptions`` per call: made by ``apply_async``/``send_task``/``retry``, completed once by the app."""

from __future__ import annotations

import pytest

from minicelery import Celery, Retry
from minicelery.message import SendOptions
from minicelery.sending import complete, route
from minicelery.task import Context


class Capturing(Celery):
    """An app whose ``send_task`` records the options it is given instead of publishing."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, SendOptions]] = []

    def send_task(self, name, args=None, kwargs=None, *, options=None, **call_options):
        self.sent.append((name, options if options is not None else SendOptions.from_call(call_options)))


@pytest.fixture
def app():
    app = Capturing("t", set_as_current=False)
    app.finalize()
    return app


def test_apply_async_makes_the_options_once_with_the_tasks_defaults(app):
    @app.task(queue="q-task", time_limit=30, soft_time_limit=20, priority=3, serializer="msgpack")
    def add(x, y):
        return x + y

    add.apply_async((1, 2), countdown=5, task_id="tid", shadow="shown", priority=7)
    name, options = app.sent[-1]
    assert name == add.name
    assert (options.task_id, options.shadow, options.countdown) == ("tid", "shown", 5)
    assert (options.queue, options.time_limit, options.soft_time_limit) == ("q-task", 30, 20)
    assert (options.priority, options.serializer) == (7, "msgpack")  # the caller wins over the task


def test_options_celery_has_but_minicelery_ignores_are_dropped_and_none_means_unset():
    options = SendOptions.from_call({"mandatory": True, "queue": None, "retries": 2})
    assert options == SendOptions(retries=2)


def test_link_and_link_error_become_the_bodys_callbacks_and_errbacks_as_lists():
    first, second, errback = {"task": "a"}, {"task": "b"}, {"task": "e"}
    options = SendOptions.from_call({"link": [first, second], "link_error": errback})
    assert (options.callbacks, options.errbacks) == ([first, second], [errback])
    assert SendOptions.from_call({"link": None, "link_error": []}) == SendOptions()


def test_soft_limit_above_hard_limit_is_refused_by_the_options():
    with pytest.raises(ValueError, match="soft_time_limit must be less than or equal to time_limit"):
        SendOptions(time_limit=1, soft_time_limit=2)


def test_send_task_takes_options_or_keywords_not_both():
    app = Celery("t", set_as_current=False)
    with pytest.raises(TypeError, match="not both"):
        app.send_task("x", options=SendOptions(), queue="q")


def test_complete_fills_the_apps_defaults_once():
    app = Celery("t", set_as_current=False, task_serializer="msgpack", task_ignore_result=True,
                 task_default_delivery_mode=1)
    done = complete(SendOptions(), app.conf, reply_queue="mine")
    assert (done.serializer, done.ignore_result, done.delivery_mode, done.reply_to) == ("msgpack", True, 1, "mine")
    given = complete(SendOptions(serializer="json", ignore_result=False, reply_to="theirs"), app.conf,
                     reply_queue="mine")
    assert (given.serializer, given.ignore_result, given.reply_to) == ("json", False, "theirs")


def test_complete_links_a_task_sent_from_a_running_task_to_its_parent():
    conf = Celery("t", set_as_current=False).conf
    parent = Context(id="p", root_id="r", called_directly=False)
    linked = complete(SendOptions(), conf, reply_queue="q", parent=parent)
    assert (linked.parent_id, linked.root_id) == ("p", "r")
    direct = complete(SendOptions(), conf, reply_queue="q", parent=Context(id="p"))  # called directly
    assert (direct.parent_id, direct.root_id) == (None, None)


def test_retry_resends_with_the_requests_values(app):
    @app.task(bind=True, max_retries=5)
    def flaky(self):
        return None

    flaky.push_request(id="tid", root_id="root", reply_to="rq", retries=1, timelimit=(30, 20),
                       called_directly=False, ignore_result=False,
                       delivery_info={"exchange": "", "routing_key": "q-in", "priority": 4})
    try:
        with pytest.raises(Retry):
            flaky.retry(countdown=3)
    finally:
        flaky.pop_request()
    _, options = app.sent[-1]
    assert (options.task_id, options.retries, options.parent_id, options.root_id) == ("tid", 2, "tid", "root")
    assert (options.time_limit, options.soft_time_limit, options.priority) == (30, 20, 4)
    assert (options.queue, options.reply_to, options.countdown) == ("q-in", "rq", 3)


def test_route_reads_the_options_and_the_settings():
    conf = Celery("t", set_as_current=False, task_routes={"proj.*": {"queue": "globbed"}}).conf
    assert route(conf, "proj.add", SendOptions()) == ("", "globbed", "globbed")
    assert route(conf, "other", SendOptions()) == ("", "celery", "celery")
    assert route(conf, "proj.add", SendOptions(queue="q")) == ("", "q", "q")
    assert route(conf, "proj.add", SendOptions(exchange="ex", routing_key="rk")) == ("ex", "rk", None)
