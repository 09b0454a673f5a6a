"""Draw ``docs/performance.png`` from a results file (``bench/results/latest.json`` by default).

    python bench/plot.py [results.json] [--out docs/performance.png]

One panel per benchmark, each bar the implementation's figure relative to plain pika in the same run
(speed for publish and drain: higher is better; cost for import, latency and memory: lower is better);
the canvas panels, which have no pika reference, are relative to Celery.
Needs matplotlib; without it a text bar chart is printed instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "docs" / "performance.png"
COLOURS = {"pika": "#9e9e9e", "minicelery": "#2e7d32", "minicelery rpc://": "#66bb6a", "celery": "#c62828",
           "dramatiq": "#1565c0", "pika (ack each)": "#9e9e9e", "pika (ack x4)": "#bdbdbd"}


def panels(results: dict[str, Any]) -> list[tuple[str, dict[str, float], str, float | None]]:
    """(title, {implementation: ratio}, direction, target line) for each benchmark present."""
    out = []
    if "publish" in results:
        out.append(("publish 10k noop.delay()\nspeed vs pika (higher is better)",
                    results["publish"]["ratio_vs_pika"], "up", 0.90))
    if "import" in results:
        ms = results["import"]["ms"]
        out.append(("import + Celery('x')\ncost vs import pika (lower is better)",
                    results["import"]["ratio_vs_pika"], "down",
                    60 / ms["pika"] if ms.get("pika") else None))
    if "drain" in results and results["drain"]["ratio_vs_pika"]:
        out.append(("drain 10k noop tasks\nspeed vs pika acking each (higher is better)",
                    results["drain"]["ratio_vs_pika"], "up", 0.65))
    if results.get("drain_short", {}).get("speed_vs_celery"):
        short = results["drain_short"]
        out.append((f"drain {short['count'] / 1000:g}k tasks busy {short['work_s'] * 1000:g} ms\n"
                    "speed vs Celery (higher is better)", short["speed_vs_celery"], "up", None))
    if "roundtrip" in results:
        rt = results["roundtrip"]
        if rt["latency_ratio_vs_pika"]:
            ratios = rt["latency_ratio_vs_pika"]
            out.append(("round trip add.delay(1, 2).get()\nlatency vs pika RPC (lower is better)",
                        ratios, "down", ratios["celery"] / 2 if "celery" in ratios else None))
        if rt["memory_ratio_vs_pika"]:
            out.append(("worker RSS, main + children (-c 2)\nvs one pika process (lower is better)",
                        rt["memory_ratio_vs_pika"], "down", None))
    canvas = results.get("canvas", {})
    if canvas.get("chain_ratio_vs_celery"):
        out.append((f"chain of {canvas['steps']} add .delay().get()\nlatency vs Celery (lower is better)",
                    canvas["chain_ratio_vs_celery"], "down", 0.5))
    if canvas.get("group_ratio_vs_celery"):
        out.append((f"group of {canvas['size']:,} add until get()\ntime vs Celery (lower is better)",
                    canvas["group_ratio_vs_celery"], "down", 0.5))
    return out


def draw(results: dict[str, Any], out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = panels(results)
    columns = min(3, len(chosen))
    rows = (len(chosen) + columns - 1) // columns
    fig, grid = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.0 * rows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(chosen):]:
        ax.axis("off")
    for ax, (title, ratios, _direction, target) in zip(axes, chosen, strict=False):
        labels = list(ratios)
        values = [ratios[label] for label in labels]
        bars = ax.bar(range(len(labels)), values, color=[COLOURS.get(label, "#757575") for label in labels])
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([label.replace(" (", "\n(").replace(" rpc", "\nrpc") for label in labels],
                           fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.axhline(1.0, color="black", linewidth=0.8)
        if target is not None:
            ax.axhline(target, color="#2e7d32", linestyle="--", linewidth=0.8)
            ax.text(len(labels) - 0.5, target, " target", va="bottom", ha="right", fontsize=7,
                    color="#2e7d32")
        for bar, value in zip(bars, values, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.2f}x", ha="center", va="bottom",
                    fontsize=7)
        ax.set_ylim(0, max(values + [1.0]) * 1.18)
    meta = results.get("meta", {})
    fig.suptitle(f"minicelery vs plain pika (1.00x), Celery and Dramatiq, measured in the same run\n"
                 f"({meta.get('date', '?')}, {meta.get('mode', '?')} run, {meta.get('cpus', '?')} CPUs; "
                 "dashed: target)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return f"{out} written"


def text_chart(results: dict[str, Any], width: int = 40) -> str:
    """The same panels as text bars (when matplotlib is not installed)."""
    lines = []
    for title, ratios, _direction, _target in panels(results):
        lines.append(title.replace("\n", " — "))
        top = max(list(ratios.values()) + [1.0])
        for label, value in ratios.items():
            lines.append(f"  {label:<18} {'#' * max(1, round(value / top * width)):<{width}} {value:.2f}x")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default=str(HERE / "results" / "latest.json"))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--text", action="store_true", help="print the text chart even with matplotlib")
    args = parser.parse_args(argv)
    results = json.loads(Path(args.results).read_text())
    if not args.text:
        try:
            return draw(results, Path(args.out))
        except ImportError:
            pass
    return text_chart(results)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
