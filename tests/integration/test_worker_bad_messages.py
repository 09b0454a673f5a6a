"""A real worker refuses bad task messages published with plain pika, and keeps serving.

For each kind of bad message: the client waiting on the message's id gets a FAILURE with the right
exception, the worker logs why (naming the task id), the message is gone from the queue (rejected without
requeue: no redelivery loop), and a good task sent afterwards still succeeds.
"""

from __future__ import annotations

import json
import pickle
import uuid

import msgpack
import pika
import pytest
import wtasks
from worker_support import wait_queue_settled

from minicelery import states
from minicelery.exceptions import ContentDisallowed, DecodeError, InvalidTaskError, NotRegistered

pytest_plugins = ("worker_support",)  # start_worker, shared_worker, client_app, counter_file
pytestmark = pytest.mark.broker

TIMEOUT = 15
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _headers(task: str | None, task_id: str) -> dict:
    """Celery's protocol-2 headers, written out by hand."""
    headers = {"lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None, "expires": None,
               "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
               "root_id": task_id, "parent_id": None, "argsrepr": "(2, 3)", "kwargsrepr": "{}",
               "origin": "gen1@test", "ignore_result": False, "replaced_task_nesting": 0,
               "stamped_headers": None, "stamps": {}}
    if task is None:
        del headers["task"]
    return headers


JSON = ("application/json", "utf-8")
CASES = {
    # name: (task header, body, (content_type, encoding), expected exception, log line pattern)
    "unknown-task": ("wtasks.nope", json.dumps([[2, 3], {}, EMBED]).encode(), JSON, NotRegistered,
                     r"ERROR/MainProcess\] Received unregistered task of type 'wtasks\.nope'\."),
    "wrong-shape": ("wtasks.add", json.dumps({"a": 1}).encode(), JSON, InvalidTaskError,
                    r"ERROR/ForkPoolWorker-\d+\] Task wtasks\.add\[{id}\] cannot decode its body: "
                    r"InvalidTaskError\("),
    "undecodable": ("wtasks.add", b"\xff{not json", JSON, DecodeError,
                    r"ERROR/ForkPoolWorker-\d+\] Task wtasks\.add\[{id}\] cannot decode its body: "
                    r"DecodeError\("),
    "missing-task-header": (None, json.dumps([[2, 3], {}, EMBED]).encode(), JSON, InvalidTaskError,
                            r"ERROR/MainProcess\] Received invalid task message: Missing required header "
                            r"'task'"),
    "pickle": ("wtasks.add", pickle.dumps(((2, 3), {}, EMBED)), ("application/x-python-serialize", "binary"),
               ContentDisallowed,
               r"ERROR/MainProcess\] Received invalid task message: Refusing to deserialize untrusted "
               r"content of type pickle \(application/x-python-serialize\)"),
    "msgpack-not-accepted": ("wtasks.add", msgpack.packb([[2, 3], {}, EMBED]), ("application/x-msgpack", "binary"),
                             ContentDisallowed,
                             r"ERROR/MainProcess\] Received invalid task message: Refusing to deserialize "
                             r"untrusted content of type msgpack \(application/x-msgpack\)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_message_is_refused_and_the_worker_keeps_serving(shared_worker, client_app, pika_channel, case):
    task, body, (content_type, encoding), expected, log_pattern = CASES[case]
    task_id = str(uuid.uuid4())
    client_app.backend.prepare(client_app.reply_queue)  # consume our reply queue before the worker answers
    mark = shared_worker.mark()
    pika_channel.basic_publish(
        exchange="", routing_key=shared_worker.queue, body=body,
        properties=pika.BasicProperties(
            content_type=content_type, content_encoding=encoding, headers=_headers(task, task_id),
            reply_to=client_app.reply_queue, correlation_id=task_id, delivery_mode=2))

    result = client_app.AsyncResult(task_id)
    with pytest.raises(expected) as info:
        result.get(timeout=TIMEOUT)
    assert type(info.value) is expected
    assert result.state == states.FAILURE
    if case == "unknown-task":
        assert info.value.args == ("wtasks.nope",)
        assert repr(info.value) == ("Task of kind 'wtasks.nope' never registered, please make sure it's "
                                    "imported.")

    shared_worker.wait_for_line(log_pattern.replace("{id}", task_id), start=mark)
    # The worker keeps serving.
    assert wtasks.add.apply_async((2, 3), queue=shared_worker.queue).get(timeout=TIMEOUT) == 5
    # Nothing was requeued: the queue holds nothing, ready or unacknowledged.
    wait_queue_settled(shared_worker.queue)
    # The log names the task id, and the message was handled once only (no redelivery loop).
    mentions = [line for line in shared_worker.lines[mark:] if task_id in line]
    assert mentions, f"no log line names {task_id}:\n" + "\n".join(shared_worker.lines[mark:])
    refusals = shared_worker.find(log_pattern.replace("{id}", task_id), after=mark)
    assert len(refusals) == 1, refusals
    assert len([line for line in mentions if "received" in line]) <= 1
