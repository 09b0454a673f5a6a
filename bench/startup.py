"""Benchmark 2, import and app creation: ``python -c "<import; create app>"`` minus ``python -c pass``.

Each interpreter start is timed from the outside (``perf_counter`` around ``subprocess.run``); runs of the
snippet and of the bare ``pass`` alternate so that load on the machine hits both alike, and the figure is
the difference of the medians. ``-X importtime`` shows where the time goes (top modules by cumulative
time). The plain pika reference is ``import pika; pika.ConnectionParameters(...)``: what a bare AMQP
client pays before its first connection.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BENCH_DIR, REPO, median  # noqa: E402

SNIPPETS = {
    "pika": "import pika; pika.ConnectionParameters(host='127.0.0.1')",
    "minicelery": "from minicelery import Celery; Celery('x')",
    "celery": "from celery import Celery; Celery('x')",
    "dramatiq": ("from dramatiq.brokers.rabbitmq import RabbitmqBroker; import dramatiq; "
                 "dramatiq.set_broker(RabbitmqBroker(host='127.0.0.1'))"),
}


def _clean_env() -> dict[str, str]:
    """The environment without PYTHON* variables: no extra paths, bytecode caches used as usual."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "BENCH_"))}


def _time_once(python: str, code: str) -> float:
    start = time.perf_counter()
    subprocess.run([python, "-c", code], check=True, env=_clean_env(), cwd=str(REPO),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(python: str, code: str, runs: int) -> dict[str, Any]:
    """Median wall time of ``python -c code`` minus that of ``python -c pass`` (alternating), in ms."""
    _time_once(python, code)  # warm the page cache and write bytecode caches
    _time_once(python, "pass")
    with_code, bare = [], []
    for _ in range(runs):
        with_code.append(_time_once(python, code))
        bare.append(_time_once(python, "pass"))
    return {"ms": (median(with_code) - median(bare)) * 1000, "median_ms": median(with_code) * 1000,
            "bare_ms": median(bare) * 1000, "runs": runs}


def _importtime_rows(python: str, code: str) -> list[dict[str, Any]]:
    proc = subprocess.run([python, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          env=_clean_env(), cwd=str(REPO), check=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = line.split(":", 1)[1].split("|")
        rows.append({"module": name.strip(), "self_ms": int(self_us) / 1000,
                     "cumulative_ms": int(cumulative_us) / 1000,
                     "depth": (len(name) - len(name.lstrip()) - 1) // 2})
    return rows


def importtime(python: str, code: str, top: int = 10) -> list[dict[str, Any]]:
    """The ``top`` modules by cumulative import time (``-X importtime``, last of 3 runs), in ms, leaving
    out what a bare ``python -c pass`` imports too (``site``, ``encodings``...)."""
    bare = {row["module"] for row in _importtime_rows(python, "pass")}
    rows: list[dict[str, Any]] = []
    for _ in range(3):
        rows = _importtime_rows(python, code)
    own = (row for row in rows if row["module"] not in bare)
    return sorted(own, key=lambda row: -row["cumulative_ms"])[:top]


def run(*, runs: int, python: str, comparison: str | None, log: Any = print) -> dict[str, Any]:
    """Measure each snippet; ratios are costs relative to ``import pika`` in the same run.

    With an interpreter that has Celery and Dramatiq (``comparison``), every snippet runs in it, so that all
    four pay the same interpreter start and ``sys.path``; otherwise pika and minicelery run in ``python``.
    minicelery is always imported from the working tree (the current directory is the repository).
    """
    interpreter = comparison or python
    log(f"import: {interpreter}, {runs} alternating runs per snippet")
    results: dict[str, Any] = {}
    for label, code in SNIPPETS.items():
        if label in ("celery", "dramatiq") and comparison is None:
            continue
        results[label] = measure(interpreter, code, runs)
        results[label]["importtime_top"] = importtime(interpreter, code)
        log(f"  {label:<11} {results[label]['ms']:6.1f} ms over bare python "
            f"({results[label]['bare_ms']:.1f} ms), median of {runs}")
    return {"runs": runs, "python": interpreter, "ms": {label: r["ms"] for label, r in results.items()},
            "ratio_vs_pika": {label: r["ms"] / results["pika"]["ms"] for label, r in results.items()},
            "details": results, "bench_dir": str(BENCH_DIR)}


if __name__ == "__main__":
    import json

    print(json.dumps(run(runs=int(sys.argv[1]) if len(sys.argv) > 1 else 15, python=sys.executable,
                         comparison=None), indent=1))
