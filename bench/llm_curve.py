"""The LLM's learning curve on ML-100k: LLM-alone valid/test AUC and seconds after training its
LoRA adapter on more and more prompts, recency vs retrieved (ReLLa) prompt histories.

    .venv/bin/python bench/llm_curve.py [--sizes 128,512,2048,8192] [--orders recent,similar]
        [--top-layers 4] [--epochs 1] [--ml100k PATH]

Training prompts are nested (the first 128 of one seeded permutation of the training samples
are among the first 512, ...). Evaluation uses the demo's analysed samples (CoReLLa's seeded
200 valid and 500 test samples), never fewer. With LoRA in the top layers only, the frozen
layers' states of the evaluation prompts are the same for every adapter: they are computed
once per prompt order and only the top layers run per adapter.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.data.movielens import load_ml100k  # noqa: E402
from engine.data.task import CTRTask, TaskConfig, build_task  # noqa: E402
from engine.formatting import duration  # noqa: E402
from engine.methods.corella import CoReLLa, CoReLLaConfig  # noqa: E402
from engine.metrics import auc  # noqa: E402
from engine.models.adapter_training import AdapterTraining, train_adapter  # noqa: E402
from engine.models.llm import LLM, LLMConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="128,512,2048,8192")
    parser.add_argument("--orders", default="recent,similar")
    parser.add_argument("--top-layers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", default="5e-4", help="one or more (comma-separated)")
    parser.add_argument("--valid", type=int, default=200)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--ml100k", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    dataset = load_ml100k(args.ml100k if Path(args.ml100k).is_dir() else None)
    vectors = None
    rows = []
    for order in args.orders.split(","):
        task = build_task(dataset, TaskConfig(prompt_history_order=order))
        if order == "similar":
            if vectors is None:
                from engine.models.encoder import Encoder

                vectors = Encoder().encode(task.items["text"].tolist())
            task.use_item_vectors(vectors)
        rows += curve(task, order, sizes, args)
    print(f"\nLLM alone (SmolLM2-135M, LoRA r=8 in the top {args.top_layers} layers, "
          f"{args.epochs} epoch(s)), ML-100k, valid {args.valid} / test {args.test} analysed "
          "samples\n")
    print("| prompt history | lr | training prompts | train seconds | valid AUC | test AUC |")
    print("|---|---:|---:|---:|---:|---:|")
    for order, lr, n, seconds, valid, test in rows:
        print(f"| {order} | {lr:g} | {n:,} | {seconds:,.0f} | {valid:.4f} | {test:.4f} |")


def curve(task: CTRTask, order: str, sizes: list[int], args) -> list[tuple]:
    analysed = CoReLLa("curve", CoReLLaConfig(analyse_valid=args.valid,
                                              analyse_test=args.test))._analysed_rows(task)
    train = np.random.default_rng(0).permutation(task.index("train"))[:max(sizes)]
    torch.manual_seed(0)
    base = LLM(LLMConfig(score_dtype="float32"))
    base.add_lora(r=8, alpha=16, top_layers=args.top_layers)
    t0 = time.perf_counter()
    prompts = {split: task.prompts(rows) for split, rows in analysed.items()}
    split_layer = base.n_layers - args.top_layers
    lower: dict[str, torch.Tensor] = {}  # prompt -> frozen states, shared by every adapter
    for texts in prompts.values():
        base.score_above(texts, split_layer, lower)
    print(f"[{order}] frozen states of {len(lower)} evaluation prompts: "
          f"{duration(time.perf_counter() - t0)}", flush=True)
    out = []
    train_lower: dict[int, torch.Tensor] = {}  # nested sets: each prompt's frozen states once
    for n, lr in ((n, float(lr)) for n in sizes for lr in args.lr.split(",")):
        torch.manual_seed(0)
        llm = LLM(LLMConfig(score_dtype="float32"))
        llm.add_lora(r=8, alpha=16, top_layers=args.top_layers)
        cfg = AdapterTraining(lr=lr, epochs=args.epochs, top_layers=args.top_layers)
        seqs = llm.tokenize(task.prompts(train[:n]))
        steps = args.epochs * -(-n // cfg.batch_size)
        t0 = time.perf_counter()

        def progress(step: int, loss: float, n: int = n, t0: float = t0, steps: int = steps
                     ) -> None:
            if step % 32 == 0 or step == steps:
                spent = time.perf_counter() - t0
                print(f"\n[{order} {n:,}] step {step}/{steps} loss {loss:.3f} "
                      f"{duration(spent)} spent, about {duration(spent / step * (steps - step))}"
                      " left", flush=True)

        train_adapter(llm, seqs, task.labels[train[:n]], cfg, desc=f"{order} {n}",
                      on_step=progress, lower=train_lower)
        seconds = time.perf_counter() - t0
        scores = {split: llm.score_above(texts, split_layer, lower)[0]
                  for split, texts in prompts.items()}
        aucs = [auc(task.labels[analysed[s]], scores[s]) for s in ("valid", "test")]
        print(f"\n[{order} {n:,} lr {lr:g}] trained in {duration(seconds)}: valid AUC "
              f"{aucs[0]:.4f}, test AUC {aucs[1]:.4f}", flush=True)
        out.append((order, lr, n, seconds, *aucs))
    return out


if __name__ == "__main__":
    main()
