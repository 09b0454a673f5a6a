"""Signatures and the client side of the canvas: the dicts, the | algebra, and the messages sent.

Expected values follow Celery 5's observed wire behaviour (docs/canvas.md); messages are caught by a
recording broker, so no RabbitMQ is needed.
"""

from __future__ import annotations

import json

import pytest
from canvas_support import make_app

import minicelery
from minicelery import GroupResult, Signature, chain, chord, group, maybe_signature, signature
from minicelery.canvas import _chain
from minicelery.chords import _chord


@pytest.fixture
def env():
    app, broker, tasks = make_app()
    return app, broker, tasks


def test_signature_json_is_celerys_six_keys_in_order(env):
    app, _, t = env
    assert json.dumps(t["add"].s(1, y=2)) == (
        '{"task": "canvas_support.add", "args": [1], "kwargs": {"y": 2}, "options": {}, '
        '"subtask_type": null, "immutable": false}')
    assert t["add"].si(1, 2)["immutable"] is True
    assert t["add"].s(1, 2).set(immutable=True) == t["add"].si(1, 2)
    assert t["add"].signature((1, 2), {}, countdown=3).options == {"countdown": 3}
    assert signature("canvas_support.add", args=(1, 2)) == t["add"].s(1, 2)


def test_signature_attributes_and_freeze(env):
    app, _, t = env
    sig = t["add"].s(1, 2).set(queue="q1")
    assert (sig.task, sig.name, sig.args, sig.kwargs, sig.options) == (
        "canvas_support.add", "canvas_support.add", (1, 2), {}, {"queue": "q1"})
    assert sig.id is None
    result = sig.freeze()
    assert sig.id == result.id and list(sig.options) == ["queue", "task_id", "reply_to"]
    assert sig.options["reply_to"] == app.reply_queue


def test_link_and_link_error_are_lists_in_call_order(env):
    _, _, t = env
    sig = t["add"].s(1, 2)
    sig.link(t["mul"].s(10))
    sig.link_error(t["echo"].s())
    sig.link(t["echo"].s("x"))
    assert [s["task"] for s in sig.options["link"]] == ["canvas_support.mul", "canvas_support.echo"]
    assert [s["task"] for s in sig.options["link_error"]] == ["canvas_support.echo"]


def test_clone_prepends_args_unless_immutable(env):
    _, _, t = env
    assert t["add"].s(2).clone((8,)).args == (8, 2)
    assert t["add"].si(2, 2).clone((8,)).args == (2, 2)
    assert t["echo"].s(k=1).clone((), {"j": 2}).kwargs == {"k": 1, "j": 2}


def test_a_clone_shares_no_members_or_options_with_its_original(env):
    _, _, t = env
    inner = t["add"].s(1, 1) | t["mul"].s(2)
    original = group(inner, t["add"].s(2, 2).set(queue="q"))
    copied = original.clone()
    copied.tasks[0].tasks[0].options["task_id"] = "frozen-in-the-copy"
    copied.tasks[1].options["queue"] = "other"
    assert inner.tasks[0].options == {} and original.tasks[1].options == {"queue": "q"}


def test_a_group_sent_twice_sends_new_ids_and_leaves_the_signature_as_it_was(env):
    _, broker, t = env
    g = group(t["add"].s(1, 1) | t["mul"].s(2), t["add"].s(2, 2))
    before = json.dumps(g)
    first, second = g.apply_async(), g.apply_async()
    ids = [m.headers["id"] for m in broker.tasks()]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert not {r.id for r in first.results} & {r.id for r in second.results}
    assert json.dumps(g) == before


@pytest.mark.parametrize("build", [
    lambda t: t["add"].s(1, 2), lambda t: t["add"].si(1, 2), lambda t: t["add"].s(1) | t["mul"].s(3),
    lambda t: group(t["add"].s(1, 1), t["mul"].s(2, 2)), lambda t: chord([t["add"].s(1, 1)], t["tsum"].s()),
])
def test_round_trip_keeps_class_and_dict(env, build):
    _, _, t = env
    original = build(t)
    back = signature(json.loads(json.dumps(original)))
    assert type(back) is type(original) or (isinstance(original, _chain) and isinstance(back, _chain))
    assert json.dumps(back) == json.dumps(original)
    assert type(maybe_signature(json.loads(json.dumps(original)))) is type(back)


