"""Benchmarks 4 and 5, round trip and memory, measured on the same running workers.

Round trip: a client process calls ``add.delay(1, 2).get()`` (``rpc://`` results) against a worker started
with ``-c 2``: ``warmup`` calls first, then ``calls`` timed one by one; the median latency is reported.
The plain pika reference is the same exchange written by hand: a one-process pika server consuming the
task queue and answering on ``reply_to`` (acking each request), and a pika client publishing a request
and waiting on its reply queue.

Memory: once the client is done (the workers are warm: every child ran tasks), VmRSS of the worker's main
process and of each of its descendants is read from ``/proc``, with PSS beside it (RSS counts the pages
children share with the main process after ``fork`` once per process; PSS splits them). The pika
server's RSS is the reference: what one Python process with pika connected costs.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BENCH_DIR,
    Admin,
    bench_env,
    emit,
    median,
    memory_of,
    pika_parameters,
    retrying,
    run_json,
    stop_process,
    unique_queue,
    worker_args,
)

# -- helpers run in their own processes ----------------------------------------------------------------


def _client(queue: str, calls: int, warmup: int) -> None:
    """``add.delay(1, 2).get()`` with minicelery or Celery (``BENCH_IMPL``), timed one by one."""
    import bench_tasks

    bench_tasks.app.conf.task_default_queue = queue
    add = bench_tasks.add
    for _ in range(warmup):
        assert add.delay(1, 2).get(timeout=30) == 3
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        result = add.delay(1, 2).get(timeout=30)
        latencies.append(time.perf_counter() - start)
        assert result == 3
    emit({"latencies": latencies})


def _pika_server(queue: str) -> None:
    """Answer every request on ``queue`` with a fixed reply on its ``reply_to``; ack each request."""
    import pika

    connection = pika.BlockingConnection(pika_parameters())
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    channel.basic_qos(prefetch_count=8, global_qos=True)
    reply = b'{"status": "SUCCESS", "result": 3}'

    def on_request(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        ch.basic_publish("", properties.reply_to, reply, pika.BasicProperties(
            correlation_id=properties.correlation_id, content_type="application/json",
            content_encoding="utf-8", delivery_mode=1))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, on_request)
    try:
        channel.start_consuming()
    except KeyboardInterrupt:
        pass


def _pika_client(queue: str, calls: int, warmup: int) -> None:
    """Publish a request with ``reply_to`` and wait for its reply, ``warmup + calls`` times."""
    import pika

    connection = pika.BlockingConnection(pika_parameters())
    channel = connection.channel()
    reply_queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
    replies: list[str] = []
    channel.basic_consume(reply_queue, lambda ch, m, p, b: replies.append(p.correlation_id), auto_ack=True)
    body = b'[[1, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'

    def call() -> None:
        correlation_id = str(uuid.uuid4())
        channel.basic_publish("", queue, body, pika.BasicProperties(
            correlation_id=correlation_id, reply_to=reply_queue, delivery_mode=2,
            content_type="application/json", content_encoding="utf-8"))
        while correlation_id not in replies:
            connection.process_data_events(time_limit=None)
        replies.remove(correlation_id)

    for _ in range(warmup):
        call()
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    connection.close()
    emit({"latencies": latencies})


# -- the orchestration -----------------------------------------------------------------------------------


def _server_command(label: str, queue: str, python: str, comparison: str | None) -> tuple[list[str], dict]:
    if label == "pika":
        return [python, os.path.abspath(__file__), "pika-server", "--queue", queue], bench_env()
    if label == "minicelery":
        return ([python, "-m", "minicelery", "-A", "bench_tasks", "worker", "-c", "2", "-Q", queue,
                 "-l", "WARNING", *worker_args()], bench_env(BENCH_BACKEND="rpc://"))
    assert comparison is not None
    return ([comparison, "-m", "celery", "-A", "bench_tasks", "worker", "-c", "2", "-Q", queue, "-l",
             "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            bench_env(BENCH_BACKEND="rpc://", BENCH_IMPL="celery"))


def _wait_consuming(admin: Admin, queue: str, proc: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before consuming")
        try:
            if admin.consumers(queue) > 0:
                return
        except Exception:  # noqa: BLE001 - the queue does not exist yet
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing consumed {queue} within {timeout:.0f} s")


def measure(label: str, *, calls: int, warmup: int, python: str, comparison: str | None) -> dict[str, Any]:
    """Start the server for ``label``, run the client, read memory, stop the server, clean up."""
    queue = unique_queue("rtt")
    command, env = _server_command(label, queue, python, comparison)
    with open(BENCH_DIR / "results" / f"roundtrip-{label}.log", "w") as log:
        proc = subprocess.Popen(command, cwd=str(BENCH_DIR), env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    admin = Admin()
    try:
        _wait_consuming(admin, queue, proc)
        script = os.path.abspath(__file__)
        if label == "pika":
            client = run_json(python, [script, "pika-client", "--queue", queue, "--calls", str(calls),
                                       "--warmup", str(warmup)])
        else:
            interpreter = python if label == "minicelery" else comparison
            assert interpreter is not None
            client = run_json(interpreter, [script, "client", "--queue", queue, "--calls", str(calls),
                                            "--warmup", str(warmup)],
                              env=bench_env(BENCH_BACKEND="rpc://",
                                            BENCH_IMPL="celery" if label == "celery" else "minicelery"))
        memory = memory_of(proc.pid)
        latencies = sorted(client["latencies"])
        return {"median_ms": median(latencies) * 1000,
                "p90_ms": latencies[int(len(latencies) * 0.9)] * 1000,
                "min_ms": latencies[0] * 1000, "memory": memory}
    finally:
        stop_process(proc)
        admin.delete(queue)
        admin.close()


def run(*, calls: int, warmup: int, rounds: int, python: str, comparison: str | None,
        log: Any = print) -> dict[str, Any]:
    """Round-trip latency (median over rounds of each round's median) and worker memory, vs pika."""
    labels = ["pika", "minicelery"] + (["celery"] if comparison else [])
    per_round: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    errors: dict[str, str] = {}
    log(f"round trip: {calls} calls after {warmup} warm-up calls, x {rounds} rounds")
    for round_number in range(rounds):
        for label in labels:
            if label in errors:
                continue
            try:
                per_round[label].append(retrying(
                    functools.partial(measure, label, calls=calls, warmup=warmup, python=python,
                                      comparison=comparison), log=log, what=f"round trip {label}"))
            except Exception as exc:  # noqa: BLE001 - reported, the others go on
                errors[label] = f"{type(exc).__name__}: {exc}"
                log(f"  {label}: FAILED: {exc}")
        log(f"  round {round_number + 1}/{rounds}: " + ", ".join(
            f"{label} {rows[-1]['median_ms']:.2f} ms" for label, rows in per_round.items() if rows))
    latency = {label: median(r["median_ms"] for r in rows) for label, rows in per_round.items() if rows}
    p90 = {label: median(r["p90_ms"] for r in rows) for label, rows in per_round.items() if rows}
    memory = {}
    for label, rows in per_round.items():
        if rows:
            last = rows[-1]["memory"]
            memory[label] = {
                "main_rss_mb": last["main_rss_kb"] / 1024,
                "children_rss_mb": [last["rss_kb"][pid] / 1024 for pid in last["pids"][1:]],
                "total_rss_mb": median(r["memory"]["total_rss_kb"] for r in rows) / 1024,
                "total_pss_mb": median(r["memory"]["total_pss_kb"] for r in rows) / 1024,
                "processes": last["processes"],
            }
    reference = latency.get("pika")
    ref_rss = memory.get("pika", {}).get("total_rss_mb")
    return {
        "calls": calls, "warmup": warmup, "rounds": rounds,
        "latency_median_ms": latency, "latency_p90_ms": p90,
        "latency_ratio_vs_pika": {k: v / reference for k, v in latency.items()} if reference else {},
        "memory": memory,
        "memory_ratio_vs_pika": ({k: v["total_rss_mb"] / ref_rss for k, v in memory.items()}
                                 if ref_rss else {}),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("helper", choices=["client", "pika-server", "pika-client", "run"])
    parser.add_argument("--queue")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args(argv)
    if args.helper == "client":
        _client(args.queue, args.calls, args.warmup)
    elif args.helper == "pika-server":
        _pika_server(args.queue)
    elif args.helper == "pika-client":
        _pika_client(args.queue, args.calls, args.warmup)
    else:
        import json

        from common import comparison_python

        print(json.dumps(run(calls=args.calls, warmup=args.warmup, rounds=1, python=sys.executable,
                             comparison=comparison_python()), indent=1))


if __name__ == "__main__":
    main()
