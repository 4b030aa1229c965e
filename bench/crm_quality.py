"""CRM quality and speed under the default protocol: prints a markdown table.

    .venv/bin/python bench/crm_quality.py [--ml100k PATH] [--ml1m PATH] [--models dcnv2,deepfm]

Reports per dataset: task build seconds, and per model test AUC/LogLoss/ACC/UAUC, best epoch,
training samples/s (train epochs only) and inference samples/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.data.movielens import load_ml1m, load_ml100k  # noqa: E402
from engine.data.task import build_task  # noqa: E402
from engine.methods import CRMMethod  # noqa: E402
from engine.metrics import binary_metrics  # noqa: E402
from engine.models.trainer import TrainConfig  # noqa: E402
from engine.profiles import PROFILES  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def bench_dataset(name: str, dataset, models: list[str], seed: int) -> list[dict]:
    t0 = time.perf_counter()
    task = build_task(dataset, PROFILES["demo"].task)
    build = time.perf_counter() - t0
    rows = []
    test = task.index("test")
    for model in models:
        method = CRMMethod(model, model, {"embed_dim": 16},
                           TrainConfig(**{**PROFILES["demo"].train.__dict__, "seed": seed}))
        method.fit(task)
        result = method.result()
        t0 = time.perf_counter()
        method.predict(test)
        infer = len(test) / (time.perf_counter() - t0)
        m = binary_metrics(task.labels[test], result.probs["test"],
                           task.samples["user"].to_numpy()[test])
        rows.append({"dataset": name, "samples": len(task), "build_s": build, "model": model,
                     **m, "best_epoch": result.config["best_epoch"],
                     "train_sps": result.cost["train_samples_per_s"], "infer_sps": infer})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ml100k", default=str(SHARED / "ml-100k"))
    parser.add_argument("--ml1m", default=str(SHARED / "ml-1m"))
    parser.add_argument("--models", default="dcnv2,deepfm,din")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models = args.models.split(",")
    rows = []
    ml100k = load_ml100k(args.ml100k if Path(args.ml100k).is_dir() else None)
    rows += bench_dataset("ml-100k", ml100k, models, args.seed)
    if Path(args.ml1m).is_dir():
        rows += bench_dataset("ml-1m subset", load_ml1m(args.ml1m), models, args.seed)
    print("\n| dataset | samples | task build s | model | AUC | LogLoss | ACC | UAUC | best epoch "
          "| train samples/s | infer samples/s |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['samples']:,} | {r['build_s']:.2f} | {r['model']} | "
              f"{r['auc']:.4f} | {r['logloss']:.4f} | {r['acc']:.4f} | {r['uauc']:.4f} | "
              f"{r['best_epoch']} | {r['train_sps']:,.0f} | {r['infer_sps']:,.0f} |")


if __name__ == "__main__":
    main()
