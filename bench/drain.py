"""Benchmark 3, drain: how long a consumer takes to empty a queue of N noop task messages.

Each measurement gets a fresh queue, pre-loaded with N messages (by minicelery's ``noop.delay()``; by
Dramatiq's ``noop.send()`` for Dramatiq), then a consumer process is started and the clock runs from
its start until a passive declare, polled every 10 ms, reports no ready message left. Startup (imports,
connecting, forking children) is therefore included, as a user waiting for the queue would see it. At
most ``prefetch`` messages (8) can still be unacknowledged at that moment: under 0.1 % of N. After the
consumer stopped, the queue must be empty (nothing requeued), or the measurement is reported as failed.

Consumers: the minicelery worker (``-c 2``); plain pika in one process acking each message, and acking
every 4 with ``multiple=True`` (same prefetch, 8, as the worker's ``-c 2 x 4``); Celery's worker
(``-c 2``, prefork, without gossip/mingle/heartbeat, which minicelery does not have either); Dramatiq
(``--processes 2 --threads 1``).

With ``work`` (the short-task drain), every task keeps its CPU busy that long (``BENCH_TASK_WORK``):
what shows then is how long a child waits between two jobs. Plain pika runs no tasks and is left out;
the workers are compared with Celery.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BENCH_DIR,
    Admin,
    bench_env,
    median,
    retrying,
    run_json,
    stop_process,
    unique_queue,
    worker_args,
)

POLL_INTERVAL = 0.01
#: Seconds a worker is left running after the queue looks empty, before its warm shutdown.
SETTLE_TIME = 2.0


def _consumer_command(label: str, queue: str, count: int, python: str,
                      comparison: str | None) -> tuple[list[str], dict[str, str]]:
    if label == "minicelery":
        return ([python, "-m", "minicelery", "-A", "bench_tasks", "worker", "-c", "2", "-Q", queue,
                 "-l", "WARNING", *worker_args()], bench_env(BENCH_BACKEND=""))
    if label == "pika (ack each)":
        return [python, "pika_consumer.py", queue, str(count), "--batch", "1"], bench_env()
    if label == "pika (ack x4)":
        return [python, "pika_consumer.py", queue, str(count), "--batch", "4"], bench_env()
    assert comparison is not None
    if label == "celery":
        return ([comparison, "-m", "celery", "-A", "bench_tasks", "worker", "-c", "2", "-Q", queue,
                 "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
                bench_env(BENCH_BACKEND="", BENCH_IMPL="celery"))
    if label == "dramatiq":
        return ([comparison, "-m", "dramatiq", "bench_dramatiq", "--processes", "2", "--threads", "1"],
                bench_env(BENCH_QUEUE=queue))
    raise ValueError(label)


def preload(queue: str, count: int, *, python: str, dramatiq: str | None = None) -> None:
    """Fill ``queue`` with ``count`` noop messages (minicelery's, or Dramatiq's with ``dramatiq``)."""
    script = str(BENCH_DIR / "publish.py")
    if dramatiq:
        run_json(dramatiq, [script, "dramatiq", "--queue", queue, "--count", str(count), "--warmup", "0"])
    else:
        run_json(python, [script, "minicelery", "--queue", queue, "--count", str(count), "--warmup", "0"],
                 env=bench_env(BENCH_BACKEND=""))


def drain_once(label: str, count: int, *, python: str, comparison: str | None, work: float = 0.0,
               timeout: float = 240.0) -> dict[str, Any]:
    """Pre-load a fresh queue, start the consumer, time until the queue is empty; clean up."""
    is_dramatiq = label == "dramatiq"
    queue = unique_queue("drain")
    if is_dramatiq:
        queue = queue.replace(".", "_")
    queues = (queue, f"{queue}.DQ", f"{queue}.XQ") if is_dramatiq else (queue,)
    admin = Admin()
    proc = None
    try:
        preload(queue, count, python=python, dramatiq=comparison if is_dramatiq else None)
        loaded = admin.wait_depth(queue, count)
        if loaded != count:
            raise RuntimeError(f"pre-load put {loaded} messages in {queue}, expected {count}")
        command, env = _consumer_command(label, queue, count, python, comparison)
        env["BENCH_TASK_WORK"] = repr(work)
        log_path = BENCH_DIR / "results" / f"drain-{label.split()[0]}.log"
        start = time.perf_counter()
        with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(command, cwd=str(BENCH_DIR), env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        deadline = start + timeout
        while admin.depth(queue) > 0:
            if proc.poll() is not None and proc.returncode != 0:
                raise RuntimeError(f"{label} exited with {proc.returncode} (see {log_path})")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{label} did not drain {queue} within {timeout:.0f} s")
            time.sleep(POLL_INTERVAL)
        seconds = time.perf_counter() - start
        if label.startswith("pika"):
            proc.wait(30)
        else:
            # Up to `prefetch` messages may still be running or waiting in the worker: give them time, or
            # a warm shutdown rightly sends the waiting ones back to the queue.
            time.sleep(SETTLE_TIME)
        stop_process(proc)
        left = admin.depth(queue)
        if left:
            raise RuntimeError(f"{label}: {left} messages back in the queue after the consumer stopped")
        return {"seconds": seconds, "rate_per_s": count / seconds}
    finally:
        if proc is not None:
            stop_process(proc)
        admin.delete(*queues)  # kept for delete_leftovers() if the broker went away meanwhile
        admin.close()


LABELS = ("pika (ack each)", "pika (ack x4)", "minicelery", "celery", "dramatiq")


def run(*, count: int, rounds: int, python: str, comparison: str | None, log: Any = print,
        labels: tuple[str, ...] = LABELS, work: float = 0.0) -> dict[str, Any]:
    """Drain ``count`` messages ``rounds`` times per consumer (interleaved); ratios vs pika acking each
    and vs Celery. With ``work``, tasks spin that long and plain pika is left out."""
    if work:
        labels = tuple(label for label in labels if not label.startswith("pika"))
    labels = tuple(label for label in labels if comparison or label not in ("celery", "dramatiq"))
    seconds: dict[str, list[float]] = {label: [] for label in labels}
    errors: dict[str, str] = {}
    log(f"drain: {count} messages x {rounds} rounds" + (f", tasks busy {work * 1000:g} ms" if work else ""))
    for round_number in range(rounds):
        for label in labels:
            if label in errors:
                continue
            try:
                result = retrying(functools.partial(drain_once, label, count, python=python,
                                                    comparison=comparison, work=work),
                                  log=log, what=f"drain {label}")
                seconds[label].append(result["seconds"])
            except Exception as exc:  # noqa: BLE001 - reported in the results, the other consumers go on
                errors[label] = f"{type(exc).__name__}: {exc}"
                log(f"  {label}: FAILED: {exc}")
        log(f"  round {round_number + 1}/{rounds}: " + ", ".join(
            f"{label} {values[-1]:.2f} s" for label, values in seconds.items() if values))
    medians = {label: median(values) for label, values in seconds.items() if values}
    reference = medians.get("pika (ack each)")
    celery = medians.get("celery")
    return {
        "count": count, "rounds": rounds, "work_s": work, "seconds_median": medians,
        "speed_vs_celery": {label: celery / value for label, value in medians.items()} if celery else {},
        "rate_per_s": {label: count / value for label, value in medians.items()},
        "ratio_vs_pika": {label: reference / value for label, value in medians.items()} if reference else {},
        "seconds": seconds, "errors": errors,
    }


if __name__ == "__main__":
    import json

    from common import comparison_python

    only = tuple(sys.argv[3:]) or LABELS
    print(json.dumps(run(count=int(sys.argv[1]) if len(sys.argv) > 1 else 10_000,
                         rounds=int(sys.argv[2]) if len(sys.argv) > 2 else 1, python=sys.executable,
                         comparison=comparison_python(), labels=only), indent=1))
