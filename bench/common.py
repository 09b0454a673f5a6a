"""What every benchmark shares: the broker address, queue housekeeping, subprocesses, statistics.

Everything here talks to 127.0.0.1 only. Queues get unique names (``bench.<what>.<pid>.<random>``) and
are deleted afterwards, with the exchange minicelery and Celery declare under the same name.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
HOST = "127.0.0.1"
#: RabbitMQ's port, or another broker's (``BENCH_BROKER_PORT``: the embedded broker, say).
PORT = int(os.environ.get("BENCH_BROKER_PORT", "5672"))
BROKER_URL = f"amqp://guest:guest@{HOST}:{PORT}//"

#: The connection settings minicelery's ``amqp.AmqpTransport`` uses with the default configuration
#: (``broker_heartbeat`` 120, ``broker_connection_timeout`` 4, one attempt): the pika references use the
#: same ones so that only the library differs.
PIKA_SETTINGS: dict[str, Any] = {"host": HOST, "port": PORT, "virtual_host": "/", "heartbeat": 120,
                                 "connection_attempts": 1, "retry_delay": 0, "socket_timeout": 4.0,
                                 "stack_timeout": 4.0}


def pika_parameters() -> Any:
    """``pika.ConnectionParameters`` equal to minicelery's defaults (pika is imported here, not above)."""
    import pika

    return pika.ConnectionParameters(credentials=pika.PlainCredentials("guest", "guest"), **PIKA_SETTINGS)


def worker_args() -> list[str]:
    """Extra options for the minicelery workers the benchmarks start (``BENCH_WORKER_ARGS``, e.g. ``-E``
    to measure with task events on)."""
    return os.environ.get("BENCH_WORKER_ARGS", "").split()


def unique_queue(what: str) -> str:
    """A queue name no other run (nor another engineer's benchmark) uses."""
    return f"bench.{what}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


