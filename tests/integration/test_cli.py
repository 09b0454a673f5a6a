"""``python -m minicelery`` as users run it: real subprocesses against a real broker
(RabbitMQ, or the embedded one with ``MINICELERY_TEST_BROKER=embedded``).

Every worker runs ``-A ctasks`` (this directory's task module, configured through ``CTASKS_*``
environment variables) on queues of its own, and is killed at teardown whatever happened. Nothing sleeps
to synchronise: tests wait on a result, on a line of the worker's output, on a queue count or on exit.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
import textwrap
import uuid

import pytest
from broker_admin import BROKER_URL, MASKED_URL, delete_queues, ready_count
from cli_support import LOG_LINE, WorkerProcess, run_cli, wait_for_count
from worker_support import child_pids

from minicelery import Celery

pytestmark = pytest.mark.broker

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture
def short_queue(broker_url):
    """Fresh queue names of at most 16 characters (the banner pads names to 16), deleted at teardown."""
    names: list[str] = []

    def make(name: str | None = None) -> str:
        """A new name, or ``name`` (e.g. a reply queue a test created) to delete at teardown too."""
        names.append(name or f"mc-{uuid.uuid4().hex[:8]}")  # 11 characters
        return names[-1]

    yield make
    delete_queues(names)


@pytest.fixture
def client(broker_url):
    """A client app with rpc:// results, to send tasks to the workers and read their results."""
    app = Celery("cliclient", broker=broker_url, backend="rpc://", set_as_current=False)
    yield app
    app.close()


def one_paragraph(text: str) -> bool:
    """No traceback, no blank line: what a user error should look like on stderr."""
    text = text.strip()
    return bool(text) and "Traceback" not in text and "\n\n" not in text


# -- help, usage errors and an unreachable broker ---------------------------------------------------

def test_help_for_the_program_and_the_worker():
    top = run_cli(["--help"])
    assert top.returncode == 0, top
    for command in ("worker", "call", "result", "purge", "report"):
        assert re.search(rf"^\s+{command}\s+\S", top.stdout, re.M), top
    assert "-A APP, --app APP" in top.stdout and "-b BROKER, --broker BROKER" in top.stdout
    worker = run_cli(["worker", "--help"])
    assert worker.returncode == 0, worker
    for option in ("--loglevel", "--concurrency", "--queues", "--hostname", "--pool", "--prefetch-multiplier",
                   "--max-tasks-per-child", "--time-limit", "--soft-time-limit", "--without-heartbeat"):
        assert option in worker.stdout, option
    assert worker.stderr == ""


def test_unknown_module_is_one_paragraph_and_exit_64():
    done = run_cli(["-A", "no_such_module_for_minicelery", "worker", "-l", "INFO"])
    assert done.returncode == 64, done
    assert done.stdout == ""  # no banner: the app is looked up first
    assert one_paragraph(done.stderr), done
    assert "Unable to load the app 'no_such_module_for_minicelery'" in done.stderr


@pytest.mark.parametrize("options, words", [
    (["-c", "notanumber"], ["--concurrency", "'notanumber'"]),
    (["-l", "LOUD"], ["invalid log level 'LOUD'"]),
    (["-P", "gevent"], ["--pool", "'gevent'"]),
    (["--bogus"], ["unrecognized arguments: --bogus"]),
])
def test_bad_worker_option_exits_64_without_traceback(options, words):
    done = run_cli(["-A", "ctasks", "worker", *options])
    assert done.returncode == 64, done
    assert done.stdout == "" and one_paragraph(done.stderr), done
    for word in words:
        assert word in done.stderr, done


def test_unreachable_broker_is_one_paragraph_naming_the_masked_url_and_exit_69():
    url = "amqp://guest:topsecret@127.0.0.1:1//"
    worker = run_cli(["-A", "ctasks", "-b", url, "worker", "-l", "INFO", "-c", "1"])
    assert worker.returncode == 69, worker
    assert worker.elapsed < 10, worker
    assert one_paragraph(worker.stderr), worker
    assert "Cannot connect to amqp://guest:**@127.0.0.1:1//" in worker.stderr
    assert "topsecret" not in worker.stdout + worker.stderr
    assert "ForkPoolWorker" not in worker.stderr  # it failed before forking children
    call = run_cli(["-A", "ctasks", "call", "ctasks.add", "-b", url])
    assert call.returncode == 69 and one_paragraph(call.stderr), call
    assert "amqp://guest:**@127.0.0.1:1//" in call.stderr and "topsecret" not in call.stderr


