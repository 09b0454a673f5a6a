"""Remote control and events across the two implementations, over RabbitMQ.

* Celery 5's own CLI (``celery inspect``, ``celery control``, ``celery events --dump``) against a
  minicelery worker;
* minicelery's ``inspect``/``control`` against a Celery worker;
* a Celery worker (with gossip, which consumes ``worker.#`` events) beside a minicelery worker that sends
  events: it must stay alive and see the minicelery worker's heartbeats;
* Flower, started against the broker, shows the minicelery worker online and its tasks.

Each test uses its own control/event exchange names (``INTEROP_CONTROL``), node names and queues, and
deletes what it declared. Expected texts are Celery 5's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import BROKER_URL, HERE, WorkerProcess, delete_queues, plain_connection, worker_env

PATIENCE = 30.0


class Names:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.control = f"interopctl{tag}"
        self.queue = f"interop-ctl-{tag}"
        self.mini_node = f"mini{tag}@testhost"
        self.celery_node = f"celery{tag}@testhost"
        self.env = worker_env(self.queue, INTEROP_CONTROL=self.control)

    def run(self, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=HERE, env=self.env, capture_output=True, text=True, timeout=timeout)

    def celery(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-m", "celery", "-A", "celery_ctl", *args])

    def minicelery(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-m", "minicelery", "-A", "mini_ctl", *args])


@pytest.fixture
def names(broker_url: str) -> Iterator[Names]:
    made = Names()
    yield made
    delete_queues(made.queue)
    connection = plain_connection()
    try:
        channel = connection.channel()
        for exchange in (f"{made.control}.pidbox", f"reply.{made.control}.pidbox", f"{made.control}ev"):
            channel.exchange_delete(exchange)
    finally:
        connection.close()


@pytest.fixture
def spawn(names: Names) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(kind: str, *extra: str) -> WorkerProcess:
        if kind == "minicelery":
            argv = [sys.executable, "-m", "minicelery", "-A", "mini_ctl", "worker", "-l", "INFO", "-c", "1",
                    "-Q", names.queue, "-n", names.mini_node, *extra]
        else:
            argv = [sys.executable, "-m", "celery", "-A", "celery_ctl", "worker", "-l", "DEBUG", "-c", "1",
                    "-Q", names.queue, "-n", names.celery_node, "-P", "prefork", "--without-mingle", *extra]
        process = WorkerProcess(kind, argv, names.env, names.queue)
        started.append(process)
        process.wait_ready(PATIENCE)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def mini_client(names: Names) -> Iterator[Any]:
    import mini_side

    from minicelery import Celery

    app = Celery("ctl-client", broker=BROKER_URL, backend="rpc://", set_as_current=False,
                 control_exchange=names.control, event_exchange=f"{names.control}ev",
                 task_default_queue=names.queue)
    del mini_side
    yield app
    app.close()
    delete_queues(app.thread_oid)


def test_celery_inspect_ping_stats_active_registered_against_minicelery(names, spawn, mini_client):
    spawn("minicelery")
    ping = names.celery("inspect", "ping", "-d", names.mini_node)
    assert ping.returncode == 0, ping.stderr
    assert ping.stdout.splitlines() == [f"->  {names.mini_node}: OK", "        pong", "", "1 node online."]
    stats = names.celery("inspect", "stats", "--json", "-d", names.mini_node)
    body = json.loads(stats.stdout)[names.mini_node]
    assert {"total", "pid", "clock", "uptime", "pool", "broker", "prefetch_count", "rusage"} <= set(body)
    registered = names.celery("inspect", "registered", "-d", names.mini_node)
    assert "    * interop.add" in registered.stdout.splitlines(), registered.stdout
    running = mini_client.send_task("interop.sleep", (4,))
    deadline = time.monotonic() + PATIENCE
    while True:
        active = names.celery("inspect", "active", "--json", "-d", names.mini_node)
        found = json.loads(active.stdout).get(names.mini_node) if active.returncode == 0 else None
        if found:
            break
        assert time.monotonic() < deadline, active.stdout + active.stderr
    assert found[0]["id"] == running.id and found[0]["name"] == "interop.sleep" and found[0]["args"] == [4]
    assert running.get(timeout=PATIENCE) == 4


def test_celery_control_revoke_and_shutdown_against_minicelery(names, spawn, mini_client):
    worker = spawn("minicelery")
    task_id = str(uuid.uuid4())
    revoke = names.celery("control", "revoke", task_id, "-d", names.mini_node)
    assert revoke.returncode == 0, revoke.stderr
    assert revoke.stdout.splitlines() == [f"->  {names.mini_node}: OK", f"        tasks {{'{task_id}'}} flagged as revoked"]
    from minicelery.exceptions import TaskRevokedError

    with pytest.raises(TaskRevokedError):
        mini_client.send_task("interop.add", (1, 2), task_id=task_id).get(timeout=PATIENCE)
    shutdown = names.celery("control", "shutdown", "-d", names.mini_node)
    assert shutdown.returncode == 69 and "No nodes replied within time constraint" in shutdown.stderr
    assert worker.process.wait(PATIENCE) == 0
    assert worker.wait_for_line("Got shutdown from remote", 1)


def test_celery_events_dump_shows_a_minicelery_worker_and_its_tasks(names, spawn, mini_client):
    dump = subprocess.Popen([sys.executable, "-m", "celery", "-A", "celery_ctl", "events", "--dump"], cwd=HERE,
                            env=names.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        assert dump.stdout is not None
        assert dump.stdout.readline().strip() == "-> evdump: starting capture..."
        spawn("minicelery", "-E")
        result = mini_client.send_task("interop.add", (2, 3))
        assert result.get(timeout=PATIENCE) == 5
        lines: list[str] = []
        deadline = time.monotonic() + PATIENCE
        while not any("task succeeded" in line for line in lines):
            assert time.monotonic() < deadline, "\n".join(lines)
            lines.append(dump.stdout.readline().rstrip("\n"))
        text = "\n".join(lines)
        assert f"{names.mini_node} [" in text and "] started: active=0, " in text and "freq=2.0" in text
        assert f"task received: interop.add({result.id}) args=(2, 3) kwargs={{}}" in text
        assert f"task succeeded: interop.add({result.id}) args=(2, 3) kwargs={{}}" in text
        assert "result=5, runtime=" in text
        assert dump.poll() is None  # the dumper did not crash on any event
    finally:
        os.killpg(dump.pid, signal.SIGKILL)
        dump.wait(10)


def test_minicelery_inspect_and_control_against_a_celery_worker(names, spawn):
    spawn("celery", "--without-gossip", "--without-heartbeat")
    ping = names.minicelery("inspect", "ping", "-d", names.celery_node)
    assert (ping.returncode, ping.stdout) == (0, f"->  {names.celery_node}: OK\n        pong\n\n1 node online.\n"), ping.stderr
    stats = json.loads(names.minicelery("inspect", "stats", "--json", "-d", names.celery_node).stdout)[names.celery_node]
    assert stats["pool"]["max-concurrency"] == 1 and "broker" in stats
    registered = names.minicelery("inspect", "registered", "--json", "-d", names.celery_node)
    assert "interop.add" in json.loads(registered.stdout)[names.celery_node]
    revoke = names.minicelery("control", "revoke", "abc-123", "-d", names.celery_node)
    assert revoke.stdout == f"->  {names.celery_node}: OK\n        tasks {{'abc-123'}} flagged as revoked\n"
    unknown = names.minicelery("control", "rate_limit", "interop.nope", "5/m", "-d", names.celery_node)
    assert unknown.stdout == f"->  {names.celery_node}: ERROR\n        unknown task\n"


def heartbeats_seen(names: Names, hostname: str, wanted: int) -> int:
    """Count ``worker-heartbeat`` events of ``hostname`` on the test's event exchange until ``wanted``."""
    connection = plain_connection()
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        channel.queue_bind(queue, f"{names.control}ev", "worker.heartbeat")
        seen, deadline = 0, time.monotonic() + PATIENCE
        for _method, _props, body in channel.consume(queue, auto_ack=True, inactivity_timeout=1):
            if body is not None:
                event = json.loads(body)
                assert {"type", "hostname", "timestamp", "freq"} <= set(event)
                seen += event["hostname"] == hostname
            if seen >= wanted or time.monotonic() > deadline:
                break
        return seen
    finally:
        connection.close()


