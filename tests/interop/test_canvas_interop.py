"""The canvas across libraries: a Celery 5 client with a minicelery worker, and a minicelery client with a
Celery 5 worker, over RabbitMQ (rpc:// results, and file:// for chords).

Every test runs in both directions (the ``side`` fixture): the client builds the canvas with its own
library (``celery.chain`` or ``minicelery.chain``, ...), the other library's worker runs it, and the value
must come back right. Callbacks and errbacks write lines to a file (a Celery worker's callback results are
lost with rpc://, see docs/celery-mapping.md), and the tests wait on those lines.
"""

from __future__ import annotations

import time
import types
from pathlib import Path

import celery
import celery_side
import mini_side
import pytest

import minicelery

pytestmark = [pytest.mark.interop, pytest.mark.broker]

TIMEOUT = 15
DIRECTIONS = ["celery-client-mini-worker", "mini-client-celery-worker"]


def _namespace(direction: str, worker: object) -> types.SimpleNamespace:
    if direction.startswith("celery-client"):
        celery_side.configure({"INTEROP_QUEUE": worker.queue})
        return types.SimpleNamespace(lib=celery, tasks=celery_side, app=celery_side.app)
    mini_side.configure({"INTEROP_QUEUE": worker.queue})
    return types.SimpleNamespace(lib=minicelery, tasks=mini_side, app=mini_side.app)


@pytest.fixture(scope="module", params=DIRECTIONS)
def rpc_pair(request, start_worker, celery_app, mini_app):
    kind = "minicelery" if request.param.startswith("celery-client") else "celery"
    return request.param, start_worker(kind, concurrency=2)


@pytest.fixture
def side(rpc_pair):
    direction, worker = rpc_pair
    return _namespace(direction, worker)


def _lines(path: Path, count: int) -> list[str]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, f"{path} has {len(lines)} lines, wanted {count}"
        time.sleep(0.05)


def test_chain_of_three_with_parents(side):
    t = side.tasks
    result = side.lib.chain(t.add.s(1, 2), t.mul.s(3), t.add.s(4)).apply_async()
    assert result.get(timeout=TIMEOUT) == 13
    assert result.parent.get(timeout=TIMEOUT) == 9
    assert result.parent.parent.get(timeout=TIMEOUT) == 3
    assert result.parent.parent.parent is None


def test_pipe_with_an_immutable_step(side):
    t = side.tasks
    result = (t.add.s(1, 2) | t.add.si(100, 1) | t.mul.s(2)).apply_async()
    assert result.get(timeout=TIMEOUT) == 202


def test_nested_chains_and_a_chain_in_a_group(side):
    t = side.tasks
    assert side.lib.chain(t.add.s(1, 1), side.lib.chain(t.mul.s(5), t.add.s(1))).apply_async().get(
        timeout=TIMEOUT) == 11
    assert side.lib.group(t.add.s(1, 1), side.lib.chain(t.add.s(2, 2), t.mul.s(3))).apply_async().get(
        timeout=TIMEOUT) == [2, 12]


def test_link_runs_the_callback_with_the_result(side, tmp_path):
    path = tmp_path / "link"
    result = side.tasks.add.apply_async((1, 2), link=side.tasks.note.s(str(path), "cb"))
    assert result.get(timeout=TIMEOUT) == 3
    assert _lines(path, 1) == ["cb 3"]


def test_link_error_new_and_old_style(side, tmp_path):
    path = tmp_path / "errbacks"
    t = side.tasks
    result = t.boom.apply_async((7,), link_error=[t.on_err.s(str(path)), t.on_err_old.s(str(path))])
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    assert sorted(_lines(path, 2)) == sorted([f"new {result.id} ValueError('boom', 7)", f"old {result.id}"])


def test_group_of_ten_in_order(side):
    result = side.lib.group(side.tasks.add.s(i, i) for i in range(10)).apply_async()
    assert result.get(timeout=TIMEOUT) == [2 * i for i in range(10)]
    assert result.completed_count() == 10 and result.successful()


def test_failing_middle_step_stops_the_chain(side, tmp_path):
    path = tmp_path / "after"
    t = side.tasks
    started = time.monotonic()
    result = side.lib.chain(t.add.s(1, 2), t.boom.s(), t.note.s(str(path), "after")).apply_async()
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=TIMEOUT)
    assert time.monotonic() - started < TIMEOUT / 2  # the FAILURE copy reached the last id, no time-out
    assert not path.exists()


def test_chain_ending_in_a_group(side):
    t = side.tasks
    result = side.lib.chain(t.add.s(1, 1), side.lib.group(t.add.s(10), t.mul.s(10))).apply_async()
    assert result.get(timeout=TIMEOUT) == [12, 20]


# -- chords on a shared file:// directory -------------------------------------------------------------

@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("chord-results")


@pytest.fixture(scope="module", params=DIRECTIONS)
def file_pair(request, start_worker, results_dir, broker_url):
    url = f"file://{results_dir}"
    kind = "minicelery" if request.param.startswith("celery-client") else "celery"
    worker = start_worker(kind, concurrency=2, INTEROP_BACKEND=url)
    library = celery if kind == "minicelery" else minicelery
    client = library.Celery(f"chord-client-{kind}", broker=broker_url, backend=url)
    client.conf.task_default_queue = worker.queue
    yield library, client
    client.close()


def _sig(library, client, name, *args):
    if library is celery:
        return client.signature(f"interop.{name}", args=args)
    return minicelery.signature(f"interop.{name}", args=args, app=client)


def test_chord_on_the_filesystem_backend(file_pair, results_dir):
    library, client = file_pair
    header = [_sig(library, client, "add", i, i) for i in range(4)]
    result = library.chord(header, _sig(library, client, "tsum")).apply_async()
    assert result.get(timeout=TIMEOUT) == 12
    assert (results_dir / f"celery-task-meta-{result.id}").exists()


def test_chain_through_a_chord_on_the_filesystem_backend(file_pair):
    library, client = file_pair
    result = library.chain(_sig(library, client, "add", 1, 1),
                           library.group(_sig(library, client, "add", 1), _sig(library, client, "add", 2)),
                           _sig(library, client, "tsum")).apply_async()
    assert result.get(timeout=TIMEOUT) == 7


@pytest.fixture(scope="module")
def mini_worker(start_worker, celery_app):
    return start_worker("minicelery", concurrency=2)


def test_celery_map_starmap_and_chunks_run_on_a_minicelery_worker(mini_worker):
    """Celery client primitives only (minicelery's client has none): celery.map/starmap on our worker."""
    celery_side.configure({"INTEROP_QUEUE": mini_worker.queue})
    assert celery_side.tsum.map([[1, 2], [3, 4]]).apply_async().get(timeout=TIMEOUT) == [3, 7]
    assert celery_side.add.starmap([(1, 2), (3, 4)]).apply_async().get(timeout=TIMEOUT) == [3, 7]
    assert celery_side.add.chunks([(1, 2), (3, 4), (5, 6)], 2).apply_async().get(timeout=TIMEOUT) == [[3, 7], [11]]
