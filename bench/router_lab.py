"""Router lab speed: what a slider move and the page's first load cost. Prints markdown.

    .venv/bin/python bench/router_lab.py [--sizes 10000,100000,1000000] [--repeats 20]

Per size of synthetic routed samples: building RouterData (once per method and split),
`metrics_at` (one slider move; median of --repeats thresholds) and `quality_curve` (101
points, once per method and split, cached by the page).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.routing import RouterData, quality_curve  # noqa: E402


def synthetic(n: int, seed: int = 0) -> RouterData:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.float64)
    p_crm = np.clip(0.35 + 0.25 * y + rng.normal(0, 0.18, n), 0.001, 0.999)
    p_llm = np.round(np.clip(0.3 + 0.35 * y + rng.normal(0, 0.2, n), 0, 1), 3)  # ties
    return RouterData(y, p_crm, p_llm)


def bench(n: int, repeats: int) -> dict:
    t0 = time.perf_counter()
    data = synthetic(n)
    build = time.perf_counter() - t0
    data.metrics_at(0.9)  # warm up
    times = []
    for threshold in np.linspace(0.5, 1.0, repeats):
        t0 = time.perf_counter()
        data.metrics_at(float(threshold))
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    quality_curve(data)
    curve = time.perf_counter() - t0
    return {"n": n, "build_ms": 1000 * build, "metrics_ms": 1000 * float(np.median(times)),
            "curve_s": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print("| samples | RouterData build (ms) | metrics_at median (ms) | quality_curve, 101 (s) |")
    print("|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        r = bench(n, args.repeats)
        print(f"| {r['n']:,} | {r['build_ms']:.1f} | {r['metrics_ms']:.2f} | "
              f"{r['curve_s']:.3f} |")


if __name__ == "__main__":
    main()