def test_operators_give_celerys_types(env):
    _, _, t = env
    a, b, c = t["add"].s(1, 1), t["add"].s(2, 2), t["tsum"].s()
    assert isinstance(group(a, b) | c, _chord)
    assert isinstance(a | group(b, c), _chain) and not isinstance(a | group(b, c), _chord)
    assert len(((a | b) | c).tasks) == 3 and len((a | (b | c)).tasks) == 3
    assert isinstance((group(a, b) | group(a, b)).body, group)
    upgraded = chain(t["add"].s(1, 2), group(a, b), c)
    assert [type(s) for s in upgraded.tasks] == [Signature, _chord]
    assert isinstance((chord([a, b], c) | t["add"].s(5)).body, _chain)
    assert repr(group([])) == "group(<empty>)"
    assert repr(t["add"].s(1, 2) | t["mul"].s(3)) == "canvas_support.add(1, 2) | mul(3)"


def test_exports_match_celery():
    for name in ("chain", "chord", "group", "signature", "maybe_signature", "Signature", "GroupResult",
                 "ResultSet"):
        assert name in minicelery.__all__ and hasattr(minicelery, name)


def test_chain_sends_first_task_with_the_rest_frozen_and_reversed(env):
    app, broker, t = env
    result = chain(t["add"].s(1, 2), t["mul"].s(3), t["add"].s(4)).apply_async()
    (message,) = broker.tasks()
    assert message.args == [1, 2] and message.embed["callbacks"] is None
    steps = message.embed["chain"]
    assert [(s["task"], s["args"]) for s in steps] == [("canvas_support.add", [4]), ("canvas_support.mul", [3])]
    assert all(list(s["options"]) == ["task_id", "reply_to"] for s in steps)
    assert all(s["options"]["reply_to"] == app.reply_queue for s in steps)
    assert result.id == steps[0]["options"]["task_id"]
    assert result.parent.id == steps[1]["options"]["task_id"]
    assert result.parent.parent.id == message.headers["id"] == message.headers["root_id"]
    assert result.parent.parent.parent is None


def test_chain_options_reach_only_the_first_task_and_args_are_prepended(env):
    _, broker, t = env
    chain(t["add"].s(2), t["mul"].s(3)).apply_async((10,), priority=3, headers={"x": "h"}, task_id="LAST")
    (message,) = broker.tasks()
    assert message.args == [10, 2] and message.properties["priority"] == 3 and message.headers["x"] == "h"
    (step,) = message.embed["chain"]
    assert step["options"] == {"task_id": "LAST", "reply_to": step["options"]["reply_to"]}


def test_chain_link_goes_to_the_last_step_and_link_error_everywhere(env):
    _, broker, t = env
    chain(t["add"].s(1, 2), t["mul"].s(3)).apply_async(link=t["echo"].s("L"), link_error=t["echo"].s("E"))
    (message,) = broker.tasks()
    (step,) = message.embed["chain"]
    assert [e["args"] for e in message.embed["errbacks"]] == [["E"]]
    assert list(step["options"]) == ["task_id", "reply_to", "link", "link_error"] or \
        list(step["options"]) == ["task_id", "reply_to", "link_error", "link"]
    assert step["options"]["link"][0]["args"] == ["L"] and step["options"]["link_error"][0]["args"] == ["E"]


def test_chain_of_one_sends_an_empty_chain(env):
    _, broker, t = env
    result = chain(t["add"].s(1, 2)).apply_async()
    (message,) = broker.tasks()
    assert message.embed["chain"] == [] and result.parent is None and result.id == message.headers["id"]


def test_group_sends_one_message_per_member_in_order(env):
    _, broker, t = env
    result = group(t["add"].s(1, 1), t["add"].s(2, 2), t["mul"].s(3, 3)).apply_async()
    messages = broker.tasks()
    assert isinstance(result, GroupResult) and [m.headers["id"] for m in messages] == [r.id for r in result]
    assert [m.headers["group_index"] for m in messages] == [0, 1, 2]
    assert {m.headers["group"] for m in messages} == {result.id}
    assert all(m.headers["root_id"] == m.headers["id"] and m.headers["parent_id"] is None for m in messages)
    assert all(m.embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None} for m in messages)


def test_empty_group_sends_nothing_and_is_ready(env):
    _, broker, t = env
    result = group([]).apply_async()
    assert broker.tasks() == [] and result.ready() and result.get() == []