def test_invalid_configuration_is_one_paragraph_and_exit_78(tmp_path):
    (tmp_path / "badbackend.py").write_text(
        "from minicelery import Celery\n"
        f"app = Celery('badbackend', broker={BROKER_URL!r},\n"
        "             backend='redis://:hunter2@localhost/0')\n")
    done = run_cli(["-A", "badbackend", "worker", "-c", "1"], cwd=tmp_path)
    assert done.returncode == 78, done
    assert one_paragraph(done.stderr) and "Unsupported result backend 'redis://:********@localhost/0'" in done.stderr
    assert "hunter2" not in done.stdout + done.stderr


def test_retry_on_startup_gives_up_after_max_retries():
    env = {"CTASKS_RETRY_ON_STARTUP": "1", "CTASKS_MAX_RETRIES": "2"}
    done = run_cli(["-A", "ctasks", "-b", "amqp://guest:guest@127.0.0.1:1//", "worker", "-c", "1"], env=env)
    assert done.returncode == 69, done
    retries = [line for line in done.stderr.splitlines() if "Trying again" in line]
    assert retries == ["Trying again in 2.00 seconds... (1/2)"], done
    assert re.search(r"ERROR/MainProcess\] consumer: Cannot connect to amqp://guest:\*\*@127\.0\.0\.1:1//: "
                     r"\[Errno 111\] Connection refused\.$", done.stderr, re.M), done
    assert done.stderr.rstrip().endswith("Error: Cannot connect to amqp://guest:**@127.0.0.1:1//: "
                                         "[Errno 111] Connection refused"), done


def test_zero_max_retries_means_retry_forever_until_a_warm_shutdown(workers):
    env = {"CTASKS_RETRY_ON_STARTUP": "1", "CTASKS_MAX_RETRIES": "0"}
    worker = workers(["-A", "ctasks", "-b", "amqp://guest:guest@127.0.0.1:1//", "worker", "-c", "2"], env=env)
    worker.wait_for_line(r"^Trying again in 4\.00 seconds\.\.\. \(2/None\)$", timeout=15)
    assert worker.proc.poll() is None
    children = child_pids(worker.pid)
    assert len(children) == 2, children
    worker.signal(signal.SIGTERM)  # in the middle of the 4 s wait: a warm shutdown, not death by signal
    assert worker.wait(timeout=10) == 0, worker.output()
    assert "worker: Warm shutdown (MainProcess)" in worker.stdout()
    assert not [pid for pid in children if os.path.exists(f"/proc/{pid}")], "children left behind"


# -- the worker: banner, logs, -A placement and lookup, -n, -Q ---------------------------------------

def test_worker_banner_log_format_and_hostname(workers, short_queue, client):
    queue = short_queue()
    worker = workers(["-A", "ctasks", "worker", "-l", "INFO", "-c", "2", "-n", "w1@%h", "-Q", queue])
    worker.ready()
    host = socket.gethostname()
    result = client.send_task("ctasks.add", (2, 3), queue=queue)
    assert result.get(timeout=20) == 5
    worker.wait_for_line(rf"INFO/ForkPoolWorker-\d+\] Task ctasks\.add\[{result.id}\] succeeded in "
                         rf"[0-9.e-]+s: 5$")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()

    lines = worker.stdout().splitlines()
    assert lines[0] == " "
    assert lines[1] == f" -------------- w1@{host} v0.1.0 (minicelery)"
    assert f"- ** ---------- .> transport:   {MASKED_URL}" in lines
    assert "- ** ---------- .> results:     rpc://" in lines
    assert "- *** --- * --- .> concurrency: 2 (prefork)" in lines
    assert any(re.fullmatch(r"- \*\* ---------- \.> app:         ctasks:0x[0-9a-f]+", line) for line in lines)
    queue_line = f"                .> {queue:<16} exchange={queue}(direct) key={queue}"
    assert queue_line in lines
    assert f".> {queue}      exchange=" in queue_line  # 11 characters, padded to 16, then one space
    tasks = lines[lines.index("[tasks]") + 1:]
    assert tasks[:5] == ["  . ctasks.add", "  . ctasks.hold", "  . ctasks.hold_late", "  . ctasks.sleepy",
                         "  . ctasks.sleepy_late"]
    assert "worker: Warm shutdown (MainProcess)" in lines

    log = worker.stderr().splitlines()
    assert log and all(re.match(LOG_LINE, line) for line in log), worker.stderr()
    assert re.match(LOG_LINE + re.escape(f"Connected to {MASKED_URL}") + "$", log[0])
    assert any(re.match(LOG_LINE + re.escape(f"w1@{host} ready."), line) for line in log)
    assert any(re.match(r"^\[[^]]+: INFO/MainProcess\] " + re.escape(f"Task ctasks.add[{result.id}] received"),
                        line) for line in log)


