"""Remote control and monitoring events of a real worker (consumer and prefork pool) on ``memory://``.

No RabbitMQ: each test has its own in-process broker (``memory://<unique>``). The client is the app's
``control`` (the same code the CLI uses); events are read from a queue bound to the event exchange with
``#``, as ``celery events`` binds it. Expected replies are Celery 5.7's, as documented for its worker.
Nothing sleeps: tests wait on replies, results and events, with deadlines.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minicelery import Celery
from minicelery.exceptions import TaskRevokedError
from minicelery.testing import start_worker
from minicelery.transport import QueueSpec
from minicelery.worker.worker import Worker

PATIENCE = 15.0


def make_app(tmp_path: Path) -> Celery:
    app = Celery("rc", broker=f"memory://rc-{uuid.uuid4().hex}", backend="rpc://", set_as_current=False)
    marks = tmp_path / "ran"

    @app.task(name="rc.add")
    def add(x: int, y: int) -> int:
        with marks.open("a") as f:
            f.write("add\n")
        return x + y

    @app.task(name="rc.sleepy")
    def sleepy(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @app.task(name="rc.boom")
    def boom() -> None:
        raise ValueError("boom!")

    @app.task(name="rc.flaky", bind=True, max_retries=3)
    def flaky(self: Any) -> int:
        if self.request.retries < 1:
            raise self.retry(exc=KeyError("again"), countdown=0)
        return self.request.retries

    app.finalize()
    return app


@pytest.fixture
def app(tmp_path: Path) -> Celery:
    return make_app(tmp_path)


class EventTap:
    """A monitor's queue on the event exchange (bound with ``#``), read through the protocol alone."""

    def __init__(self, app: Celery) -> None:
        self.connection = app.broker.connection()
        self.connection.connect()
        self.arrived: list[Any] = []
        name = f"celeryev.{uuid.uuid4()}"
        self.connection.declare(QueueSpec(name, exchange=app.conf.event_exchange, exchange_type="topic",
                                          routing_key="#", durable=False, auto_delete=True, exclusive=True))
        self.connection.consume(name, self.arrived.append, lambda _q: None, no_ack=True)
        self.events: list[dict[str, Any]] = []

    def wait_for(self, predicate: Any, timeout: float = PATIENCE) -> list[dict[str, Any]]:
        """Read events until one satisfies ``predicate``; return every event read so far."""
        deadline = time.monotonic() + timeout
        while not any(predicate(e) for e in self.events):
            assert time.monotonic() < deadline, f"no such event; got {[e['type'] for e in self.events]}"
            self.connection.wait(0.1)
            for delivery in self.arrived:
                assert delivery.properties["content_type"] == "application/json"
                assert delivery.properties["delivery_mode"] == 1
                body = json.loads(delivery.body)
                if isinstance(body, list):  # task events travel in arrays, as a Celery worker's do
                    assert delivery.routing_key == "task.multi"
                    assert body and all(event["type"].startswith("task-") for event in body)
                else:
                    assert delivery.routing_key == body["type"].replace("-", ".")
                    body = [body]
                for event in body:
                    assert delivery.properties["headers"]["hostname"] == event["hostname"]
                self.events.extend(body)
            self.arrived.clear()
        return self.events

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def tap(app: Celery) -> Iterator[EventTap]:
    tap = EventTap(app)
    yield tap
    tap.close()


def wait_until(check: Any, timeout: float = PATIENCE) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)  # polling interval of a deadline-bounded wait
    return value


# -- inspect --------------------------------------------------------------------------------------------

def test_ping_answers_by_destination_and_pattern(app):
    with start_worker(app, hostname="rc1@host"):
        assert app.control.ping() == [{"rc1@host": {"ok": "pong"}}]
        assert app.control.ping(destination=["rc1@host"]) == [{"rc1@host": {"ok": "pong"}}]
        assert app.control.ping(destination=["ghost@host"], timeout=0.3) == []
        assert app.control.broadcast("ping", reply=True, pattern="rc*", matcher="glob") == [
            {"rc1@host": {"ok": "pong"}}]
        assert app.control.broadcast("ping", reply=True, pattern="^other", matcher="pcre", timeout=0.3) == []
        assert app.control.inspect(timeout=PATIENCE, limit=1).ping() == {"rc1@host": {"ok": "pong"}}


