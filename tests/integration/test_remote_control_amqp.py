"""Remote control and events against RabbitMQ, with real processes: ``python -m minicelery worker`` and
the ``inspect``/``control``/``events --dump`` commands, as an operator runs them.

Every test uses its own control and event exchange names (``RCTASKS_CONTROL``), node name and queue,
and deletes what it declared. Expected texts are Celery 5.7's CLI output.
"""

from __future__ import annotations

import json
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from broker_admin import BROKER_URL, PORT, delete_queues, plain_connection
from cli_support import WorkerProcess, run_cli

from minicelery import Celery
from minicelery.exceptions import TaskRevokedError

pytestmark = pytest.mark.broker

PATIENCE = 20.0


class Names:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.control = f"mcrc{tag}"
        self.queue = f"minicelery-rc-{tag}"
        self.node = f"rc{tag}@testhost"
        self.env = {"RCTASKS_CONTROL": self.control, "CTASKS_QUEUE": self.queue}

    def cli(self, *args: str, timeout: float = 30.0):
        return run_cli(["-A", "rctasks", *args], env=self.env, timeout=timeout)


@pytest.fixture
def names(broker_url: str) -> Iterator[Names]:
    made = Names()
    yield made
    delete_queues([made.queue])
    connection = plain_connection()
    try:
        channel = connection.channel()
        for exchange in (f"{made.control}.pidbox", f"reply.{made.control}.pidbox", f"{made.control}ev"):
            channel.exchange_delete(exchange)
    finally:
        connection.close()


@pytest.fixture
def worker(names: Names, workers) -> WorkerProcess:
    process = workers(["-A", "rctasks", "worker", "-n", names.node, "-c", "1", "-l", "INFO", "-E",
                       "--without-mingle", "--without-gossip"], env=names.env)
    process.ready(PATIENCE)
    return process


@pytest.fixture
def client(names: Names) -> Iterator[Celery]:
    app = Celery("rcclient", broker=BROKER_URL, backend="rpc://", set_as_current=False,
                 control_exchange=names.control, event_exchange=f"{names.control}ev",
                 task_default_queue=names.queue)
    yield app
    app.close()


def test_inspect_ping_stats_registered_and_the_mailbox_is_exclusive(names, worker):
    done = names.cli("inspect", "ping", "-d", names.node)
    assert (done.returncode, done.stdout) == (0, f"->  {names.node}: OK\n        pong\n\n1 node online.\n"), done
    stats = names.cli("inspect", "stats", "--json", "-d", names.node)
    body = json.loads(stats.stdout)[names.node]
    assert set(body) == {"total", "pid", "clock", "uptime", "pool", "broker", "prefetch_count", "rusage"}
    assert body["pid"] == worker.pid and body["pool"]["max-concurrency"] == 1
    assert body["broker"]["hostname"] == "127.0.0.1" and body["broker"]["port"] == PORT
    registered = names.cli("inspect", "registered", "-d", names.node)
    assert "    * ctasks.add\n" in registered.stdout and "    * ctasks.sleepy\n" in registered.stdout
    ghost = names.cli("inspect", "ping", "-d", "ghost@nowhere")
    assert (ghost.returncode, ghost.stderr) == (69, "Error: No nodes replied within time constraint\n")
    # The mailbox is exclusive to the worker's connection, with Celery's arguments.
    connection = plain_connection()
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as locked:
            connection.channel().queue_declare(f"{names.node}.{names.control}.pidbox", exclusive=True,
                                               auto_delete=True,
                                               arguments={"x-expires": 10000, "x-message-ttl": 300000})
        assert locked.value.reply_code == 405
    finally:
        connection.close()


def test_revoke_before_arrival_and_terminate_while_running(names, worker, client, tmp_path):
    early = str(uuid.uuid4())
    done = names.cli("control", "revoke", early, "-d", names.node)
    assert (done.returncode, done.stdout) == (0, f"->  {names.node}: OK\n        tasks {{'{early}'}} flagged as "
                                                 "revoked\n"), done
    with pytest.raises(TaskRevokedError) as raised:
        client.send_task("ctasks.add", (1, 2), task_id=early).get(timeout=PATIENCE)
    assert raised.value.args == ("revoked",)
    worker.wait_for_line(rf"Discarding revoked task: ctasks\.add\[{early}\]")
    gate = str(tmp_path / "never-opened")
    running = client.send_task("ctasks.hold", (gate,))
    worker.wait_for_line(rf"ctasks: started {running.id}", PATIENCE)
    client.control.revoke(running.id, terminate=True, destination=[names.node])
    with pytest.raises(TaskRevokedError) as raised:
        running.get(timeout=PATIENCE)
    assert raised.value.args == ("terminated",)
    revoked = json.loads(names.cli("inspect", "revoked", "--json", "-d", names.node).stdout)
    assert revoked == {names.node: [early, running.id]}
    assert client.send_task("ctasks.add", (2, 2)).get(timeout=PATIENCE) == 4