def test_app_after_the_command_two_queues_and_no_task_list_at_warning(workers, short_queue, client):
    first, second = short_queue(), short_queue()
    worker = workers(["worker", "-A", "ctasks", "-l", "WARNING", "-c", "1", "-Q", f"{second},{first}"])
    # At WARNING nothing says "ready": a result from each queue proves the worker consumes both.
    results = [client.send_task("ctasks.add", (n, 1), queue=q) for n, q in ((1, first), (2, second))]
    assert [r.get(timeout=20) for r in results] == [2, 3]
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
    out = worker.stdout()
    assert "[tasks]" not in out and "ctasks.add" not in out
    assert "worker: Warm shutdown (MainProcess)" in out
    queue_lines = [line.strip() for line in out.splitlines() if "exchange=" in line]
    assert queue_lines == [f".> {q:<16} exchange={q}(direct) key={q}" for q in sorted((first, second))]
    assert "INFO/" not in worker.stderr()


PACKAGE_CELERY = """\
    import os

    from minicelery import Celery

    app = Celery("proj", broker=os.environ["CTASKS_BROKER"], backend="rpc://")


    @app.task
    def mul(x, y):
        return x * y
"""


@pytest.mark.parametrize("spec", ["ctasks", "ctasks:app", "proj"])
def test_app_lookup_module_attribute_and_package(spec, workers, short_queue, client, tmp_path):
    """``-A module``, ``-A module:attr`` and a package whose ``celery`` module holds ``app`` (proj/celery.py)."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "__init__.py").write_text("")
    (tmp_path / "proj" / "celery.py").write_text(textwrap.dedent(PACKAGE_CELERY))
    queue = short_queue()
    worker = workers(["-A", spec, "worker", "-l", "INFO", "-c", "1", "-Q", queue], cwd=tmp_path)
    worker.ready()
    name, expected = ("proj.celery.mul", 6) if spec == "proj" else ("ctasks.add", 5)
    assert f"  . {name}" in worker.stdout().splitlines()
    assert client.send_task(name, (2, 3), queue=queue).get(timeout=20) == expected
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()


def test_worker_main_runs_the_worker_command(workers, short_queue, client):
    queue = short_queue()
    code = ("import sys, ctasks\n"
            f"sys.exit(ctasks.app.worker_main(['worker', '-l', 'INFO', '-c', '1', '-Q', {queue!r}]))")
    worker = workers([], argv0=[sys.executable, "-c", code])
    worker.ready()
    assert client.send_task("ctasks.add", (20, 22), queue=queue).get(timeout=20) == 42
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
    assert f".> {queue:<16} exchange={queue}(direct)" in worker.stdout()


# -- call, result, purge, report ---------------------------------------------------------------------

def test_call_prints_a_task_id_and_the_worker_runs_it(workers, short_queue):
    queue = short_queue()
    env = {"CTASKS_QUEUE": queue}
    worker = workers(["-A", "ctasks", "worker", "-l", "INFO", "-c", "1"], env=env)
    worker.ready()
    done = run_cli(["-A", "ctasks", "call", "ctasks.add", "--args", "[2,3]"], env=env)
    assert done.returncode == 0, done
    assert re.fullmatch(UUID + "\n", done.stdout), done
    task_id = done.stdout.strip()
    short_queue(f"minicelery.cli.{task_id}")  # `call` leaves its reply queue for a `result` we skip
    worker.wait_for_line(rf"INFO/ForkPoolWorker-1\] Task ctasks\.add\[{task_id}\] succeeded in [0-9.e-]+s: 5$")
    kwargs = run_cli(["-A", "ctasks", "call", "ctasks.add", "-k", '{"x": 1, "y": 2}', "--queue", queue])
    assert kwargs.returncode == 0, kwargs
    short_queue(f"minicelery.cli.{kwargs.stdout.strip()}")
    worker.wait_for_line(rf"Task ctasks\.add\[{kwargs.stdout.strip()}\] succeeded in [0-9.e-]+s: 3$")


def test_result_prints_what_call_sent(workers, short_queue):
    queue = short_queue()
    env = {"CTASKS_QUEUE": queue}
    worker = workers(["-A", "ctasks", "worker", "-l", "INFO", "-c", "1"], env=env)
    worker.ready()
    task_id = run_cli(["-A", "ctasks", "call", "ctasks.add", "--args", "[2,3]"], env=env).stdout.strip()
    done = run_cli(["-A", "ctasks", "result", task_id, "--timeout", "8"], env=env)
    assert (done.returncode, done.stdout) == (0, "5\n"), done


def test_result_times_out_with_exit_75(short_queue):
    queue = short_queue()
    env = {"CTASKS_QUEUE": queue}  # nobody consumes this queue
    task_id = run_cli(["-A", "ctasks", "call", "ctasks.add", "--args", "[1,1]"], env=env).stdout.strip()
    assert re.fullmatch(UUID, task_id)
    done = run_cli(["-A", "ctasks", "result", task_id, "--timeout", "1"], env=env)
    assert done.returncode == 75, done
    assert 1 <= done.elapsed < 10, done
    assert done.stdout == "" and one_paragraph(done.stderr), done
    assert ready_count(queue) == 1


def test_purge_asks_first_and_no_keeps_everything(short_queue, client):
    queue = short_queue()
    for n in range(3):
        client.send_task("ctasks.add", (n, n), queue=queue)
    assert wait_for_count(queue, 3) == 3
    for answer in ("no\n", "", "\n"):  # "no", end of input, and just Enter all mean no
        done = run_cli(["-A", "ctasks", "purge"], env={"CTASKS_QUEUE": queue}, stdin=answer)
        assert done.returncode == 1, done
        assert f"This will remove all tasks from queue: {queue}." in done.stdout
        assert "Are you sure you want to delete all tasks (yes/NO)?" in done.stdout
        assert "Purged" not in done.stdout and "Traceback" not in done.stderr, done
        assert ready_count(queue) == 3


def test_purge_force_and_yes(short_queue, client):
    queue, other = short_queue(), short_queue()
    for n in range(3):
        client.send_task("ctasks.add", (n, n), queue=queue)
    client.send_task("ctasks.add", (0, 0), queue=other)
    assert wait_for_count(queue, 3) == 3 and wait_for_count(other, 1) == 1
    env = {"CTASKS_QUEUE": queue}
    done = run_cli(["-A", "ctasks", "purge", "-f"], env=env)
    assert (done.returncode, done.stdout) == (0, "Purged 3 messages from 1 known task queue.\n"), done
    assert ready_count(queue) == 0 and ready_count(other) == 1
    again = run_cli(["-A", "ctasks", "purge", "-f"], env=env)
    assert (again.returncode, again.stdout) == (0, "No messages purged from 1 queue.\n"), again
    client.send_task("ctasks.add", (1, 1), queue=queue)
    assert wait_for_count(queue, 1) == 1
    yes = run_cli(["-A", "ctasks", "purge", "-Q", f"{queue},{other}"], env=env, stdin="yes\n")
    assert yes.returncode == 0 and yes.stdout.endswith("Purged 2 messages from 2 known task queues.\n"), yes
    assert ready_count(queue) == 0 and ready_count(other) == 0


def test_report_prints_versions_and_censored_configuration():
    done = run_cli(["-A", "ctasks", "-b", "amqp://guest:s3cr3t@127.0.0.1:5672//", "report"])
    assert done.returncode == 0 and done.stderr == "", done
    out = done.stdout
    assert re.search(r"^minicelery: 0\.1\.0$", out, re.M)
    assert re.search(rf"^python: {re.escape(sys.version.split()[0])}$", out, re.M)
    assert re.search(r"^pika: \d", out, re.M) and re.search(r"^msgpack: \d", out, re.M)
    assert re.search(r"^app: <Celery ctasks at 0x[0-9a-f]+>$", out, re.M)
    assert "broker_url: 'amqp://guest:********@127.0.0.1:5672//'" in out
    assert "result_backend: 'rpc://'" in out
    assert "s3cr3t" not in out


def test_console_script_is_installed(short_queue, workers, client):
    program = shutil.which("minicelery")
    assert program is not None, "the `minicelery` console script is not on PATH (pip install -e .)"
    version = run_cli(["--version"], argv0=[program])
    assert (version.returncode, version.stdout) == (0, "minicelery 0.1.0\n"), version
    queue = short_queue()
    worker: WorkerProcess = workers(["-A", "ctasks", "worker", "-l", "INFO", "-c", "1", "-Q", queue],
                                    argv0=[program])
    worker.ready()
    assert client.send_task("ctasks.add", (1, 2), queue=queue).get(timeout=20) == 3
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