def test_a_celery_worker_beside_a_minicelery_worker_stays_alive(names, spawn):
    celery_worker = spawn("celery")  # gossip and heartbeats on: it consumes worker.# events
    spawn("minicelery", "-E")
    assert celery_worker.wait_for_line(f"{names.mini_node} joined the party", PATIENCE), celery_worker.output()[-3000:]
    ping = names.minicelery("inspect", "ping", "--timeout", "2")
    assert ping.returncode == 0 and f"->  {names.celery_node}: OK" in ping.stdout and f"->  {names.mini_node}: OK" in ping.stdout
    # Three more heartbeats of the minicelery worker reach the exchange the Celery worker's gossip reads;
    # a Celery worker that met a malformed event would have exited (Unrecoverable error) by then.
    assert heartbeats_seen(names, names.mini_node, 3) >= 3
    assert celery_worker.process.poll() is None, celery_worker.output()[-3000:]
    output = celery_worker.output()
    assert f"missed heartbeat from {names.mini_node}" not in output
    assert "Unrecoverable error" not in output


def test_minicelery_cli_prints_what_celery_cli_prints(names, spawn):
    """The same commands against the same (Celery) worker: both command lines print the same bytes."""
    spawn("celery", "--without-gossip", "--without-heartbeat")
    for command in (["inspect", "ping"], ["inspect", "registered"], ["inspect", "revoked"],
                    ["inspect", "scheduled"], ["control", "heartbeat"], ["control", "revoke", "x-1"],
                    ["control", "time_limit", "interop.nope", "1", "2"], ["inspect", "ping", "--json"]):
        theirs = names.celery(*command, "-d", names.celery_node)
        ours = names.minicelery(*command, "-d", names.celery_node)
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def poll(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            value = check()
        except OSError:  # Flower not listening yet
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"Flower never showed {what}"
        time.sleep(0.2)  # polling interval of a deadline-bounded wait for an HTTP server


def test_flower_lists_a_minicelery_worker_online_with_its_tasks(names, spawn, mini_client):
    """Flower (started against the broker) sees the worker through its events and, since it asks for task
    events with ``enable_events``, the tasks of a worker started without ``-E``."""
    worker = spawn("minicelery")
    port = free_port()
    env = {**names.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    flower = subprocess.Popen([sys.executable, "-m", "celery", "-A", "celery_ctl", "flower", "--address=127.0.0.1",
                               f"--port={port}"], cwd=HERE, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        status = poll(lambda: get_json(f"{base}/api/workers?status=1").get(names.mini_node), "the worker online")
        assert status is True
        # Flower casts enable_events every 5 s; the worker turns task events on when it arrives.
        assert worker.wait_for_line("Events of group {task} enabled by remote", PATIENCE), worker.output()
        result = mini_client.send_task("interop.add", (2, 3))
        assert result.get(timeout=PATIENCE) == 5
        task = poll(lambda: (t := get_json(f"{base}/api/tasks").get(result.id)) and t["state"] == "SUCCESS" and t,
                    "the task")
        assert (task["name"], task["args"], task["result"], task["worker"]) == (
            "interop.add", "(2, 3)", "5", names.mini_node)
        workers = get_json(f"{base}/api/workers?refresh=1")
        assert workers[names.mini_node]["stats"]["pool"]["max-concurrency"] == 1
        assert "interop.add" in workers[names.mini_node]["registered"]
        with urllib.request.urlopen(f"{base}/worker/{names.mini_node}", timeout=10) as page:
            assert page.status == 200 and names.mini_node in page.read().decode()
    finally:
        os.killpg(flower.pid, signal.SIGKILL)
        flower.wait(10)
