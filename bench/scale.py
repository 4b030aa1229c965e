"""Scaling out: the same stages in 1 process and in N torchrun processes (gloo on CPU, nccl on
a GPU machine), and the task builder's memory per million ratings; prints tables, writes JSON.

    .venv/bin/python bench/scale.py [--procs 2] [--ml100k PATH] [--ml1m PATH] [--prompts 64]
        [--epochs 2] [--adapter-prompts 64] [--store-rows 2000000] [--json scale.json]

Stages, each timed on every rank between barriers (rank 0 reports):
- CRM training: DCNv2 (the demo profile's settings) on ML-100k for --epochs epochs under
  DistributedDataParallel, each rank on its share of every batch; samples/s over all ranks.
- LLM scoring: SmolLM2-135M, --prompts ML-100k test prompts, each rank its share (float32);
  prompts/s over all ranks.
- LoRA training: SmolLM2-135M, LoRA in the top 4 layers (the demo's CoReLLa), --adapter-prompts
  training prompts x 2 epochs under DDP, each rank its share of every batch of 8.
- Store: --store-rows per-sample rows into a run's DuckDB file: from the frame (1 process) or
  as every rank's Parquet part merged by rank 0 (N processes).
Memory: peak resident memory of loading + build_task (the demo task) in a fresh process, on
ML-100k (0.1M ratings) and ML-1M (1M ratings), per million ratings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"


def worker(args: argparse.Namespace) -> None:
    """One rank (or the single process): every stage, timings to args.worker_out."""
    import numpy as np
    import pandas as pd
    import torch
    import torch.distributed as dist

    from engine import distributed
    from engine.data.movielens import load_ml100k
    from engine.data.task import build_task
    from engine.models import build_crm, crm_config
    from engine.models.llm import LLM, LLMConfig
    from engine.models.trainer import TaskTensors, TrainConfig, fit
    from engine.profiles import PROFILES

    ranks = distributed.start()

    def barrier() -> None:
        if ranks.active:
            dist.barrier()

    task = build_task(load_ml100k(args.ml100k), PROFILES["demo"].task)
    tensors = TaskTensors(task)
    out = {"world": ranks.world, "threads": torch.get_num_threads()}
    torch.manual_seed(0)
    model = build_crm("dcnv2", task.schema, crm_config("dcnv2", {"embed_dim": 16}))
    train = TrainConfig(**{**PROFILES["demo"].train.__dict__, "max_epochs": args.epochs,
                           "patience": args.epochs})
    barrier()
    t0 = time.perf_counter()
    result = fit(model, task, train, tensors=tensors)
    barrier()
    out["crm_seconds"] = time.perf_counter() - t0
    out["crm_samples_per_s"] = len(task.index("train")) * args.epochs / sum(
        row["seconds"] for row in result.log)
    out["crm_valid_auc"] = result.best_valid_auc
    llm = LLM(LLMConfig(score_dtype="float32"))
    llm.model.float()
    prompts = task.prompts(task.index("test")[:args.prompts])
    llm.score(prompts[:2 * ranks.world])  # warm-up
    barrier()
    t0 = time.perf_counter()
    probs = llm.score(prompts)
    barrier()
    out["llm_seconds"] = time.perf_counter() - t0
    out["llm_prompts_per_s"] = len(prompts) / out["llm_seconds"]
    out["llm_mean_p"] = float(np.mean(probs))
    # LoRA training as the demo's CoReLLa does it (top 4 layers, batches of 8, frozen states
    # computed once per prompt and reused by the second epoch), each rank its share of
    # every batch under DDP
    from engine.models.adapter_training import AdapterTraining, train_adapter

    rows = task.index("train")[:args.adapter_prompts]
    torch.manual_seed(0)  # the LoRA's initial weights (the CRM's dropout drew other numbers)
    tuned = LLM(LLMConfig(score_dtype="float32"))
    tuned.model.float()
    tuned.add_lora(dropout=0.0, top_layers=4)
    seqs = tuned.tokenize(task.prompts(rows))
    barrier()
    t0 = time.perf_counter()
    losses = train_adapter(tuned, seqs, task.labels[rows], AdapterTraining(
        lr=2e-3, batch_size=8, epochs=2, top_layers=4))
    barrier()
    out["adapter_seconds"] = time.perf_counter() - t0
    out["adapter_prompts_per_s"] = 2 * len(rows) / out["adapter_seconds"]
    out["adapter_last_loss"] = float(np.mean(losses[-len(losses) // 2:]))
    # the store's per-sample rows: one process writes the frame into DuckDB; N ranks each
    # write their share as a Parquet part and rank 0 merges them
    from engine.store import RunWriter, write_part

    n = args.store_rows
    frame = pd.DataFrame({"sample_id": np.arange(n, dtype=np.int64), "method": "m",
                          "prob": np.random.default_rng(0).random(n)})
    folder = Path(args.worker_out).parent / "store"
    writer = RunWriter(folder, "scale") if ranks.main else None
    barrier()
    t0 = time.perf_counter()
    if ranks.active:
        write_part(folder, "scale", "0000-predictions", frame, ranks.rank, ranks.world)
        barrier()
        if writer is not None:
            writer.merge_parts("predictions", "0000-predictions", ranks.world)
    else:
        writer.put("predictions", frame)
    if writer is not None:
        out["store_seconds"] = time.perf_counter() - t0
        out["store_rows"] = int(writer.con.execute(
            "SELECT count(*) FROM predictions").fetchall()[0][0])
        writer.abort()
    if ranks.main:
        Path(args.worker_out).write_text(json.dumps(out))
    distributed.stop()


def memory_child(name: str, path: str) -> None:
    """Peak RSS of reading one dataset and building its demo task (a fresh process)."""
    from engine.data.movielens import load_ml1m, load_ml100k
    from engine.data.task import build_task
    from engine.profiles import PROFILES

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    dataset = load_ml1m(path) if name == "ml-1m" else load_ml100k(path)
    task = build_task(dataset, PROFILES["demo"].task)
    print(json.dumps({"ratings": len(dataset.interactions), "samples": len(task),
                      "seconds": time.perf_counter() - t0,
                      "rss_before_mb": before / 1024,
                      "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_stages(procs: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "out.json"
        common = [str(Path(__file__).resolve()), "--worker", "--worker-out", str(target),
                  "--ml100k", args.ml100k, "--prompts", str(args.prompts),
                  "--epochs", str(args.epochs), "--adapter-prompts", str(args.adapter_prompts),
                  "--store-rows", str(args.store_rows)]
        command = ([sys.executable, *common] if procs == 1 else
                   [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                    str(procs), "--local-ranks-filter", "0", *common])
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                       env={**os.environ, "TQDM_DISABLE": "1"})
        return json.loads(target.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--ml100k", default=str(SHARED / "ml-100k"))
    parser.add_argument("--ml1m", default=str(SHARED / "ml-1m"))
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--adapter-prompts", type=int, default=64)
    parser.add_argument("--store-rows", type=int, default=2_000_000)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.memory_child:
        return memory_child(*args.memory_child)

    import torch

    device = "GPU: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else (
        f"CPU, {os.cpu_count()} cores, gloo")
    rows = {p: run_stages(p, args) for p in (1, args.procs)}
    one, many = rows[1], rows[args.procs]
    print(f"\n1 vs {args.procs} processes ({device}); ML-100k, demo profile settings\n")
    print(f"| stage | 1 process | {args.procs} processes | speed-up | check |")
    print("|---|---:|---:|---:|---|")
    print(f"| DCNv2 training, {args.epochs} epochs (samples/s) | "
          f"{one['crm_samples_per_s']:,.0f} | {many['crm_samples_per_s']:,.0f} | "
          f"{many['crm_samples_per_s'] / one['crm_samples_per_s']:.2f}x | valid AUC "
          f"{one['crm_valid_auc']:.4f} vs {many['crm_valid_auc']:.4f} |")
    print(f"| LLM scoring, {args.prompts} prompts (prompts/s) | "
          f"{one['llm_prompts_per_s']:.2f} | {many['llm_prompts_per_s']:.2f} | "
          f"{many['llm_prompts_per_s'] / one['llm_prompts_per_s']:.2f}x | mean P(yes) "
          f"{one['llm_mean_p']:.6f} vs {many['llm_mean_p']:.6f} |")
    print(f"| LoRA training, {args.adapter_prompts} prompts x 2 epochs (prompts/s) | "
          f"{one['adapter_prompts_per_s']:.2f} | {many['adapter_prompts_per_s']:.2f} | "
          f"{many['adapter_prompts_per_s'] / one['adapter_prompts_per_s']:.2f}x | last epoch's "
          f"loss {one['adapter_last_loss']:.4f} vs {many['adapter_last_loss']:.4f} |")
    print(f"| per-sample rows into the store (rows/s) | "
          f"{one['store_rows'] / one['store_seconds']:,.0f} | "
          f"{many['store_rows'] / many['store_seconds']:,.0f} | "
          f"{one['store_seconds'] / many['store_seconds']:.2f}x | {one['store_rows']:,} vs "
          f"{many['store_rows']:,} rows (1: DuckDB from the frame; N: Parquet parts merged) |")
    print(f"\n(threads per process: {one['threads']} vs {many['threads']})")
    memory = []
    for name, path in (("ml-100k", args.ml100k), ("ml-1m", args.ml1m)):
        if not Path(path).is_dir():
            continue
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()),
                               "--memory-child", name, path], check=True, cwd=ROOT,
                              capture_output=True, text=True)
        memory.append({"dataset": name, **json.loads(done.stdout.strip().splitlines()[-1])})
    print("\ntask builder memory (load + build_task, demo task, fresh process)\n")
    print("| dataset | ratings | samples | seconds | peak RSS (MB) | over the interpreter "
          "and imports (MB) | per million ratings (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m in memory:
        added = m["rss_peak_mb"] - m["rss_before_mb"]
        print(f"| {m['dataset']} | {m['ratings']:,} | {m['samples']:,} | {m['seconds']:.1f} | "
              f"{m['rss_peak_mb']:,.0f} | {added:,.0f} | {added / m['ratings'] * 1e6:,.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"stages": rows, "memory": memory}, indent=2))


if __name__ == "__main__":
    main()
