"""Embedding-map build time per space (the work `engine run` does in its maps stage):
encoder over item text, the LLM's last-token states, the CRM item table; UMAP each; k-NN
agreement. Prints a markdown table.

    .venv/bin/python bench/maps_speed.py [--ml100k PATH] [--ml1m PATH] [--no-llm]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.data.movielens import load_ml1m, load_ml100k  # noqa: E402
from engine.data.task import build_task  # noqa: E402
from engine.maps import MapConfig, knn_agreement, map_items, umap_2d  # noqa: E402
from engine.models.encoder import Encoder  # noqa: E402
from engine.models.llm import LLM  # noqa: E402


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ml100k", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--ml1m", default=str(ROOT.parent / "shared" / "data" / "ml-1m"))
    parser.add_argument("--no-llm", action="store_true")
    args = parser.parse_args()
    config = MapConfig()
    umap_2d(np.random.default_rng(0).normal(size=(50, 8)), MapConfig(n_neighbors=5))  # JIT
    encoder = Encoder()
    llm = None if args.no_llm else LLM()
    datasets = [("ml-100k", lambda: load_ml100k(args.ml100k if Path(args.ml100k).is_dir()
                                                else None))]
    if Path(args.ml1m).is_dir():
        datasets.append(("ml-1m subset", lambda: load_ml1m(args.ml1m)))
    print("| dataset | items | encoder s | LLM states s | UMAP semantic s | UMAP llm s | "
          "UMAP 16-d CRM table s | k-NN agreement s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, load in datasets:
        items = map_items(build_task(load()), config)
        texts = items["text"].tolist()
        semantic, t_enc = timed(encoder.encode, texts)
        states, t_llm = (None, float("nan")) if llm is None else timed(llm.embed, texts)
        _, u_sem = timed(umap_2d, semantic, config)
        u_llm = float("nan") if states is None else timed(umap_2d, states, config)[1]
        behavioural = np.random.default_rng(0).normal(size=(len(items), 16))
        _, u_crm = timed(umap_2d, behavioural, config)
        _, t_knn = timed(knn_agreement, semantic, behavioural, config.knn)
        print(f"| {name} | {len(items):,} | {t_enc:.1f} | {t_llm:.1f} | {u_sem:.1f} | "
              f"{u_llm:.1f} | {u_crm:.1f} | {t_knn:.2f} |")


if __name__ == "__main__":
    main()
