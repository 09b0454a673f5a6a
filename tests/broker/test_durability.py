"""Durability: ``kill -9`` and restart, graceful stop, torn and corrupt journals, the lock, compaction.

Each test runs ``python -m minicelery broker`` as a child process on its own data directory.
"""

from __future__ import annotations

import os

import pika
import pytest
from embedded_support import BrokerProcess, ThreadBroker, connect, data_files, drain, wait_for

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def publish_confirmed(port: int, queue: str, count: int, *, durable: bool = True) -> None:
    connection = connect(port)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue, durable=durable)
    for number in range(count):
        channel.basic_publish("", queue, str(number).encode(), PERSISTENT)
    connection.close()


def test_confirmed_messages_survive_kill_9_in_order(tmp_path):  # check 33
    data = str(tmp_path)
    broker = BrokerProcess(data)
    publish_confirmed(broker.port, "durable", 1000)
    connection = connect(broker.port)
    channel = connection.channel()
    channel.queue_declare("transient-queue")
    channel.basic_publish("", "transient-queue", b"gone", PERSISTENT)
    channel.basic_publish("", "durable", b"transient message")  # delivery_mode 1: memory only
    wait_for(lambda: channel.queue_declare("durable", passive=True).method.message_count == 1001)
    broker.kill()
    broker = BrokerProcess(data)
    connection = connect(broker.port)
    channel = connection.channel()
    got = [body for _, _, body in drain(channel, "durable")]
    assert got == [str(n).encode() for n in range(1000)]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        channel.queue_declare("transient-queue", passive=True)
    connection.close()
    assert broker.terminate()[0] == 0


def test_acked_stay_gone_and_unacked_come_back_first_redelivered(tmp_path):  # check 34
    data = str(tmp_path)
    broker = BrokerProcess(data)
    publish_confirmed(broker.port, "work", 1000)
    connection = connect(broker.port)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=500)
    received = []
    tag = channel.basic_consume("work", lambda ch, m, p, b: received.append(m.delivery_tag))
    wait_for(lambda: connection.process_data_events(0.05) or len(received) == 500)
    channel.basic_cancel(tag)  # the acks must not make room for more deliveries
    for tag in received[:300]:
        channel.basic_ack(tag)
    channel.queue_declare("work", passive=True)  # a round trip: the acks' loop turn has ended
    broker.kill()
    broker = BrokerProcess(data)
    channel = connect(broker.port).channel()
    got = [(int(body), method.redelivered) for method, _, body in drain(channel, "work")]
    assert got == [(n, True) for n in range(300, 500)] + [(n, False) for n in range(500, 1000)]
    broker.terminate()


def test_graceful_stop_requeues_and_exits_0(tmp_path):
    data = str(tmp_path)
    broker = BrokerProcess(data)
    publish_confirmed(broker.port, "q", 3)
    connection = connect(broker.port)
    channel = connection.channel()
    method, _, _ = channel.basic_get("q")
    code, err = broker.terminate()
    assert code == 0, err
    broker = BrokerProcess(data)
    channel = connect(broker.port).channel()
    got = [(body, method.redelivered) for method, _, body in drain(channel, "q")]
    assert got == [(b"0", True), (b"1", False), (b"2", False)]
    broker.terminate()


def test_a_torn_last_record_is_truncated_and_logged(tmp_path):  # check 35
    data = str(tmp_path)
    broker = BrokerProcess(data)
    publish_confirmed(broker.port, "q", 10)
    broker.kill()
    segment = data_files(data)[-1]
    size = os.path.getsize(segment)
    os.truncate(segment, size - 7)  # the middle of the last record
    broker = BrokerProcess(data)
    channel = connect(broker.port).channel()
    assert [b for _, _, b in drain(channel, "q")] == [str(n).encode() for n in range(9)]
    _, err = broker.terminate()
    assert "torn record" in err and "recovered up to offset" in err, err


def test_damage_in_an_older_record_refuses_to_start(tmp_path):  # check 35
    data = str(tmp_path)
    broker = BrokerProcess(data)
    publish_confirmed(broker.port, "q", 10)
    broker.kill()
    segment = data_files(data)[-1]
    with open(segment, "r+b") as file:
        file.seek(20)
        byte = file.read(1)
        file.seek(20)
        file.write(bytes((byte[0] ^ 0xFF,)))
    with pytest.raises(AssertionError) as info:
        BrokerProcess(data)
    assert "exit 65" in str(info.value) and f"{segment} is damaged at offset 0" in str(info.value)
    broker = BrokerProcess(data, "--repair")  # cuts the segment at the damage: its 10 messages are lost
    channel = connect(broker.port).channel()
    assert channel.queue_declare("q", durable=True).method.message_count == 0
    code, err = broker.terminate()
    assert code == 0 and "--repair cuts the segment there" in err


