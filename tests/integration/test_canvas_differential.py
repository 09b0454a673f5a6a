"""Differential property: a random canvas gives the same value on a real worker as run eagerly.

Canvases of depth up to 3 are drawn over ``add``/``mul``/``tsum``: chains of steps, chords (a group of
steps joined by ``tsum``) and groups of such chains. Each is run once with ``.apply()`` (in this process)
and once by a real minicelery worker on a ``file://`` backend (chords need one); the values must agree.
"""

from __future__ import annotations

import json

import pytest
import wtasks
from broker_admin import BROKER_URL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minicelery import Celery, chain, chord, group, signature

pytest_plugins = ("worker_support",)
pytestmark = pytest.mark.broker

TIMEOUT = 20
small = st.integers(-5, 5)

#: A step takes a number and gives a number: add/mul with a constant, or a chord of such steps.
leaf = st.one_of(small.map(lambda k: wtasks.add.s(k)), small.map(lambda k: wtasks.mul.s(k)))


def steps(depth: int):
    if depth == 0:
        return leaf
    inner = steps(depth - 1)
    return st.one_of(
        leaf,
        st.lists(inner, min_size=1, max_size=3).map(lambda parts: chain(*parts)),
        st.lists(inner, min_size=1, max_size=3).map(lambda parts: chord(parts, wtasks.tsum.s())),
    )


@st.composite
def canvases(draw):
    start = wtasks.add.s(draw(small), draw(small))
    body = chain(start, *draw(st.lists(steps(2), min_size=1, max_size=3)))
    if draw(st.booleans()):
        return body
    more = [chain(wtasks.add.s(draw(small), 1), draw(steps(1))) for _ in range(draw(st.integers(0, 2)))]
    return group(body, *more)


@pytest.fixture(scope="module")
def file_client(tmp_path_factory):
    from worker_support import WorkerProcess, unique_name

    directory = tmp_path_factory.mktemp("differential")
    url = f"file://{directory}"
    worker = WorkerProcess(unique_name("diff"), concurrency=2, env={"WTASKS_BACKEND": url})
    client = Celery("wtasks", broker=BROKER_URL, backend=url)
    client.conf.task_default_queue = worker.queue
    try:
        worker.wait_ready()
        yield client
    finally:
        client.close()
        worker.stop()
        from broker_admin import delete_queues

        delete_queues([worker.queue])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(canvases())
def test_worker_and_eager_agree(file_client, canvas):
    eager = canvas.apply().get()
    remote = signature(json.loads(json.dumps(canvas)), app=file_client).apply_async()
    assert remote.get(timeout=TIMEOUT) == eager
