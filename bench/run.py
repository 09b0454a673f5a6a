"""Run the minicelery benchmarks against plain pika (and Celery and Dramatiq where installed).

    python bench/run.py            # full run: ~8-10 minutes on 2 cores
    python bench/run.py --quick    # fewer messages and rounds: ~3-4 minutes
    tox -e bench                   # the same, in a venv with Celery and Dramatiq for the comparisons

Every figure is also given as a ratio to a plain pika program measured in the same run, because the
absolute numbers move with the machine (and with whatever else runs on it). Results go to
``bench/results/latest.json``; ``--plot`` also draws ``docs/performance.png`` (needs matplotlib).
Needs RabbitMQ on 127.0.0.1:5672 (guest/guest); every queue it creates is unique and deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

RESULTS = common.BENCH_DIR / "results"

#: (count or runs, rounds) per benchmark, full and quick.
PLANS = {
    "full": {"publish": (10_000, 5), "import": (20, 1), "drain": (10_000, 5), "drain_short": (6_000, 5),
             "roundtrip": (500, 3), "canvas": (20, 3)},
    "quick": {"publish": (2_000, 3), "import": (8, 1), "drain": (3_000, 2), "drain_short": (2_000, 2),
              "roundtrip": (150, 1), "canvas": (20, 2)},
}
BENCHMARKS = ("publish", "import", "drain", "drain_short", "roundtrip", "canvas")

#: The canvas benchmark's warm-up chains, timed groups per round and group size (full and quick alike).
CANVAS_WARMUP, CANVAS_GROUPS, CANVAS_GROUP_SIZE = 3, 3, 1000

#: CPU seconds each task of the short-task drain spends.
SHORT_TASK = 0.0005


def _versions(python: str) -> dict[str, str]:
    code = ("import json, importlib.metadata as m\nout = {}\n"
            "for name in ('pika', 'celery', 'kombu', 'dramatiq', 'msgpack'):\n"
            "    try: out[name] = m.version(name)\n"
            "    except Exception: pass\nprint(json.dumps(out))")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def _git_revision() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=str(common.REPO))
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "minicelery"], capture_output=True,
                           text=True, cwd=str(common.REPO)).stdout.strip()
    return proc.stdout.strip() + ("+modified" if dirty else "") if proc.returncode == 0 else "unknown"


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = PLANS["quick" if args.quick else "full"]
    python = common.minicelery_python()
    comparison = None if args.no_comparisons else common.comparison_python()
    selected = args.only.split(",") if args.only else list(BENCHMARKS)
    if not common.wait_for_broker(10):
        raise SystemExit("RabbitMQ is not reachable on 127.0.0.1:5672 (guest/guest)")
    started = time.monotonic()
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full", "plan": plan,
            "python": python, "python_version": platform.python_version(),
            "comparison_python": comparison,
            "versions": _versions(comparison or python), "minicelery_revision": _git_revision(),
            "cpus": os.cpu_count(), "loadavg_before": os.getloadavg(),
        },
    }
    print(f"minicelery benchmarks ({results['meta']['mode']}), python {python}, comparisons: "
          f"{comparison or 'not installed (pika only)'}", flush=True)

    def log(message: str) -> None:
        print(message, flush=True)

    if "publish" in selected:
        import publish

        count, rounds = plan["publish"]
        results["publish"] = publish.run(count=count, rounds=rounds, python=python, comparison=comparison,
                                         log=log)
    if "import" in selected:
        import startup

        runs, _ = plan["import"]
        results["import"] = startup.run(runs=runs, python=python, comparison=comparison, log=log)
    for name, work in (("drain", 0.0), ("drain_short", SHORT_TASK)):
        if name in selected:
            import drain

            count, rounds = plan[name]
            results[name] = drain.run(count=count, rounds=rounds, python=python, comparison=comparison,
                                      log=log, work=work)
    if "roundtrip" in selected:
        import roundtrip

        calls, rounds = plan["roundtrip"]
        results["roundtrip"] = roundtrip.run(calls=calls, warmup=50 if not args.quick else 20, rounds=rounds,
                                             python=python, comparison=comparison, log=log)
    if "canvas" in selected:
        import canvas

        chains, rounds = plan["canvas"]
        results["canvas"] = canvas.run(chains=chains, warmup=CANVAS_WARMUP, groups=CANVAS_GROUPS,
                                       size=CANVAS_GROUP_SIZE, rounds=rounds, python=python,
                                       comparison=comparison, log=log)
    leftovers = common.delete_leftovers()
    if leftovers:
        log(f"deleted {len(leftovers)} queue(s) left by interrupted measurements")
    results["meta"]["loadavg_after"] = os.getloadavg()
    results["meta"]["duration_s"] = time.monotonic() - started
    return results


# -- the table ---------------------------------------------------------------------------------------------


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(benchmark, implementation, absolute figure, ratio to pika, target verdict) for each figure."""
    out: list[tuple[str, str, str, str, str]] = []
    publish = results.get("publish")
    if publish:
        rates, ratios = publish["rate_per_s"], publish["ratio_vs_pika"]
        for label, rate in rates.items():
            verdict = ""
            if label == "minicelery" and "celery" in rates:
                speedup = rate / rates["celery"]
                verdict = _verdict(speedup >= 3.0, f"target >= 3.0x Celery (is {speedup:.2f}x)")
            out.append(("publish (msg/s)", label, f"{rate:,.0f}/s", f"{ratios[label]:.2f}x", verdict))
    startup = results.get("import")
    if startup:
        for label, ms in startup["ms"].items():
            verdict = ""
            if label == "minicelery" and "celery" in startup["ms"]:
                cost = ms / startup["ms"]["celery"]
                verdict = _verdict(cost <= 0.3, f"target <= 0.3x Celery (is {cost:.2f}x)")
            out.append(("import + app (ms)", label, f"{ms:.0f} ms", f"{startup['ratio_vs_pika'][label]:.2f}x",
                        verdict))
    drain = results.get("drain")
    if drain:
        ratios = drain["ratio_vs_pika"]
        medians = drain["seconds_median"]
        for label, seconds in medians.items():
            verdict = ""
            if label == "minicelery" and "celery" in medians:
                speedup = medians["celery"] / seconds
                verdict = _verdict(speedup >= 2.0, f"target >= 2.0x Celery (is {speedup:.2f}x)")
            out.append(("drain (speed)", label, f"{seconds:.2f} s ({drain['rate_per_s'][label]:,.0f}/s)",
                        f"{ratios.get(label, float('nan')):.2f}x", verdict))
        for label, error in drain.get("errors", {}).items():
            out.append(("drain (speed)", label, "FAILED", "", error[:60]))
    short = results.get("drain_short")
    if short:
        for label, seconds in short["seconds_median"].items():
            speedup = short.get("speed_vs_celery", {}).get(label)
            out.append((f"drain {short['work_s'] * 1000:g} ms tasks", label,
                        f"{seconds:.2f} s ({short['rate_per_s'][label]:,.0f}/s)", "",
                        f"{speedup:.2f}x Celery" if speedup and label != "celery" else ""))
        for label, error in short.get("errors", {}).items():
            out.append(("drain short tasks", label, "FAILED", "", error[:60]))
    roundtrip = results.get("roundtrip")
    if roundtrip:
        latency = roundtrip["latency_median_ms"]
        for label, ms in latency.items():
            verdict = ""
            if label == "minicelery" and "celery" in latency:
                verdict = _verdict(ms <= latency["celery"] / 2,
                                   f"target <= 0.5x Celery (is {ms / latency['celery']:.2f}x)")
            p90 = roundtrip["latency_p90_ms"][label]
            out.append(("round trip (latency)", label, f"{ms:.2f} ms (p90 {p90:.2f})",
                        f"{roundtrip['latency_ratio_vs_pika'].get(label, float('nan')):.2f}x", verdict))
        for label, memory in roundtrip["memory"].items():
            verdict = ""
            if label == "minicelery" and "celery" in roundtrip["memory"]:
                cost = memory["total_rss_mb"] / roundtrip["memory"]["celery"]["total_rss_mb"]
                verdict = _verdict(cost <= 0.5, f"target <= 0.5x Celery (is {cost:.2f}x)")
            children = "+".join(f"{c:.0f}" for c in memory["children_rss_mb"])
            detail = f"{memory['total_rss_mb']:.0f} MB RSS ({memory['main_rss_mb']:.0f}" + (
                f"+{children})" if children else ")") + f", PSS {memory['total_pss_mb']:.0f} MB"
            out.append(("memory (RSS)", label, detail,
                        f"{roundtrip['memory_ratio_vs_pika'].get(label, float('nan')):.2f}x", verdict))
        for label, error in roundtrip.get("errors", {}).items():
            out.append(("round trip (latency)", label, "FAILED", "", error[:60]))
    out += _canvas_rows(results.get("canvas"))
    return out


