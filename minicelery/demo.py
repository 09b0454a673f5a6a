"""``python -m minicelery demo``: the zero-setup tour — a broker, a worker and a client on this machine.

It starts the embedded broker on a free port (in a temporary data directory), a worker with one child per
CPU (``-A minicelery.demo``: the tasks below), and sends a few hundred example tasks — plain additions, one
that retries, one that fails, one with a countdown, a chain and a group — showing a progress bar, then the
results and the
throughput; then it stops everything and removes the directory. RabbitMQ, running or not, is not involved.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from .app import Celery
from .canvas import chain, group, signature
from .embedded import BrokerChild

__all__ = ["app", "run_demo"]

#: The demo's app; the worker subprocess gets the broker URL through the environment.
app = Celery("minicelery.demo", broker=os.environ.get("MINICELERY_DEMO_BROKER"), backend="rpc://")


@app.task(name="demo.add")
def add(x: int, y: int) -> int:
    """The plain task: most of the tour."""
    return x + y


@app.task(name="demo.flaky", bind=True, max_retries=3)
def flaky(self: Any) -> str:
    """Fails on its first run and retries once, 0.2 s later."""
    if self.request.retries == 0:
        raise self.retry(exc=ConnectionError("the first try always fails"), countdown=0.2)
    return f"succeeded after {self.request.retries} retry"


@app.task(name="demo.fail")
def fail() -> None:
    """Always raises: its result is the exception."""
    raise ValueError("this task fails on purpose")


def _bar(done: int, total: int, width: int = 40) -> str:
    filled = width * done // total
    return f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def run_demo(count: int = 300, concurrency: int | None = None) -> int:
    """Run the tour; returns the exit code (0 when every result was right)."""
    concurrency = concurrency or os.cpu_count() or 1
    folder = tempfile.mkdtemp(prefix="minicelery-demo-")
    broker = BrokerChild("amqp://guest:guest@127.0.0.1//", data_dir=os.path.join(folder, "broker"), port=0)
    worker = None
    try:
        broker.start()
        url = f"amqp://guest:guest@127.0.0.1:{broker.port}//"
        print(f"embedded broker on {url} (data in {folder})")
        log = open(os.path.join(folder, "worker.log"), "w")  # noqa: SIM115 - closed with the worker
        env = dict(os.environ, MINICELERY_DEMO_BROKER=url)
        worker = subprocess.Popen([sys.executable, "-m", "minicelery", "-A", "minicelery.demo", "worker",
                                   "-c", str(concurrency)], env=env, stdout=log, stderr=log)
        print(f"worker with {concurrency} child process{'es' if concurrency != 1 else ''}; sending {count} "
              "additions, a retry, a failure, a countdown, a chain and a group")
        return _tour(url, count)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(60)
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _tour(url: str, count: int) -> int:
    client = Celery("minicelery.demo.client", broker=url, backend="rpc://")
    started = time.monotonic()
    sums = [client.send_task("demo.add", (n, n)) for n in range(count)]
    step = signature("demo.add", app=client)  # by name: the client does not define the tasks
    special = {"retry": client.send_task("demo.flaky"), "failure": client.send_task("demo.fail"),
               "countdown": client.send_task("demo.add", (20, 22), countdown=1),
               "chain": chain(step.clone((1, 2)), step.clone((10,)), step.clone((100,))).apply_async(),
               "group": group(step.clone((n, n)) for n in range(5)).apply_async()}
    total = count + len(special)
    wrong = 0
    for done, result in enumerate(sums, 1):
        wrong += result.get(timeout=120) != 2 * (done - 1)
        if done % 10 == 0 or done == count:
            print(_bar(done, total), end="", flush=True)
    elapsed = time.monotonic() - started
    outcomes = {name: result.get(timeout=60, propagate=False) for name, result in special.items()}
    print(_bar(total, total))
    print(f"\n  {count} additions: {count - wrong} right, {wrong} wrong, {count / elapsed:,.0f} tasks/s "
          f"({elapsed:.2f} s, sending included)")
    for name, outcome in outcomes.items():
        print(f"  {name:10} -> {outcome!r}")
    client.close()
    ok = (not wrong and outcomes["countdown"] == 42 and isinstance(outcomes["failure"], ValueError)
          and str(outcomes["retry"]).startswith("succeeded") and outcomes["chain"] == 113
          and outcomes["group"] == [0, 2, 4, 6, 8])
    print("\nall done: everything stopped and cleaned up" if ok else "\nsomething went wrong (see above)")
    return 0 if ok else 1
