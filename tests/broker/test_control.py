"""The control socket and ``broker ctl``: what the test suite asks ``rabbitmqctl`` for RabbitMQ."""

from __future__ import annotations

import json
import subprocess
import sys

import pika.exceptions
import pytest
from embedded_support import BrokerProcess, connect


def ctl(data_dir: str, *words: str) -> tuple[int, object]:
    done = subprocess.run([sys.executable, "-m", "minicelery", "broker", "--data-dir", data_dir, "ctl", *words],
                          capture_output=True, text=True, timeout=30)
    return done.returncode, json.loads(done.stdout) if done.returncode == 0 else done.stderr


def test_list_close_and_stop_through_the_control_socket(tmp_path):
    data = str(tmp_path)
    broker = BrokerProcess(data)
    connection = connect(broker.port)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=7, global_qos=True)
    channel.queue_declare("listed", durable=True, arguments={"x-expires": 60000})
    channel.basic_publish("", "listed", b"1")
    channel.basic_publish("", "listed", b"2")
    channel.basic_get("listed")
    code, queues = ctl(data, "list_queues")
    assert code == 0
    assert queues == [{"name": "listed", "durable": True, "auto_delete": False, "exclusive": False,
                       "arguments": [["x-expires", "signedint", 60000]], "consumers": 0, "messages_ready": 1,
                       "messages_unacknowledged": 1}]
    code, channels = ctl(data, "list_channels")
    assert [c["global_prefetch_count"] for c in channels] == [7]
    code, connections = ctl(data, "list_connections")
    assert len(connections) == 1 and connections[0]["timeout"] == 60  # pika takes the server's offer
    assert ctl(data, "close_connection", str(connections[0]["id"]), "test says bye") == (0, 1)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        connection.process_data_events(2)
        channel.queue_declare("listed", passive=True)
    assert (info.value.reply_code, info.value.reply_text) == (320, "CONNECTION_FORCED - test says bye")
    code, error = ctl(data, "no_such_command")
    assert code == 1 and "unknown command 'no_such_command'" in error
    assert ctl(data, "stop") == (0, "stopping")
    assert broker.process.wait(20) == 0
    code, error = ctl(data, "list_queues")
    assert code == 69 and "no broker answers" in error
