"""Benchmark 1, publish: ``noop.delay()`` N times vs plain pika publishing the same bytes.

Each measurement runs in a fresh process (``python bench/publish.py <impl> ...``) that opens its
connection and sends one warm-up message (connect, declare) before the clock starts, then times N sends
and prints ``{"seconds": ...}``. The plain pika reference never imports minicelery (which adapts pika's
header encoder for floats), sends the exact body and properties minicelery's ``noop.delay()`` produces
(captured by the ``sample`` helper), with ``BasicProperties`` built once, over a connection with
minicelery's default settings, to the same durable queue. Rounds interleave the implementations so that
a noisy neighbour hurts them alike; the queue is purged after each measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Admin, bench_env, emit, median, pika_parameters, run_json, unique_queue  # noqa: E402

# -- the helpers each measurement runs in its own process ----------------------------------------------


def _sample(out: str) -> None:
    """Write the body and properties ``noop.delay()`` sends (minicelery, no backend) to ``out``."""
    import bench_tasks

    app = bench_tasks.app
    captured: dict[str, Any] = {}

    class Capture:
        def publish(self, body: bytes, properties: dict[str, Any], **route: Any) -> None:
            captured.update(body=body.decode("utf-8"), properties=properties, route=route)

    app.__dict__["_broker"] = Capture()  # the app asks its broker to publish: catch the message instead
    bench_tasks.noop.delay()
    captured["route"]["declare"] = [spec.name for spec in captured["route"]["declare"]]
    with open(out, "w") as handle:
        json.dump(captured, handle)
    emit({"bytes": len(captured["body"]), "headers": len(captured["properties"]["headers"])})


def _minicelery(queue: str, count: int, warmup: int = 1) -> None:
    import bench_tasks

    bench_tasks.app.conf.task_default_queue = queue
    noop = bench_tasks.noop
    for _ in range(warmup):
        noop.delay()  # connect and declare before the clock starts
    start = time.perf_counter()
    for _ in range(count):
        noop.delay()
    seconds = time.perf_counter() - start
    emit({"seconds": seconds})


def _celery(queue: str, count: int, warmup: int = 1) -> None:
    os.environ["BENCH_IMPL"] = "celery"
    _minicelery(queue, count, warmup)  # bench_tasks builds a Celery app when BENCH_IMPL=celery


def _pika(queue: str, count: int, sample: str) -> None:
    import pika

    with open(sample) as handle:
        captured = json.load(handle)
    body = captured["body"].encode("utf-8")
    properties = pika.BasicProperties(**captured["properties"])
    connection = pika.BlockingConnection(pika_parameters())
    channel = connection.channel()
    # Declared exactly as minicelery declares a task queue (exchange of the same name, bound).
    channel.exchange_declare(queue, exchange_type="direct", durable=True, auto_delete=False)
    channel.queue_declare(queue, durable=True, exclusive=False, auto_delete=False)
    channel.queue_bind(queue, queue, routing_key=queue)
    channel.basic_publish("", queue, body, properties)
    start = time.perf_counter()
    for _ in range(count):
        channel.basic_publish("", queue, body, properties)
    seconds = time.perf_counter() - start
    connection.close()
    emit({"seconds": seconds})


def _dramatiq(queue: str, count: int, warmup: int = 1) -> None:
    os.environ["BENCH_QUEUE"] = queue
    import bench_dramatiq

    noop = bench_dramatiq.noop
    for _ in range(warmup):
        noop.send()
    start = time.perf_counter()
    for _ in range(count):
        noop.send()
    seconds = time.perf_counter() - start
    bench_dramatiq.broker.close()
    emit({"seconds": seconds})


# -- the orchestration -----------------------------------------------------------------------------------

#: label -> (needs the comparison interpreter, helper arguments, extra environment)
IMPLEMENTATIONS: dict[str, tuple[bool, str, dict[str, str]]] = {
    "pika": (False, "pika", {}),
    "minicelery": (False, "minicelery", {"BENCH_BACKEND": ""}),
    "minicelery rpc://": (False, "minicelery", {"BENCH_BACKEND": "rpc://"}),
    "celery": (True, "celery", {"BENCH_BACKEND": "", "BENCH_IMPL": "celery"}),
    "dramatiq": (True, "dramatiq", {}),
}


def run(*, count: int, rounds: int, python: str, comparison: str | None,
        log: Any = print) -> dict[str, Any]:
    """Measure every implementation ``rounds`` times (interleaved); return rates and ratios vs pika."""
    script = os.path.abspath(__file__)
    with tempfile.NamedTemporaryFile(prefix="bench-sample-", suffix=".json", delete=False) as handle:
        sample_file = handle.name
    sample = run_json(python, [script, "sample", "--out", sample_file], env=bench_env(BENCH_BACKEND=""))
    log(f"publish: {count} messages x {rounds} rounds; body {sample['bytes']} B, "
        f"{sample['headers']} headers")
    impls = {label: spec for label, spec in IMPLEMENTATIONS.items() if not spec[0] or comparison}
    seconds: dict[str, list[float]] = {label: [] for label in impls}
    queue = unique_queue("publish")
    dramatiq_queue = queue.replace(".", "_")
    try:
        with Admin() as admin:
            for round_number in range(rounds):
                for label, (needs_comparison, helper, extra) in impls.items():
                    target = dramatiq_queue if helper == "dramatiq" else queue
                    args = [script, helper, "--queue", target, "--count", str(count)]
                    if helper == "pika":
                        args += ["--sample", sample_file]
                    interpreter = comparison if needs_comparison else python
                    assert interpreter is not None
                    result = run_json(interpreter, args, env=bench_env(**extra))
                    seconds[label].append(result["seconds"])
                    admin.wait_depth(target, count + 1, timeout=30)  # every message arrived
                    admin.purge(target)
                log(f"  round {round_number + 1}/{rounds}: " + ", ".join(
                    f"{label} {count / values[-1]:,.0f}/s" for label, values in seconds.items()))
    finally:
        with Admin() as admin:
            admin.delete(queue, dramatiq_queue, f"{dramatiq_queue}.DQ", f"{dramatiq_queue}.XQ")
        os.unlink(sample_file)
    rates = {label: count / median(values) for label, values in seconds.items()}
    return {
        "count": count, "rounds": rounds, "body_bytes": sample["bytes"],
        "rate_per_s": rates,
        "ratio_vs_pika": {label: rate / rates["pika"] for label, rate in rates.items()},
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("helper", choices=["sample", "pika", "minicelery", "celery", "dramatiq"])
    parser.add_argument("--queue")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1, help="untimed sends first (they also connect)")
    parser.add_argument("--sample")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.helper == "sample":
        _sample(args.out)
    elif args.helper == "pika":
        _pika(args.queue, args.count, args.sample)
    else:
        helpers = {"minicelery": _minicelery, "celery": _celery, "dramatiq": _dramatiq}
        helpers[args.helper](args.queue, args.count, args.warmup)


if __name__ == "__main__":
    main()