def test_stats_has_celerys_keys_and_counts_accepted_tasks(app):
    with start_worker(app, hostname="rc2@host", concurrency=2) as worker:
        assert app.control.inspect(timeout=PATIENCE, limit=1).stats()["rc2@host"]["total"] == {}
        assert app.tasks["rc.add"].delay(2, 3).get(timeout=PATIENCE) == 5
        stats = app.control.inspect(timeout=PATIENCE, limit=1).stats()["rc2@host"]
        assert set(stats) == {"total", "pid", "clock", "uptime", "pool", "broker", "prefetch_count", "rusage"}
        assert stats["total"] == {"rc.add": 1}
        assert isinstance(stats["clock"], str) and int(stats["clock"]) > 0
        assert stats["pool"]["max-concurrency"] == 2
        assert sorted(stats["pool"]["processes"]) == sorted(worker.pool.pids())
        assert stats["prefetch_count"] == 8
        assert {"hostname", "userid", "virtual_host", "port", "transport"} <= set(stats["broker"])
        assert stats["rusage"]["maxrss"] > 0


def test_registered_lists_user_tasks_sorted_and_builtins_on_request(app):
    with start_worker(app, hostname="rc3@host"):
        inspect = app.control.inspect(timeout=PATIENCE, limit=1)
        assert inspect.registered() == {"rc3@host": ["rc.add", "rc.boom", "rc.flaky", "rc.sleepy"]}
        app.tasks["rc.add"].rate_limit = "10/m"
        assert inspect.registered("rate_limit")["rc3@host"][0] == "rc.add [rate_limit=10/m]"


def test_active_reserved_and_query_task_describe_requests(app):
    with start_worker(app, hostname="rc4@host", concurrency=1):
        running = app.tasks["rc.sleepy"].delay(4)
        waiting = app.tasks["rc.add"].delay(1, 1)
        inspect = app.control.inspect(timeout=PATIENCE, limit=1)
        active = wait_until(lambda: (inspect.active() or {}).get("rc4@host"))
        assert len(active) == 1
        info = active[0]
        assert {k: info[k] for k in ("id", "name", "args", "kwargs", "type", "hostname", "acknowledged")} == {
            "id": running.id, "name": "rc.sleepy", "args": [4], "kwargs": {}, "type": "rc.sleepy",
            "hostname": "rc4@host", "acknowledged": True}
        assert isinstance(info["time_start"], float) and isinstance(info["worker_pid"], int)
        assert info["delivery_info"]["routing_key"] == "celery"
        assert inspect.active(safe=True)["rc4@host"][0]["args"] == "(4,)"
        reserved = inspect.reserved()["rc4@host"]
        assert [(r["id"], r["time_start"], r["acknowledged"], r["worker_pid"]) for r in reserved] == [
            (waiting.id, None, False, None)]
        found = inspect.query_task(running.id, waiting.id, "unknown-id")["rc4@host"]
        assert {k: v[0] for k, v in found.items()} == {running.id: "active", waiting.id: "reserved"}
        assert waiting.get(timeout=PATIENCE) == 2


def test_scheduled_lists_eta_tasks(app):
    with start_worker(app, hostname="rc5@host"):
        later = app.tasks["rc.add"].apply_async((1, 2), countdown=60)
        scheduled = wait_until(lambda: (app.control.inspect(timeout=PATIENCE, limit=1).scheduled() or {}).get("rc5@host"))
        assert scheduled[0]["request"]["id"] == later.id
        assert scheduled[0]["eta"].startswith(str(time.gmtime().tm_year))
        assert scheduled[0]["priority"] == 6


def test_active_queues_conf_report_clock(app):
    app.conf.my_secret_key = "hunter2"
    with start_worker(app, hostname="rc6@host"):
        inspect = app.control.inspect(timeout=PATIENCE, limit=1)
        queues = inspect.active_queues()["rc6@host"]
        assert [(q["name"], q["exchange"]["type"], q["routing_key"]) for q in queues] == [
            ("celery", "direct", "celery")]
        conf = inspect.conf()["rc6@host"]
        assert conf["my_secret_key"] != "hunter2" and "hunter2" not in json.dumps(conf)
        assert "hunter2" not in json.dumps(inspect.conf(with_defaults=True))
        assert "software -> minicelery:" in inspect.report()["rc6@host"]["ok"]
        assert isinstance(inspect.clock()["rc6@host"]["clock"], int)


# -- errors -------------------------------------------------------------------------------------------------

