"""The worker side of the canvas: what a pool child sends after running a task with an embed.

Each test builds a task message with a given embed, runs it through the child's ``JobHandler`` (the code a
real worker runs) and looks at what the recording broker received and at the result it returns.
"""

from __future__ import annotations

import json

import pytest
from canvas_support import make_app

from minicelery import states
from minicelery.worker.job import Job, JobHandler

REPLY = "client-reply-queue"


def sig(task, args=(), options=None, immutable=False, **extra):
    return {"task": f"canvas_support.{task}", "args": list(args), "kwargs": {}, "options": options or {},
            "subtask_type": None, "immutable": immutable, **extra}


def run(app, task, args, embed, *, task_id="T1", root_id="ROOT"):
    body = json.dumps([list(args), {}, embed]).encode()
    request = {"id": task_id, "retries": 0, "root_id": root_id, "parent_id": None, "group": None,
               "reply_to": REPLY, "correlation_id": task_id, "delivery_info": {"routing_key": "q", "exchange": ""}}
    handler = JobHandler(app, "test@host")
    result = handler(Job(f"canvas_support.{task}", task_id, body, "application/json", "utf-8", request, True))
    meta = json.loads(result.reply[2]) if result.reply else None
    return result, meta


@pytest.fixture
def env():
    return make_app()


def test_next_chain_step_gets_the_result_prepended_and_the_rest_of_the_chain(env):
    app, broker, _ = env
    last = sig("add", [4], {"task_id": "L", "reply_to": REPLY})
    nxt = sig("mul", [3], {"task_id": "M", "reply_to": REPLY})
    result, meta = run(app, "add", [1, 2], {"chain": [last, nxt]})
    (message,) = broker.tasks()
    assert message.headers["task"] == "canvas_support.mul" and message.headers["id"] == "M"
    assert message.properties["correlation_id"] == "M" and message.properties["reply_to"] == REPLY
    assert message.body == [[3, 3], {}, {"callbacks": None, "errbacks": None, "chain": [last], "chord": None}]
    assert message.headers["parent_id"] == "T1" and message.headers["root_id"] == "ROOT"
    assert meta["status"] == "SUCCESS" and meta["children"] == [[["M", None], None]]


def test_immutable_step_keeps_its_args_and_last_step_sends_nothing(env):
    app, broker, _ = env
    run(app, "add", [1, 2], {"chain": [sig("add", [100, 1], {"task_id": "M"}, immutable=True)]})
    assert broker.tasks()[0].args == [100, 1] and broker.tasks()[0].embed["chain"] == []
    broker.sent.clear()
    run(app, "add", [1, 2], {"chain": []})
    assert broker.tasks() == []


def test_step_options_are_honoured(env):
    app, broker, _ = env
    run(app, "add", [1, 2], {"chain": [sig("mul", [3], {"task_id": "F", "queue": "Q2", "priority": 7,
                                                         "countdown": 2})]})
    (message,) = broker.tasks()
    assert message.routing_key == "Q2" and message.properties["priority"] == 7 and message.headers["eta"]


def test_failure_stores_the_same_failure_under_every_remaining_step(env):
    app, broker, _ = env
    steps = [sig("add", [4], {"task_id": "L", "reply_to": "R"}), sig("mul", [5], {"task_id": "M", "reply_to": "R"})]
    result, meta = run(app, "boom", [3], {"chain": steps})
    assert result.state == states.FAILURE and broker.tasks() == []
    copies = [(m.properties["correlation_id"], m.routing_key, m.body) for m in broker.sent]
    assert [(c[0], c[1]) for c in copies] == [("L", "R"), ("M", "R")]
    for _, _, body in copies:
        assert body["status"] == "FAILURE" and body["result"] == meta["result"]
        assert body["traceback"] == meta["traceback"] and "parent_id" not in body


def test_one_callback_is_a_task_several_are_a_group(env):
    app, broker, _ = env
    run(app, "add", [1, 2], {"callbacks": [sig("echo", ["L"])]})
    (one,) = broker.tasks()
    assert one.args == [3, "L"] and one.headers["group"] is None and one.headers["parent_id"] == "T1"
    assert one.properties["reply_to"] == REPLY  # the client's queue, so the callback's result is not lost
    broker.sent.clear()
    result, meta = run(app, "add", [1, 2], {"callbacks": [sig("echo", ["L1"]), sig("echo", ["L2"])]})
    first, second = broker.tasks()
    assert first.headers["group"] == second.headers["group"] is not None
    assert [first.headers["group_index"], second.headers["group_index"]] == [0, 1]
    assert [first.args, second.args] == [[3, "L1"], [3, "L2"]]
    (gid, _), members = meta["children"][0]
    assert gid == first.headers["group"] and len(members) == 2


