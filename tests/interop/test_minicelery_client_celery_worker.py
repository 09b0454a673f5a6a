"""A minicelery client drives a real Celery 5 worker over RabbitMQ, with rpc:// results.

What is proven: tasks sent by minicelery (``delay``, ``apply_async``, ``send_task``) are understood and run by
Celery's worker, and the results Celery sends back are read by minicelery's rpc backend — return values,
keyword arguments, a task's ``ValueError`` re-raised as ``ValueError('boom')``, ``RETRY`` states followed by
the final ``SUCCESS``, a ``countdown`` that Celery holds until the ETA, msgpack both ways, an unknown task
name answered with ``NotRegistered``, and several results awaited in the reverse order of sending.

Two Celery workers run ``celery_side.py`` (prefork, one child each, started once for the module): one with
Celery's defaults (json), one that accepts and answers only msgpack. The client is ``mini_side.py``'s app.
"""

from __future__ import annotations

import time
import uuid

import mini_side
import pytest

from minicelery.exceptions import NotRegistered, TimeoutError

pytestmark = [pytest.mark.interop, pytest.mark.broker]

#: Seconds to wait for a result: far more than any of these tasks needs.
RESULT_TIMEOUT = 10


@pytest.fixture(scope="module")
def celery_worker(start_worker):
    """A Celery worker (json only, json results) on its own queue."""
    return start_worker("celery")


@pytest.fixture(scope="module")
def celery_msgpack_worker(start_worker):
    """A Celery worker that accepts only msgpack task messages and sends msgpack results."""
    return start_worker("celery", INTEROP_ACCEPT_CONTENT="msgpack", INTEROP_RESULT_SERIALIZER="msgpack")


@pytest.fixture
def client(mini_app, celery_worker):
    """The minicelery client app, sending to the Celery worker's queue by default."""
    mini_side.configure({"INTEROP_BROKER_URL": mini_app.conf.broker_url, "INTEROP_QUEUE": celery_worker.queue,
                         "INTEROP_ACCEPT_CONTENT": "json,msgpack"})
    return mini_app


def test_delay_returns_the_sum(client, celery_worker):
    assert mini_side.add.delay(2, 3).get(timeout=RESULT_TIMEOUT) == 5


def test_result_state_after_success(client, celery_worker):
    result = mini_side.add.apply_async((20, 22))
    assert result.get(timeout=RESULT_TIMEOUT) == 42
    assert result.state == "SUCCESS"
    assert result.successful() and result.ready() and not result.failed()
    assert result.traceback is None
    assert result.date_done is not None and result.date_done.tzinfo is not None


def test_keyword_arguments_arrive_as_sent(client, celery_worker):
    assert mini_side.add.delay(x=2, y=3).get(timeout=RESULT_TIMEOUT) == 5
    kwargs = {"text": "é ünïcode", "nested": {"list": [1, 2.5, None, True], "empty": {}}, "big": 2**40}
    result = mini_side.echo.apply_async(("a", 1), kwargs)
    assert result.get(timeout=RESULT_TIMEOUT) == {"args": ["a", 1], "kwargs": kwargs}


def test_task_failure_raises_the_original_exception(client, celery_worker):
    result = mini_side.fail.delay("boom")
    with pytest.raises(ValueError) as excinfo:
        result.get(timeout=RESULT_TIMEOUT)
    assert type(excinfo.value) is ValueError
    assert excinfo.value.args == ("boom",)
    assert result.state == "FAILURE"
    assert result.traceback.rstrip().splitlines()[-1] == "ValueError: boom"


def test_failure_returned_without_propagate(client, celery_worker):
    outcome = mini_side.fail.delay("quiet").get(timeout=RESULT_TIMEOUT, propagate=False)
    assert type(outcome) is ValueError and outcome.args == ("quiet",)


def test_retrying_task_ends_in_success(client, celery_worker):
    result = mini_side.flaky.delay(2)
    assert result.get(timeout=RESULT_TIMEOUT) == 2  # two RETRY states came first, then SUCCESS
    assert result.state == "SUCCESS"


def test_countdown_is_honoured(client, celery_worker):
    countdown = 2
    sent_at = time.time()
    result = mini_side.clock.apply_async(countdown=countdown)
    with pytest.raises(TimeoutError):  # Celery holds the message until the ETA
        result.get(timeout=countdown / 2)
    ran_at = result.get(timeout=RESULT_TIMEOUT)
    # Same host, same clock; Celery's timer may fire a few ms early, hence the small allowance.
    assert ran_at >= sent_at + countdown - 0.05


def test_msgpack_both_ways(client, celery_msgpack_worker):
    kwargs = {"blob": "é", "numbers": [1, -2, 3.5, 2**40], "none": None}
    result = mini_side.echo.apply_async((1, "two"), kwargs, serializer="msgpack",
                                        queue=celery_msgpack_worker.queue)
    assert result.get(timeout=RESULT_TIMEOUT) == {"args": [1, "two"], "kwargs": kwargs}
    failing = mini_side.fail.apply_async(("packed boom",), serializer="msgpack",
                                         queue=celery_msgpack_worker.queue)
    with pytest.raises(ValueError, match="packed boom"):
        failing.get(timeout=RESULT_TIMEOUT)


def test_json_message_refused_by_a_msgpack_only_worker(client, celery_msgpack_worker):
    """The converse: Celery's worker discards what it does not accept, so no result ever comes."""
    result = mini_side.add.apply_async((1, 1), queue=celery_msgpack_worker.queue)
    assert celery_msgpack_worker.wait_for_line(
        "Refusing to deserialize untrusted content of type json (application/json)", RESULT_TIMEOUT)
    with pytest.raises(TimeoutError):
        result.get(timeout=0.5)


def test_unknown_task_name_raises_not_registered(client, celery_worker):
    name = f"interop.no_such_task_{uuid.uuid4().hex[:8]}"
    result = client.send_task(name, (1, 2), queue=celery_worker.queue)
    with pytest.raises(NotRegistered) as excinfo:
        result.get(timeout=RESULT_TIMEOUT)
    assert excinfo.value.args == (name,)
    assert isinstance(excinfo.value, KeyError)
    assert result.state == "FAILURE"


def test_send_task_by_name_to_a_known_task(client, celery_worker):
    result = client.send_task("interop.add", (7,), {"y": 8}, queue=celery_worker.queue)
    assert result.get(timeout=RESULT_TIMEOUT) == 15


def test_outstanding_results_awaited_in_reverse_order(client, celery_worker):
    results = [mini_side.add.delay(i, 1000) for i in range(8)]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in reversed(results)] == [i + 1000 for i in reversed(range(8))]