def test_unknown_command_and_bad_arguments_answer_celerys_error_shape(app):
    with start_worker(app, hostname="rc7@host"):
        assert app.control.broadcast("no_such_command", reply=True) == [
            {"rc7@host": {"error": "KeyError('no_such_command')"}}]
        [reply] = app.control.broadcast("revoke", {}, reply=True)
        assert reply["rc7@host"]["error"].startswith("TypeError(")
        for name in ("pool_grow", "pool_shrink", "add_consumer", "cancel_consumer", "rate_limit"):
            assert app.control.broadcast(name, {"n": 1}, reply=True) == [
                {"rc7@host": {"error": f"{name} is not supported by minicelery"}}]
        assert app.control.ping() == [{"rc7@host": {"ok": "pong"}}]


def test_malformed_requests_are_dropped_and_the_worker_goes_on(app, caplog):
    with start_worker(app, hostname="rc8@host"):
        connection = app.broker.connection()
        connection.connect()
        try:
            for body, content_type in ((b"not json", "application/json"), (b"[1, 2]", "application/json"),
                                       (b'{"arguments": {}}', "application/json"),
                                       (b'{"method": "ping", "arguments": [1]}', "application/json"),
                                       (b'{"method": "ping", "reply_to": "nowhere"}', "application/json"),
                                       (b'{"method": "ping", "reply_to": {"exchange": "celery.pidbox", '
                                        b'"routing_key": "x"}}', "application/json"),
                                       (json.dumps({"method": "ping", "reply_to": {
                                           "exchange": "reply.celery.pidbox", "routing_key": "k" * 300}}).encode(),
                                        "application/json"),
                                       (b"\x80\x03N.", "application/x-python-serialize")):
                connection.publish(body, {"content_type": content_type, "content_encoding": "utf-8"},
                                   exchange="celery.pidbox", routing_key="")
        finally:
            connection.close()
        assert app.control.ping() == [{"rc8@host": {"ok": "pong"}}]
    assert sum("Dropped a malformed remote control message" in r.message for r in caplog.records) == 8


# -- revoke ---------------------------------------------------------------------------------------------

def test_revoke_before_arrival_discards_the_task(app, tmp_path):
    task_id = str(uuid.uuid4())
    with start_worker(app, hostname="rc9@host"):
        [reply] = app.control.revoke(task_id, reply=True)
        assert reply == {"rc9@host": {"ok": f"tasks {{'{task_id}'}} flagged as revoked"}}
        result = app.tasks["rc.add"].apply_async((1, 2), task_id=task_id)
        with pytest.raises(TaskRevokedError) as raised:
            result.get(timeout=PATIENCE)
        assert raised.value.args == ("revoked",)
        assert result.state == "REVOKED"
        assert app.control.inspect(timeout=PATIENCE, limit=1).revoked() == {"rc9@host": [task_id]}
        assert app.tasks["rc.add"].delay(1, 1).get(timeout=PATIENCE) == 2
    assert (tmp_path / "ran").read_text() == "add\n"  # only the second add ran


def test_revoke_of_a_reserved_task_discards_it_before_it_runs(app):
    with start_worker(app, hostname="rc10@host", concurrency=1):
        blocker = app.tasks["rc.sleepy"].delay(1.5)
        waiting = app.tasks["rc.add"].delay(1, 2)
        wait_until(lambda: (app.control.inspect(timeout=PATIENCE, limit=1).reserved() or {}).get("rc10@host"))
        waiting.revoke()
        with pytest.raises(TaskRevokedError):
            waiting.get(timeout=PATIENCE)
        assert blocker.get(timeout=PATIENCE) == 1.5


def test_terminate_kills_the_running_task_and_answers_revoked(app):
    with start_worker(app, hostname="rc11@host", concurrency=1):
        running = app.tasks["rc.sleepy"].delay(60)
        wait_until(lambda: (app.control.inspect(timeout=PATIENCE, limit=1).active() or {}).get("rc11@host"))
        started = time.monotonic()
        [reply] = app.control.revoke(running.id, terminate=True, signal="KILL", reply=True)
        assert reply == {"rc11@host": {"ok": f"terminate: {running.id}"}}
        with pytest.raises(TaskRevokedError) as raised:
            running.get(timeout=PATIENCE)
        assert raised.value.args == ("terminated",)
        assert time.monotonic() - started < 10
        assert app.control.terminate("never-seen", reply=True) == [
            {"rc11@host": {"ok": "terminate: tasks unknown"}}]
        assert app.tasks["rc.add"].delay(2, 2).get(timeout=PATIENCE) == 4  # a new child took over