def test_two_brokers_never_share_a_directory_and_files_are_private(tmp_path):
    broker = BrokerProcess(str(tmp_path / "data"))
    assert os.stat(tmp_path / "data").st_mode & 0o777 == 0o700
    assert all(os.stat(path).st_mode & 0o777 == 0o600 for path in data_files(str(tmp_path / "data")))
    with pytest.raises(AssertionError) as info:
        BrokerProcess(str(tmp_path / "data"))
    assert "exit 65" in str(info.value) and "in use by another broker" in str(info.value)
    broker.terminate()


def test_a_taken_port_is_exit_69_never_a_takeover(tmp_path):
    broker = BrokerProcess(None)
    with pytest.raises(AssertionError) as info:
        BrokerProcess(None, port=broker.port)
    assert "exit 69" in str(info.value) and "address already in use" in str(info.value)
    broker.terminate()


def test_definitions_survive_and_transient_ones_do_not(tmp_path):  # G5
    data = str(tmp_path)
    broker = BrokerProcess(data)
    channel = connect(broker.port).channel()
    channel.exchange_declare("tasks", "topic", durable=True)
    channel.queue_declare("kept", durable=True, arguments={"x-message-ttl": 60000})
    channel.queue_bind("kept", "tasks", "a.#")
    channel.exchange_declare("passing", "fanout")
    broker.kill()
    broker = BrokerProcess(data)
    channel = connect(broker.port).channel()
    channel.confirm_delivery()
    channel.basic_publish("tasks", "a.b", b"routed", mandatory=True)
    assert channel.queue_declare("kept", durable=True, arguments={"x-message-ttl": 60000}).method.message_count == 1
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        channel.exchange_declare("passing", "fanout", passive=True)
    broker.terminate()


def test_compaction_keeps_the_journal_small(tmp_path):
    broker = ThreadBroker(str(tmp_path), segment_size=64 * 1024)
    connection = connect(broker.port)
    channel = connection.channel()
    channel.queue_declare("cycle", durable=True)
    channel.queue_declare("long-lived", durable=True)
    channel.basic_publish("", "long-lived", b"stays", PERSISTENT)
    body = b"x" * 1000
    for _ in range(20):
        for _ in range(100):
            channel.basic_publish("", "cycle", body, PERSISTENT)
        assert len(drain(channel, "cycle", timeout=0.0)) == 100
    connection.close()
    broker.stop()
    total = sum(os.path.getsize(path) for path in data_files(str(tmp_path)))
    assert total < 6 * 64 * 1024, f"{total} bytes of journal for one live message"
    broker = ThreadBroker(str(tmp_path), segment_size=64 * 1024)
    channel = connect(broker.port).channel()
    assert [b for _, _, b in drain(channel, "long-lived")] == [b"stays"]
    assert drain(channel, "cycle", timeout=0.0) == []
    broker.stop()
    assert broker.errors == []


def test_a_minicelery_worker_rides_out_a_broker_restart(tmp_path):
    import signal
    import socket
    import subprocess
    import sys

    from minicelery import Celery

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"amqp://guest:guest@127.0.0.1:{port}//"
    (tmp_path / "rstasks.py").write_text(
        "import os\nfrom minicelery import Celery\n"
        "app = Celery('rstasks', broker=os.environ['RS_URL'], backend='rpc://')\n"
        "@app.task\ndef add(x, y):\n    return x + y\n")
    env = dict(os.environ, RS_URL=url, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    data = str(tmp_path / "data")
    broker = BrokerProcess(data, port=port)
    worker = subprocess.Popen([sys.executable, "-m", "minicelery", "-A", "rstasks", "worker", "-c", "1"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        client = Celery("client", broker=url, backend="rpc://")
        assert client.send_task("rstasks.add", (1, 2)).get(timeout=30) == 3
        client.close()
        assert broker.terminate()[0] == 0  # the graceful stop closes the worker's connection (320)
        broker = BrokerProcess(data, port=port)  # the same port and directory, at once
        client = Celery("client2", broker=url, backend="rpc://")
        assert client.send_task("rstasks.add", (2, 3)).get(timeout=60) == 5
        client.close()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        broker.terminate()
