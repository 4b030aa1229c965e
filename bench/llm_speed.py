"""LLM scoring throughput: the naive transformers loop vs Duet's scorer; prints a table.

    .venv/bin/python bench/llm_speed.py [--prompts 64] [--ml100k PATH]

Prompts are real ML-100k test prompts (template A, 10 history items). The naive baseline is
what a user would write: one prompt at a time, `model(**enc).logits[0, -1]`, float32. Ours
tokenises once, sorts by length, batches with right padding and reads only the answer rows
of the LM head; then the same in bf16 (the default on CPUs with native bf16). Also reports
how far bf16 moves the probabilities from float32, and greedy generation tokens/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.data.movielens import load_ml100k  # noqa: E402
from engine.data.task import build_task  # noqa: E402
from engine.models.llm import LLM, LLMConfig  # noqa: E402


def timed(fn, *args) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--ml100k", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    path = args.ml100k if Path(args.ml100k).is_dir() else None
    task = build_task(load_ml100k(path))
    prompts = task.prompts(task.index("test")[: args.prompts])
    llm = LLM(LLMConfig(batch_size=args.batch_size, score_dtype="bfloat16"))
    tokens = np.mean([len(s) for s in llm.tokenize(prompts)])
    llm.score(prompts[:4])  # warm-up
    rows = []
    seconds, naive = timed(llm.score_naive, prompts)
    rows.append(("naive loop, float32", seconds, naive))
    seconds, fp32 = timed(llm.score, prompts)
    rows.append((f"batched (size {args.batch_size}), float32", seconds, fp32))
    llm.for_inference()
    llm.score(prompts[:4])
    seconds, bf16 = timed(llm.score, prompts)
    rows.append((f"batched (size {args.batch_size}), bf16", seconds, bf16))
    base = len(prompts) / rows[0][1]
    print(f"\n{len(prompts)} prompts, mean {tokens:.0f} tokens, SmolLM2-135M-Instruct, "
          f"CPU threads: {__import__('torch').get_num_threads()}\n")
    print("| scorer | prompts/s | speed-up | max abs diff vs naive | corr. vs naive |")
    print("|---|---:|---:|---:|---:|")
    for name, secs, probs in rows:
        rate = len(prompts) / secs
        diff = np.abs(probs - naive).max()
        corr = np.corrcoef(probs, naive)[0, 1]
        print(f"| {name} | {rate:.2f} | {rate / base:.2f}x | {diff:.4f} | {corr:.4f} |")
    t0 = time.perf_counter()
    answers = llm.generate(prompts[:8], max_new_tokens=16)
    secs = time.perf_counter() - t0
    new_tokens = sum(len(llm.tokenizer(a).input_ids) for a in answers)
    print(f"\ngeneration (greedy, bf16, batch 8, 16 new tokens): {new_tokens / secs:.1f} "
          "tokens/s")


if __name__ == "__main__":
    main()
