"""The file:// result backend (Celery's on-disk format) and ``celery.chord_unlock`` on it."""

from __future__ import annotations

import json

import pytest
from canvas_support import make_app

from minicelery import GroupResult, states
from minicelery.builtin_tasks import add_builtin_tasks
from minicelery.exceptions import ChordError, ImproperlyConfigured, Retry, TimeoutError
from minicelery.protocol import result_meta


def test_meta_is_stored_as_celery_task_meta_file_in_json(tmp_path):
    app, _, _ = make_app(backend=f"file://{tmp_path}")
    meta = result_meta("abc", states.SUCCESS, 2, group_id="g1", date_done="2026-12-06T11:34:43.629569+00:00")
    app.backend.store_meta("abc", meta)
    raw = (tmp_path / "celery-task-meta-abc").read_bytes()
    assert raw == (b'{"status": "SUCCESS", "result": 2, "traceback": null, "children": [], '
                   b'"date_done": "2026-12-06T11:34:43.629569+00:00", "group_id": "g1", "task_id": "abc"}')
    assert app.AsyncResult("abc").get(timeout=1) == 2
    assert app.AsyncResult("missing").state == states.PENDING
    assert [p.name for p in tmp_path.iterdir()] == ["celery-task-meta-abc"]  # the probe file is gone


def test_wait_times_out_on_a_pending_result(tmp_path):
    app, _, _ = make_app(backend=f"file://{tmp_path}")
    with pytest.raises(TimeoutError):
        app.AsyncResult("never").get(timeout=0.2, interval=0.05)


def test_missing_directory_is_refused(tmp_path):
    app, _, _ = make_app(backend=f"file://{tmp_path}/nope")
    with pytest.raises(ImproperlyConfigured, match="create the directory"):
        app.backend


def test_group_save_and_restore(tmp_path):
    app, _, _ = make_app(backend=f"file://{tmp_path}")
    group = GroupResult("gid", [app.AsyncResult("a"), app.AsyncResult("b")], app=app)
    group.save()
    stored = json.loads((tmp_path / "celery-taskset-meta-gid").read_bytes())
    assert stored == {"result": [["gid", None], [[["a", None], None], [["b", None], None]]]}
    assert GroupResult.restore("gid", app=app) == group


def test_rpc_backend_cannot_save_groups():
    app, _, _ = make_app()
    with pytest.raises(NotImplementedError, match="save_group is not supported by this backend."):
        GroupResult("g", [], app=app).save()


def _unlock_app(tmp_path):
    app, broker, tasks = make_app(backend=f"file://{tmp_path}")
    add_builtin_tasks(app)  # the test isolation clears the finalize hook that registers them
    return app, broker, tasks


def _body(tmp_path, app, tasks):
    body = tasks["tsum"].s()
    body.freeze("BODY", group_id="G")
    return json.loads(json.dumps(body))


def test_chord_unlock_retries_while_a_header_result_is_pending(tmp_path):
    app, broker, tasks = _unlock_app(tmp_path)
    app.backend.store_meta("h1", result_meta("h1", states.SUCCESS, 1))
    unlock = app.tasks["celery.chord_unlock"]
    unlock.push_request(id="U", called_directly=False, retries=0, delivery_info={"routing_key": "q"})
    try:
        with pytest.raises(Retry):
            unlock.run("G", _body(tmp_path, app, tasks), result=[[["h1", None], None], [["h2", None], None]])
    finally:
        unlock.pop_request()
    (again,) = broker.tasks()
    assert again.headers["task"] == "celery.chord_unlock" and again.headers["id"] == "U"
    assert again.headers["retries"] == 1 and again.routing_key == "q" and again.headers["eta"]


def test_chord_unlock_sends_the_body_with_values_in_header_order(tmp_path):
    app, broker, tasks = _unlock_app(tmp_path)
    app.backend.store_meta("h2", result_meta("h2", states.SUCCESS, 4))
    app.backend.store_meta("h1", result_meta("h1", states.SUCCESS, 2))
    app.tasks["celery.chord_unlock"].run("G", _body(tmp_path, app, tasks),
                                         result=[[["h1", None], None], [["h2", None], None]])
    (body,) = broker.tasks()
    assert body.headers["id"] == "BODY" and body.args == [[2, 4]] and body.headers["group"] == "G"


def test_chord_unlock_fails_the_body_with_chord_error(tmp_path):
    app, broker, tasks = _unlock_app(tmp_path)
    app.backend.store_meta("h1", result_meta("h1", states.SUCCESS, 2))
    app.backend.store_meta("h2", result_meta("h2", states.FAILURE, ValueError("boom", 2), traceback="tb"))
    app.tasks["celery.chord_unlock"].run("G", _body(tmp_path, app, tasks),
                                         result=[[["h1", None], None], [["h2", None], None]])
    assert broker.tasks() == []
    stored = json.loads((tmp_path / "celery-task-meta-BODY").read_bytes())
    assert stored["result"] == {"exc_type": "ChordError", "exc_message": ["ValueError('boom', 2)"],
                                "exc_module": "celery.exceptions"}
    assert "group_id" not in stored and "parent_id" not in stored
    with pytest.raises(ChordError):
        app.AsyncResult("BODY").get(timeout=1)


def test_map_and_starmap_call_the_task_once_per_item(tmp_path):
    app, _, tasks = _unlock_app(tmp_path)
    mapped = json.loads(json.dumps(tasks["tsum"].s()))
    assert app.tasks["celery.map"].run(mapped, [[1, 2], [3, 4]]) == [3, 7]
    assert app.tasks["celery.starmap"].run(json.loads(json.dumps(tasks["add"].s())), [[1, 2], [3, 4]]) == [3, 7]