def test_hello_merges_revoked_ids_from_another_node(app):
    with start_worker(app, hostname="rc12@host"):
        [reply] = app.control.broadcast("hello", {"from_node": "other@host", "revoked": ["x1"]}, reply=True)
        assert reply["rc12@host"]["revoked"] == ["x1"]
        assert app.control.broadcast("hello", {"from_node": "rc12@host", "revoked": []}, reply=True) == [
            {"rc12@host": None}]


def test_time_limit_sets_the_tasks_limits(app):
    with start_worker(app, hostname="rc13@host"):
        assert app.control.time_limit("rc.sleepy", soft=1, hard=2, reply=True) == [
            {"rc13@host": {"ok": "time limits set successfully"}}]
        assert (app.tasks["rc.sleepy"].soft_time_limit, app.tasks["rc.sleepy"].time_limit) == (1, 2)
        assert app.control.time_limit("rc.nope", reply=True) == [{"rc13@host": {"error": "unknown task"}}]


# -- shutdown -------------------------------------------------------------------------------------------

def test_shutdown_by_remote_is_a_warm_shutdown_without_reply(app):
    worker = Worker(app, hostname="rc14@host", concurrency=1, handle_signals=False, banner=False)
    app.broker  # noqa: B018 - the memory broker exists before the pool forks
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.start()), daemon=True)
    thread.start()
    try:
        assert worker.ready.wait(PATIENCE)
        running = app.tasks["rc.sleepy"].delay(0.5)
        wait_until(lambda: (app.control.inspect(timeout=PATIENCE, limit=1).active() or {}).get("rc14@host"))
        assert app.control.shutdown(reply=True, timeout=0.5) == []  # nobody answers a shutdown
        thread.join(PATIENCE)
        assert codes == [0]
        assert running.get(timeout=PATIENCE) == 0.5  # the running task finished first
    finally:
        worker.shutdown.cold()
        thread.join(PATIENCE)


# -- events ---------------------------------------------------------------------------------------------

COMMON = ("hostname", "utcoffset", "pid", "clock", "timestamp", "type")
WORKER = ("freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys")


def test_worker_and_task_events_in_order_with_their_fields(app, tap):
    with start_worker(app, hostname="rc15@host", task_events=True):
        result = app.tasks["rc.add"].delay(2, 3)
        assert result.get(timeout=PATIENCE) == 5
        events = tap.wait_for(lambda e: e["type"] == "task-succeeded")
        failed = app.tasks["rc.boom"].delay()
        with pytest.raises(ValueError):
            failed.get(timeout=PATIENCE)
        tap.wait_for(lambda e: e["type"] == "task-failed")
    events = tap.wait_for(lambda e: e["type"] == "worker-offline")
    assert events[0]["type"] == "worker-online"
    for event in events:
        assert set(COMMON) <= set(event) and event["hostname"] == "rc15@host"
        assert list(event)[:4] == ["hostname", "utcoffset", "pid", "clock"] and list(event)[-2:] == [
            "timestamp", "type"]
        if event["type"].startswith("worker-"):
            assert set(WORKER) <= set(event) and event["freq"] == 2.0
    clocks = [e["clock"] for e in events]
    assert clocks == sorted(clocks) and len(set(clocks)) == len(clocks)
    mine = [e for e in events if e.get("uuid") == result.id]
    assert [e["type"] for e in mine] == ["task-received", "task-started", "task-succeeded"]
    received = mine[0]
    assert (received["name"], received["args"], received["kwargs"], received["retries"]) == (
        "rc.add", "(2, 3)", "{}", 0)
    assert received["root_id"] == result.id and received["parent_id"] is None
    assert mine[2]["result"] == "5" and isinstance(mine[2]["runtime"], float)
    [fail] = [e for e in events if e["type"] == "task-failed"]
    assert fail["uuid"] == failed.id and fail["exception"] == "ValueError('boom!')"
    assert "ValueError: boom!" in fail["traceback"]