def _canvas_rows(canvas: dict[str, Any] | None) -> list[tuple[str, str, str, str, str]]:
    """The canvas figures: no pika reference (pika has no canvas), ratios against Celery instead."""
    if not canvas:
        return []
    out = []
    figures = ((f"chain of {canvas['steps']} (latency)", canvas["chain_median_ms"],
                canvas["chain_ratio_vs_celery"], lambda v: f"{v:.1f} ms"),
               (f"group of {canvas['size']} (time)", canvas["group_median_s"],
                canvas["group_ratio_vs_celery"], lambda v: f"{v:.3f} s"))
    for name, medians, ratios, shown in figures:
        for label, value in medians.items():
            verdict = ""
            if label == "minicelery" and "celery" in ratios:
                verdict = _verdict(ratios[label] <= 0.5, f"target <= 0.5x Celery (is {ratios[label]:.2f}x)")
            out.append((name, label, shown(value), "", verdict))
    for label, error in canvas.get("errors", {}).items():
        out.append(("canvas", label, "FAILED", "", error[:60]))
    return out


def _verdict(ok: bool, text: str) -> str:
    return ("met: " if ok else "NOT met: ") + text


def table(results: dict[str, Any]) -> str:
    """The results as a fixed-width text table (ratios: speed vs pika for publish/drain, else cost)."""
    header = ("benchmark", "implementation", "measured", "vs pika", "target")
    body = rows(results)
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(5)]
    lines = ["  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
             for row in [header, tuple("-" * w for w in widths), *body]]
    lines.append("vs pika: publish and drain are speeds relative to plain pika (higher is better); import, "
                 "latency and memory are costs relative to plain pika (lower is better); canvas figures "
                 "are compared with Celery only.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer messages and rounds (~2-3 minutes)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--no-comparisons", action="store_true", help="skip Celery and Dramatiq")
    parser.add_argument("--out", default=str(RESULTS / "latest.json"), help="where to write the JSON")
    parser.add_argument("--plot", action="store_true", help="also draw docs/performance.png")
    parser.add_argument("--table", metavar="JSON", help="only print the table of an earlier run")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    RESULTS.mkdir(exist_ok=True)
    results = run(args)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(table(results))
    print(f"\n{args.out} written ({results['meta']['duration_s']:.0f} s)")
    if args.plot:
        import plot

        print(plot.main([args.out]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