def test_group_link_goes_to_the_first_member_made_immutable(env):
    _, broker, t = env
    g = group(t["add"].s(1, 1), t["add"].s(2, 2))
    g.link(t["echo"].s("GL"))
    g.link_error(t["echo"].s("GE"))
    g.apply_async()
    first, second = broker.tasks()
    assert first.embed["callbacks"][0]["immutable"] is True and second.embed["callbacks"] is None
    assert first.embed["errbacks"] == second.embed["errbacks"] != None  # noqa: E711


def test_link_options_become_callbacks_and_errbacks_unfrozen(env):
    _, broker, t = env
    t["add"].apply_async((1, 2), link=t["mul"].s(10), link_error=t["echo"].s())
    (message,) = broker.tasks()
    assert message.embed["callbacks"] == [dict(t["mul"].s(10), args=[10])]
    assert message.embed["errbacks"][0]["options"] == {}


def test_chord_with_rpc_is_refused_before_anything_is_sent(env):
    _, broker, t = env
    with pytest.raises(NotImplementedError) as info:
        chord([t["add"].s(1, 1)], t["tsum"].s()).apply_async()
    assert str(info.value) == (
        'The "rpc" result backend does not support chords!\n\n'
        "Note that a group chained with a task is also upgraded to be a chord,\n"
        "as this pattern requires synchronization.\n\n"
        "Result backends that supports chords: Redis, Database, Memcached, and more.")
    with pytest.raises(NotImplementedError):
        chain(t["add"].s(1, 1), group(t["add"].s(1), t["add"].s(2)), t["tsum"].s()).apply_async()
    assert broker.sent == []


def test_chord_on_file_sends_chord_unlock_then_the_header(tmp_path):
    app, broker, t = make_app(backend=f"file://{tmp_path}")
    result = chord([t["add"].s(1, 1), t["add"].s(2, 2)], t["tsum"].s()).apply_async()
    unlock, first, second = broker.tasks()
    assert unlock.headers["task"] == "celery.chord_unlock" and unlock.headers["ignore_result"] is True
    assert unlock.headers["eta"] is not None
    gid, body = unlock.args
    assert body["options"] == {"task_id": result.id, "reply_to": app.reply_queue, "group_id": gid}
    assert list(unlock.body[1]) == ["interval", "max_retries", "result", "_chord_unlock_exchange_type"]
    assert unlock.body[1]["result"] == [[[first.headers["id"], None], None], [[second.headers["id"], None], None]]
    assert [m.headers["group_index"] for m in (first, second)] == [0, 1]
    assert first.headers["group"] == gid and first.embed["chord"] == body
    assert result.parent.id == gid


def test_eager_chain_group_chord_and_link_run_inline():
    app, broker, t = make_app(task_always_eager=True)
    assert chain(t["add"].s(1, 2), t["mul"].s(3), t["add"].s(4)).apply_async().get() == 13
    assert group(t["add"].s(1, 1), t["mul"].s(3, 3)).apply_async().get() == [2, 9]
    assert chord([t["add"].s(1, 1), t["add"].s(2, 2)], t["tsum"].s()).apply_async().get() == 6
    assert chain(t["add"].s(1, 2), group(t["add"].s(1), t["add"].s(2)), t["tsum"].s()).apply_async().get() == 9
    with pytest.raises(ValueError):
        chain(t["add"].s(1, 2), t["boom"].s(), t["add"].s(4)).apply_async()
    failing = group(t["add"].s(1, 1), t["boom"].s(3)).apply_async()
    values = failing.get(propagate=False)
    assert values[0] == 2 and isinstance(values[1], ValueError)
    assert broker.sent == []


def test_eager_link_and_errbacks(tmp_path):
    app, broker, t = make_app(task_always_eager=True)
    seen = []

    @app.task
    def record(*args):
        seen.append(args)

    @app.task
    def on_err(request, exc, traceback):
        seen.append(("new", request.id, repr(exc)))

    @app.task
    def on_err_old(task_id):
        seen.append(("old", task_id))

    t["add"].apply_async((1, 2), link=record.s("L"))
    assert seen == [(3, "L")]
    result = t["boom"].apply_async((5,), link_error=[on_err.s(), on_err_old.s()])
    assert seen[1:] == [("new", result.id, "ValueError('boom', 5)"), ("old", result.id)]
    assert result.state == "FAILURE"
