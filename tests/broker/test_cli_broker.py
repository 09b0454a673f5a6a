"""The command line: ``broker`` options and exits, and ``worker --embedded-broker`` running real tasks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from embedded_support import BrokerProcess, connect

from minicelery import Celery
from minicelery.cli import EX_USAGE, build_parser, main


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_broker_options_parse_with_the_documented_defaults():
    args = build_parser().parse_args(["broker"])
    assert (args.host, args.port, args.data_dir, args.memory, args.user, args.password) == (
        "127.0.0.1", 5672, None, False, None, None)
    args = build_parser().parse_args(["broker", "--port", "0", "--memory", "--user", "u", "--password", "p"])
    assert (args.port, args.memory, args.user) == (0, True, "u")


def test_bad_log_level_and_guest_on_a_public_address_are_refused(capsys):
    assert main(["broker", "-l", "chatty"]) == EX_USAGE
    assert "invalid log level" in capsys.readouterr().err
    assert main(["broker", "--host", "0.0.0.0", "--memory"]) == 78
    assert "--user and --password" in capsys.readouterr().err


def test_sigint_also_stops_the_broker_with_exit_0(tmp_path):
    broker = BrokerProcess(str(tmp_path))
    broker.process.send_signal(signal.SIGINT)
    assert broker.process.wait(20) == 0


TASKS = textwrap.dedent("""
    import os
    from minicelery import Celery
    app = Celery("ebtasks", broker=os.environ["EBTASKS_BROKER"], backend="rpc://")

    @app.task
    def add(x, y):
        return x + y
""")


def start_worker(tmp_path, url, *extra):
    (tmp_path / "ebtasks.py").write_text(TASKS)
    env = dict(os.environ, EBTASKS_BROKER=url, XDG_DATA_HOME=str(tmp_path / "data"),
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "minicelery", "-A", "ebtasks", "worker", "-c", "1", *extra],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_worker_with_embedded_broker_runs_tasks_and_stops_its_broker(tmp_path):  # priority (4)
    port = free_port()
    url = f"amqp://guest:guest@127.0.0.1:{port}//"
    worker = start_worker(tmp_path, url, "--embedded-broker")
    try:
        deadline = time.monotonic() + 30
        while True:  # the broker is up once a connection succeeds
            try:
                connect(port).close()
                break
            except Exception:  # noqa: BLE001 - not yet listening
                assert worker.poll() is None, worker.communicate()
                assert time.monotonic() < deadline, "the embedded broker never listened"
                time.sleep(0.1)
        client = Celery("client", broker=url, backend="rpc://")
        assert client.send_task("ebtasks.add", (2, 3)).get(timeout=30) == 5
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert os.path.isdir(tmp_path / "data" / "minicelery" / "broker" / "journal")  # durable by default
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_minicelery_worker_runs_plain_tasks_while_eta_tasks_are_held(tmp_path):  # check 23, second half
    broker = BrokerProcess(None)
    url = f"amqp://guest:guest@127.0.0.1:{broker.port}//"
    worker = start_worker(tmp_path, url, "--prefetch-multiplier", "1")
    try:
        client = Celery("client", broker=url, backend="rpc://")
        held = [client.send_task("ebtasks.add", (0, 0), countdown=60) for _ in range(3)]
        plain = [client.send_task("ebtasks.add", (n, n)) for n in range(5)]
        assert [r.get(timeout=30) for r in plain] == [0, 2, 4, 6, 8]
        assert all(not r.ready() for r in held)
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        broker.terminate()


def test_user_and_password_file(tmp_path):
    import pika
    import pika.exceptions

    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    broker = BrokerProcess(None, "--user", "alice", "--password-file", str(secret), "--sync-interval", "0.05")
    connect(broker.port, credentials=pika.PlainCredentials("alice", "s3cret")).close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect(broker.port)  # guest/guest is not the account any more
    code, err = broker.terminate()
    assert code == 0 and "login refused for user 'guest'" in err and "s3cret" not in err


def test_demo_runs_the_tour_without_rabbitmq_and_cleans_up(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "minicelery", "demo", "-n", "50", "-c", "1"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "50 additions: 50 right, 0 wrong" in done.stdout
    assert "retry      -> 'succeeded after 1 retry'" in done.stdout
    assert "failure    -> ValueError('this task fails on purpose')" in done.stdout
    assert "countdown  -> 42" in done.stdout
    assert list(tmp_path.iterdir()) == []  # the temporary data directory is gone


def test_embedded_broker_serves_local_hosts_only():
    from minicelery.embedded import BrokerChild
    from minicelery.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured) as info:
        BrokerChild("amqp://guest:guest@rabbit.example.com:5672//")
    assert "serves this machine only" in str(info.value) and "127.0.0.1:5672" in str(info.value)
    assert BrokerChild("amqp://localhost:5673//").port == 5673
