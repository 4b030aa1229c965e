"""How a run's time grows with the data: the pipeline per stage on growing user subsets.

    .venv/bin/python bench/growth.py [--ml100k PATH] [--ml1m PATH] [--users 500,1000,2000,0]
                                     [--methods dcnv2,deepfm,din] [--no-maps] [--json PATH]

Runs the demo profile's CRMs (and maps without the LLM space) end to end through
engine.pipeline on ML-100k and on the ML-1M subset cut to the first N users of a seeded
shuffle (0 = all), each into a throw-away store, and times every stage. Then fits, per stage,
time = a * samples^b by least squares on log-log (b ~ 1: linear) over the ML-1M sizes, and
prints both tables. CoReLLa's LLM stages are not swept: their cost is set by the profile's
prompt counts (stage subsets and analysed samples), not by the data size; the demo run's
stage table gives them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.pipeline import RunRequest, run  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def one_run(dataset: str, path: str, users: int, methods: tuple[str, ...], maps: bool) -> dict:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        outcome = run(RunRequest(dataset=dataset, path=path, out=out, run_id="growth",
                                 methods=methods, maps=maps, llm_map=False,
                                 task_options={"max_users": users} if users else {}),
                      log=lambda _: None)
        total = time.perf_counter() - t0
    stages = {name: seconds for name, seconds, _ in outcome.stages if "/" not in name}
    return {"dataset": dataset, "users": int(outcome.task.samples["user"].nunique()),
            "samples": len(outcome.task), "items": int(outcome.task.samples["item"].nunique()),
            "stages": stages, "total": total}


def fit_power(sizes: list[float], seconds: list[float]) -> tuple[float, float]:
    """(a, b) of seconds = a * size^b, least squares in log-log."""
    b, log_a = np.polyfit(np.log(sizes), np.log(np.maximum(seconds, 1e-3)), 1)
    return float(np.exp(log_a)), float(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ml100k", default=str(SHARED / "ml-100k"))
    parser.add_argument("--ml1m", default=str(SHARED / "ml-1m"))
    parser.add_argument("--users", default="500,1000,2000,0",
                        help="ML-1M user subset sizes (0 = all)")
    parser.add_argument("--methods", default="dcnv2,deepfm,din")
    parser.add_argument("--no-maps", action="store_true")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "growth.json"))
    args = parser.parse_args()
    methods = tuple(args.methods.split(","))
    rows = []
    if Path(args.ml100k).exists():
        rows.append(one_run("ml-100k", args.ml100k, 0, methods, not args.no_maps))
        print(f"ml-100k: {rows[-1]['total']:.1f}s", file=sys.stderr)
    if Path(args.ml1m).exists():
        for users in [int(u) for u in args.users.split(",")]:
            rows.append(one_run("ml-1m", args.ml1m, users, methods, not args.no_maps))
            print(f"ml-1m {users or 'all'} users: {rows[-1]['total']:.1f}s", file=sys.stderr)
    stages = list(dict.fromkeys(s for r in rows for s in r["stages"]))
    print("\n| dataset | users | samples | items | " + " | ".join(stages) + " | total s |")
    print("|---|---:|---:|---:|" + "---:|" * (len(stages) + 1))
    for r in rows:
        cells = " | ".join(f"{r['stages'].get(s, 0):.1f}" for s in stages)
        print(f"| {r['dataset']} | {r['users']:,} | {r['samples']:,} | {r['items']:,} | "
              f"{cells} | {r['total']:.1f} |")
    sweep = [r for r in rows if r["dataset"] == "ml-1m"]
    fits = {}
    if len(sweep) >= 2:
        sizes = [r["samples"] for r in sweep]
        print("\n| stage | time = a x samples^b: b | a | predicted s at 1M samples |")
        print("|---|---:|---:|---:|")
        for stage in [*stages, "total"]:
            seconds = [r["total"] if stage == "total" else r["stages"].get(stage, 0.0)
                       for r in sweep]
            a, b = fit_power(sizes, seconds)
            fits[stage] = {"a": a, "b": b}
            print(f"| {stage} | {b:.2f} | {a:.3g} | {a * 1e6 ** b:.0f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"runs": rows, "fits": fits}, indent=2))
    print(f"\nwrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