def test_callbacks_are_not_sent_on_failure(env):
    app, broker, _ = env
    run(app, "boom", [1], {"callbacks": [sig("echo", ["L"])]})
    assert broker.tasks() == []


def test_errbacks_new_style_called_here_old_style_sent_as_a_group(env):
    app, broker, _ = env
    seen = []

    @app.task(name="canvas_support.on_err")
    def on_err(request, exc, traceback, tag):
        seen.append((request.id, repr(exc), traceback.splitlines()[-1], tag))

    @app.task(name="canvas_support.on_err_old")
    def on_err_old(task_id):
        return task_id

    run(app, "boom", [7], {"errbacks": [sig("on_err", ["t"]), sig("on_err_old")]})
    assert seen == [("T1", "ValueError('boom', 7)", "ValueError: ('boom', 7)", "t")]
    (message,) = broker.tasks()
    assert message.headers["task"] == "canvas_support.on_err_old" and message.args == ["T1"]
    assert message.headers["group_index"] == 0 and message.headers["group"] and message.headers["parent_id"] == "T1"


def test_a_raising_errback_is_logged_and_the_failure_kept(env, caplog):
    app, broker, _ = env

    @app.task(name="canvas_support.bad_errback")
    def bad_errback(request, exc, traceback):
        raise RuntimeError("errback broke")

    result, meta = run(app, "boom", [1], {"errbacks": [sig("bad_errback")]})
    assert meta["result"]["exc_type"] == "ValueError" and "raised an exception" in caplog.text


@pytest.mark.parametrize("embed", [
    {"chain": [{"task": "canvas_support.add", "args": [1]}]},  # no kwargs, no options
    {"callbacks": [{"task": "canvas_support.echo", "args": [], "kwargs": {}}]},  # no options
    {"chain": "not a list"},
    {"callbacks": [42]},
    {"chain": [sig("add", [1], subtask_type="weird")]},
])
def test_malformed_embed_fails_the_task_with_a_clear_error_and_sends_nothing(env, embed):
    app, broker, _ = env
    result, meta = run(app, "add", [1, 2], embed)
    assert result.state == states.FAILURE and meta["result"]["exc_type"] == "InvalidTaskError"
    assert broker.sent == []


def test_unknown_task_in_a_step_is_sent_by_name(env):
    app, broker, _ = env
    run(app, "add", [1, 2], {"chain": [sig("nope", [1], {"task_id": "N"})]})
    (message,) = broker.tasks()
    assert message.headers["task"] == "canvas_support.nope" and message.args == [3, 1]


def test_group_in_the_chain_sends_one_message_per_member(env):
    app, broker, _ = env
    members = [sig("add", [10], {"task_id": "A", "reply_to": REPLY, "group_index": 0}),
               sig("mul", [10], {"task_id": "B", "reply_to": REPLY, "group_index": 1})]
    grp = {"task": "celery.group", "args": [], "kwargs": {"tasks": members},
           "options": {"task_id": "G", "root_id": None, "parent_id": None}, "subtask_type": "group",
           "immutable": False}
    result, meta = run(app, "add", [1, 1], {"chain": [grp]})
    first, second = broker.tasks()
    assert [m.headers["id"] for m in (first, second)] == ["A", "B"]
    assert [m.args for m in (first, second)] == [[2, 10], [2, 10]]
    assert {m.headers["group"] for m in (first, second)} == {"G"}
    assert [m.headers["group_index"] for m in (first, second)] == [0, 1]
    assert meta["children"] == [[["G", None], [[["A", None], None], [["B", None], None]]]]


def test_result_carries_the_group_id(env):
    app, _, _ = env
    body = json.dumps([[1, 2], {}, None]).encode()
    request = {"id": "X", "group": "GID", "reply_to": REPLY, "delivery_info": {}}
    result = JobHandler(app, "h")(Job("canvas_support.add", "X", body, "application/json", "utf-8", request, True))
    assert json.loads(result.reply[2])["group_id"] == "GID"


def test_failure_before_a_group_fails_every_member(env):
    app, broker, _ = env
    members = [sig("add", [10], {"task_id": "A", "reply_to": "R"}), sig("mul", [10], {"task_id": "B", "reply_to": "R"})]
    grp = {"task": "celery.group", "args": [], "kwargs": {"tasks": members}, "options": {"task_id": "G"},
           "subtask_type": "group", "immutable": False}
    run(app, "boom", [1], {"chain": [grp]})
    assert [m.properties["correlation_id"] for m in broker.sent] == ["A", "B"]
    assert all(m.body["status"] == "FAILURE" for m in broker.sent)
