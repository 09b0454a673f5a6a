"""Canvas: a 10-step chain's round trip and a group of 1,000 ``add``, minicelery against Celery 5.

Each measurement starts a worker (``-c 2``, ``rpc://`` results; Celery prefork without gossip, mingle
and heartbeat), waits until it consumes its unique queue, and runs one client process:

* **chain**: ``chain(add.s(1, 1), add.s(1), ... 10 steps).delay().get()``, ``warmup`` chains untimed,
  then ``chains`` timed one after another, from ``delay()`` until the final value (11) arrives. Every
  step but the last is published by the worker (from the child that ran the step before), so the figure
  is ten worker hops plus one client round trip.
* **group**: one untimed warm-up group of 100, then ``groups`` groups of ``size`` ``add.s(i, i)``,
  each timed from ``delay()`` until ``GroupResult.get()`` returns the ``size`` values in order.

The same client code runs with minicelery or Celery (``BENCH_IMPL``) on the same task module; rounds
interleave the implementations. No pika reference: plain pika has no canvas to compare with.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import roundtrip  # noqa: E402
from common import (  # noqa: E402
    BENCH_DIR,
    Admin,
    bench_env,
    emit,
    median,
    retrying,
    run_json,
    stop_process,
    unique_queue,
)

#: Steps of the timed chain (its final value is CHAIN_STEPS + 1: 1 + 1, then + 1 for each later step).
CHAIN_STEPS = 10
#: Size of the untimed warm-up group.
GROUP_WARMUP = 100

# -- helpers run in their own processes ----------------------------------------------------------------


def _canvas() -> tuple[Any, Any, Any]:
    """``(add, chain, group)`` from minicelery or Celery, whichever ``BENCH_IMPL`` selects."""
    import bench_tasks

    if os.environ.get("BENCH_IMPL") == "celery":
        from celery import chain, group
    else:
        from minicelery import chain, group
    return bench_tasks.add, chain, group


def _chain_client(chains: int, warmup: int) -> None:
    """Time ``chains`` 10-step chains one after another, after ``warmup`` untimed ones."""
    add, chain, _ = _canvas()

    def one() -> float:
        start = time.perf_counter()
        value = chain(add.s(1, 1), *(add.s(1) for _ in range(CHAIN_STEPS - 1))).delay().get(timeout=60)
        elapsed = time.perf_counter() - start
        assert value == CHAIN_STEPS + 1, value
        return elapsed

    for _ in range(warmup):
        one()
    emit({"latencies": [one() for _ in range(chains)]})


def _group_client(groups: int, size: int) -> None:
    """Time ``groups`` groups of ``size`` ``add`` until ``get()`` returns, after one of GROUP_WARMUP."""
    add, _, group = _canvas()

    def one(n: int) -> float:
        start = time.perf_counter()
        values = group(add.s(i, i) for i in range(n)).delay().get(timeout=120)
        elapsed = time.perf_counter() - start
        assert values == [2 * i for i in range(n)], values[:10]
        return elapsed

    one(GROUP_WARMUP)
    emit({"latencies": [one(size) for _ in range(groups)]})


# -- the orchestration -----------------------------------------------------------------------------------


def measure(label: str, *, chains: int, warmup: int, groups: int, size: int, python: str,
            comparison: str | None) -> dict[str, Any]:
    """Start a worker for ``label``, run the chain client then the group client, stop it, clean up."""
    queue = unique_queue("canvas")
    # Started exactly as the round trip's workers are, with the queue as the default for next steps.
    command, env = roundtrip._server_command(label, queue, python, comparison)
    env["BENCH_DEFAULT_QUEUE"] = queue
    with open(BENCH_DIR / "results" / f"canvas-{label}.log", "w") as log:
        proc = subprocess.Popen(command, cwd=str(BENCH_DIR), env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    admin = Admin()
    try:
        roundtrip._wait_consuming(admin, queue, proc)
        script = os.path.abspath(__file__)
        interpreter = python if label == "minicelery" else comparison
        assert interpreter is not None
        client_env = bench_env(BENCH_BACKEND="rpc://", BENCH_IMPL=label, BENCH_DEFAULT_QUEUE=queue)
        chain = run_json(interpreter, [script, "chain", "--count", str(chains),
                                       "--warmup", str(warmup)], env=client_env)
        group = run_json(interpreter, [script, "group", "--count", str(groups),
                                       "--size", str(size)], env=client_env)
        return {"chain_ms": median(chain["latencies"]) * 1000,
                "chain_min_ms": min(chain["latencies"]) * 1000,
                "group_s": median(group["latencies"]), "group_min_s": min(group["latencies"])}
    finally:
        stop_process(proc)
        admin.delete(queue)
        admin.close()


def run(*, chains: int, warmup: int, groups: int, size: int, rounds: int, python: str,
        comparison: str | None, log: Any = print) -> dict[str, Any]:
    """Chain latency and group time (medians over rounds of each round's median), minicelery vs Celery."""
    labels = ["minicelery"] + (["celery"] if comparison else [])
    per_round: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    errors: dict[str, str] = {}
    log(f"canvas: {chains} chains of {CHAIN_STEPS} after {warmup} warm-up chains; {groups} groups of {size} "
        f"after one of {GROUP_WARMUP}; x {rounds} rounds")
    for round_number in range(rounds):
        for label in labels:
            if label in errors:
                continue
            try:
                per_round[label].append(retrying(
                    functools.partial(measure, label, chains=chains, warmup=warmup, groups=groups,
                                      size=size, python=python, comparison=comparison),
                    log=log, what=f"canvas {label}"))
            except Exception as exc:  # noqa: BLE001 - reported, the others go on
                errors[label] = f"{type(exc).__name__}: {exc}"
                log(f"  {label}: FAILED: {exc}")
        log(f"  round {round_number + 1}/{rounds}: " + ", ".join(
            f"{label} chain {rows[-1]['chain_ms']:.1f} ms, group {rows[-1]['group_s']:.3f} s"
            for label, rows in per_round.items() if rows))
    chain = {label: median(r["chain_ms"] for r in rows) for label, rows in per_round.items() if rows}
    group = {label: median(r["group_s"] for r in rows) for label, rows in per_round.items() if rows}
    return {
        "chains": chains, "warmup": warmup, "steps": CHAIN_STEPS, "groups": groups, "size": size,
        "rounds": rounds, "chain_median_ms": chain, "group_median_s": group,
        "chain_ratio_vs_celery": ({k: v / chain["celery"] for k, v in chain.items()}
                                  if "celery" in chain else {}),
        "group_ratio_vs_celery": ({k: v / group["celery"] for k, v in group.items()}
                                  if "celery" in group else {}),
        "per_round": per_round, "errors": errors,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("helper", choices=["chain", "group"])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.helper == "chain":
        _chain_client(args.count, args.warmup)
    else:
        _group_client(args.count, args.size)


if __name__ == "__main__":
    main()