def test_unknown_command_and_malformed_requests_leave_the_worker_alive(names, worker, client):
    assert client.control.broadcast("no_such_command", reply=True, destination=[names.node]) == [
        {names.node: {"error": "KeyError('no_such_command')"}}]
    connection = plain_connection()
    try:
        channel = connection.channel()
        foreign = json.dumps({"method": "ping", "ticket": "t",  # a fanout exchange: declaring it direct fails
                              "reply_to": {"exchange": f"{names.control}.pidbox", "routing_key": "x"}}).encode()
        for body in (b"{not json", b'"a string"', b'{"method": 42}', b'{"method": "revoke", "arguments": 7}',
                     foreign):
            channel.basic_publish(f"{names.control}.pidbox", "", body,
                                  pika.BasicProperties(content_type="application/json"))
    finally:
        connection.close()
    worker.wait_for_line(r"Dropped a malformed remote control message", PATIENCE, count=5)
    assert client.control.ping(destination=[names.node]) == [{names.node: {"ok": "pong"}}]
    assert "Connection to broker lost" not in worker.stderr()


def test_events_dump_prints_the_worker_and_its_tasks(names, worker, client):
    dump = WorkerProcess(["-A", "rctasks", "events", "--dump", "--timeout", "30"], env=names.env)
    try:
        dump.wait_for_line(r"^-> evdump: starting capture\.\.\.$", PATIENCE, stream="stdout")
        dump.wait_for_line(rf"^{names.node} \[.*\] heartbeat: .*freq=", PATIENCE, stream="stdout")
        result = client.send_task("ctasks.add", (2, 3))
        assert result.get(timeout=PATIENCE) == 5
        dump.wait_for_line(rf"^{names.node} \[.*\] task received: ctasks\.add\({result.id}\) args=\(2, 3\) "
                           r"kwargs=\{\} clock=\d+, eta=None", PATIENCE, stream="stdout")
        dump.wait_for_line(rf"^{names.node} \[.*\] task succeeded: ctasks\.add\({result.id}\) args=\(2, 3\) "
                           r"kwargs=\{\} clock=\d+, .*result=5, runtime=", PATIENCE, stream="stdout")
    finally:
        dump.signal(signal.SIGINT)
        assert dump.wait(PATIENCE) == 0, dump.output()


def test_shutdown_by_remote_is_warm_and_exits_0(names, worker, client, tmp_path):
    gate = tmp_path / "gate"
    running = client.send_task("ctasks.hold", (str(gate),))
    worker.wait_for_line(rf"ctasks: started {running.id}", PATIENCE)
    done = names.cli("control", "shutdown", "-d", names.node)
    assert (done.returncode, done.stderr) == (69, "Error: No nodes replied within time constraint\n"), done
    worker.wait_for_line(r"WARNING/MainProcess\] Got shutdown from remote", PATIENCE)
    Path(gate).touch()  # the running task may finish: a warm shutdown waits for it
    assert running.get(timeout=PATIENCE) == "released"
    assert worker.wait(PATIENCE) == 0
    ping = names.cli("inspect", "ping", "-d", names.node, "--timeout", "0.5")
    assert ping.returncode == 69


def test_a_second_node_of_the_same_name_warns_and_works_without_remote_control(names, worker, workers, client):
    twin = workers(["-A", "rctasks", "worker", "-n", names.node, "-c", "1", "-l", "INFO"], env=names.env)
    twin.ready(PATIENCE)
    twin.wait_for_line(rf"WARNING/MainProcess\] A node named {re.escape(names.node)} is already using this "
                       r"process mailbox!", PATIENCE)
    results = [client.send_task("ctasks.add", (n, n)) for n in range(4)]
    assert [r.get(timeout=PATIENCE) for r in results] == [0, 2, 4, 6]  # both nodes still run tasks
    assert client.control.ping(destination=[names.node]) == [{names.node: {"ok": "pong"}}]  # the first one
    assert twin.proc.poll() is None