def test_task_events_are_off_by_default_and_switch_on_by_remote(app, tap):
    with start_worker(app, hostname="rc16@host"):
        first = app.tasks["rc.add"].delay(1, 1)
        assert first.get(timeout=PATIENCE) == 2
        tap.wait_for(lambda e: e["type"] == "worker-heartbeat")  # a beat after the task: its turn passed
        assert not any(e["type"].startswith("task-") for e in tap.events)
        assert app.control.enable_events(reply=True) == [{"rc16@host": {"ok": "task events enabled"}}]
        assert app.control.enable_events(reply=True) == [{"rc16@host": {"ok": "task events already enabled"}}]
        second = app.tasks["rc.add"].delay(2, 2)
        assert second.get(timeout=PATIENCE) == 4
        tap.wait_for(lambda e: e["type"] == "task-succeeded" and e["uuid"] == second.id)
        assert app.control.disable_events(reply=True) == [{"rc16@host": {"ok": "task events disabled"}}]


def test_revoked_task_sends_task_revoked_and_no_received(app, tap):
    task_id = str(uuid.uuid4())
    with start_worker(app, hostname="rc17@host", task_events=True):
        app.control.revoke(task_id, reply=True)
        with pytest.raises(TaskRevokedError):
            app.tasks["rc.add"].apply_async((1, 2), task_id=task_id).get(timeout=PATIENCE)
        events = tap.wait_for(lambda e: e["type"] == "task-revoked")
    mine = [e for e in events if e.get("uuid") == task_id]
    assert [e["type"] for e in mine] == ["task-revoked"]
    assert (mine[0]["terminated"], mine[0]["signum"], mine[0]["expired"]) == (False, None, False)


def test_heartbeat_command_sends_a_wakeup_heartbeat(app, tap):
    with start_worker(app, hostname="rc18@host"):
        assert app.control.heartbeat(reply=True) == [{"rc18@host": None}]
        events = tap.wait_for(lambda e: e["type"] == "worker-heartbeat" and e["freq"] == 5)
    wakeup = [e for e in events if e["type"] == "worker-heartbeat" and e["freq"] == 5][0]
    assert "active" not in wakeup and wakeup["sw_ident"] == "py-minicelery"


def test_without_heartbeat_sends_no_worker_events(app, tap):
    with start_worker(app, hostname="rc19@host", heartbeats=False, task_events=True):
        result = app.tasks["rc.add"].delay(1, 2)
        assert result.get(timeout=PATIENCE) == 3
        events = tap.wait_for(lambda e: e["type"] == "task-succeeded")
    assert not any(e["type"].startswith("worker-") for e in events)


def test_the_client_sends_task_sent_when_asked(app, tap):
    app.conf.task_send_sent_event = True
    with start_worker(app, hostname="rc20@host", task_events=True):
        result = app.tasks["rc.add"].apply_async((2, 3), countdown=0.1)
        assert result.get(timeout=PATIENCE) == 5
        tap.wait_for(lambda e: e["type"] == "task-succeeded")
        events = tap.wait_for(lambda e: e["type"] == "task-sent")
    mine = [e for e in events if e.get("uuid") == result.id]
    # The client sends task-sent after the message itself: the worker's events may come first.
    assert [e["type"] for e in mine if e["type"] != "task-sent"] == ["task-received", "task-started",
                                                                      "task-succeeded"]
    [sent] = [e for e in mine if e["type"] == "task-sent"]
    assert sent["hostname"].startswith("gen") and sent["hostname"].endswith(f"@{socket.gethostname()}")
    assert (sent["name"], sent["args"], sent["kwargs"], sent["queue"], sent["routing_key"]) == (
        "rc.add", "(2, 3)", "{}", "celery", "celery")
    assert sent["eta"] is not None and sent["root_id"] == result.id and sent["retries"] == 0


def test_a_retry_sends_task_retried_and_the_new_message_is_received(app, tap):
    with start_worker(app, hostname="rc21@host", task_events=True):
        result = app.tasks["rc.flaky"].delay()
        assert result.get(timeout=PATIENCE) == 1
        events = tap.wait_for(lambda e: e["type"] == "task-succeeded" and e["uuid"] == result.id)
    mine = [e for e in events if e.get("uuid") == result.id]
    kinds = [e["type"] for e in mine]
    assert kinds.count("task-received") == 2 and kinds.count("task-started") == 2
    assert kinds[-1] == "task-succeeded" and kinds.count("task-retried") == 1
    [retried] = [e for e in mine if e["type"] == "task-retried"]
    assert retried["exception"] == "KeyError('again')" and "Retry in 0s" in retried["traceback"]
    assert [e["retries"] for e in mine if e["type"] == "task-received"] == [0, 1]