class Admin:
    """A plain pika connection for housekeeping: depth, purge, delete. Never used for timed work."""

    def __init__(self) -> None:
        import pika

        self._pika = pika
        self.connection = pika.BlockingConnection(pika_parameters())
        self.channel = self.connection.channel()

    def _retry(self, call: Any) -> Any:
        """Run ``call(channel)``, on a new channel if the last one was closed; if the broker closes this
        one (a 404 on a passive declare), open a new one for next time and re-raise."""
        errors = self._pika.exceptions
        if not self.channel.is_open:
            self.channel = self.connection.channel()
        try:
            return call(self.channel)
        except (errors.ChannelClosed, errors.ChannelWrongStateError):
            self.channel = self.connection.channel()
            raise

    def depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (a passive declare: unacked deliveries are not counted)."""
        return int(self._retry(lambda ch: ch.queue_declare(queue, passive=True)).method.message_count)

    def consumers(self, queue: str) -> int:
        """Consumers of ``queue`` (a passive declare)."""
        return int(self._retry(lambda ch: ch.queue_declare(queue, passive=True)).method.consumer_count)

    def declare(self, queue: str, *, celery_style: bool = True) -> None:
        """Declare a durable queue as Celery and minicelery do (an exchange of the same name, bound)."""
        channel = self.channel
        if celery_style:
            channel.exchange_declare(queue, exchange_type="direct", durable=True, auto_delete=False)
        channel.queue_declare(queue, durable=True, exclusive=False, auto_delete=False)
        if celery_style:
            channel.queue_bind(queue, queue, routing_key=queue)

    def purge(self, queue: str) -> None:
        self._retry(lambda ch: ch.queue_purge(queue))

    def delete(self, *queues: str) -> None:
        """Delete queues and exchanges of the same names; missing ones are fine. If the connection is
        gone (the shared broker restarted), the names are kept for :func:`delete_leftovers`."""
        errors = self._pika.exceptions
        for name in queues:
            for call in (lambda ch, n=name: ch.queue_delete(n), lambda ch, n=name: ch.exchange_delete(n)):
                try:
                    self._retry(call)
                except (errors.ChannelClosed, errors.ChannelWrongStateError):
                    pass
                except (errors.AMQPConnectionError, OSError):
                    _LEFTOVERS.add(name)

    def wait_depth(self, queue: str, count: int, timeout: float = 60.0) -> int:
        """Wait until ``queue`` holds at least ``count`` ready messages (publishes are asynchronous)."""
        deadline = time.monotonic() + timeout
        depth = self.depth(queue)
        while depth < count and time.monotonic() < deadline:
            time.sleep(0.02)
            depth = self.depth(queue)
        return depth

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:  # noqa: BLE001 - housekeeping at exit
            pass

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


#: Queues whose deletion failed because the connection was lost; deleted by delete_leftovers().
_LEFTOVERS: set[str] = set()


def delete_leftovers() -> list[str]:
    """Delete the queues an interrupted measurement could not delete (call once the broker is back)."""
    names = sorted(_LEFTOVERS)
    if names and wait_for_broker(60):
        with Admin() as admin:
            _LEFTOVERS.clear()
            admin.delete(*names)
    return names


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for a benchmark subprocess: ``bench/`` and the repo on the path, bytecode cached."""
    env = dict(os.environ)
    # An installed package (Celery, pika) comes with compiled bytecode; minicelery runs from the tree, so
    # let it cache its bytecode too, or every worker start would compile it again (about 20 ms) and the
    # figures would depend on whether an earlier benchmark happened to write the caches.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # BENCH_LIBRARY_PATH: a directory holding a modified copy of the minicelery package, to measure a
    # change before making it in the tree (it comes first on the path).
    first = [env["BENCH_LIBRARY_PATH"]] if env.get("BENCH_LIBRARY_PATH") else []
    path = [*first, str(BENCH_DIR), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env.setdefault("BENCH_BROKER", BROKER_URL)
    env.update(extra)
    return env


def run_json(python: str, args: Sequence[str], *, env: dict[str, str] | None = None,
             timeout: float = 300.0) -> dict[str, Any]:
    """Run a helper (``python bench/x.py ...``) that prints one JSON object on its last line."""
    proc = subprocess.run([python, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or bench_env(), cwd=str(BENCH_DIR))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def has_modules(python: str, *modules: str) -> bool:
    """True if ``python`` can import every one of ``modules``."""
    code = "import " + ", ".join(modules)
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def comparison_python() -> str | None:
    """An interpreter with Celery and Dramatiq: this one, else the ``tox -e bench`` venv, else None."""
    for candidate in (sys.executable, str(REPO / ".tox" / "bench" / "bin" / "python")):
        if Path(candidate).exists() and has_modules(candidate, "celery", "dramatiq"):
            return candidate
    return None


def minicelery_python() -> str:
    """An interpreter that imports minicelery (and pika): this one, else the system ``python3``."""
    if has_modules(sys.executable, "minicelery", "pika"):
        return sys.executable
    return "python3"


# -- processes and memory ------------------------------------------------------------------------------

def children_of(pid: int) -> list[int]:
    """The direct children of ``pid`` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children_of(current)
    return tree


def _status_kb(pid: int, field: str, filename: str = "status") -> int:
    try:
        for line in Path(f"/proc/{pid}/{filename}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_of(pid: int) -> dict[str, Any]:
    """VmRSS (and PSS, which shares copy-on-write pages fairly) of ``pid`` and its descendants, in KiB."""
    pids = process_tree(pid)
    rss = {p: _status_kb(p, "VmRSS") for p in pids}
    pss = {p: _status_kb(p, "Pss", "smaps_rollup") for p in pids}
    return {"pids": pids, "rss_kb": rss, "pss_kb": pss, "main_rss_kb": rss.get(pid, 0),
            "total_rss_kb": sum(rss.values()), "total_pss_kb": sum(pss.values()), "processes": len(pids)}


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM to the process itself (a warm shutdown), then SIGKILL to its group if it lingers."""
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
            proc.wait(5)


def emit(result: dict[str, Any]) -> None:
    """Print a helper's result as the one JSON line ``run_json`` reads."""
    print(json.dumps(result), flush=True)


def broker_up() -> bool:
    """True if RabbitMQ accepts an AMQP connection now."""
    try:
        Admin().close()
        return True
    except Exception:  # noqa: BLE001 - any failure means not up
        return False


def wait_for_broker(timeout: float = 120.0) -> bool:
    """Wait until RabbitMQ accepts connections again (others' tests restart the shared broker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker_up():
            return True
        time.sleep(1.0)
    return False


def retrying(measure: Any, *, attempts: int = 3, log: Any = print, what: str = "") -> Any:
    """Call ``measure()``; if it fails (typically: the shared broker was restarted under it), wait for
    the broker and try again, up to ``attempts`` times. The last failure propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return measure()
        except Exception as exc:  # noqa: BLE001 - retried, then re-raised
            if attempt == attempts:
                raise
            log(f"  {what}: attempt {attempt} failed ({type(exc).__name__}: {str(exc)[:200]}); "
                "waiting for the broker and retrying")
            time.sleep(2.0)
            wait_for_broker()
    raise AssertionError("unreachable")
