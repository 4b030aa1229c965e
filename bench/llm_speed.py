"""LLM throughput: scoring (the naive transformers loop vs Duet's scorer), S-LLMR's shared
prefix, generation, LoRA adapter training (today's full-LoRA path vs the top-layers path),
CoCo's training step (soft prompts before the history, the paper's order, against after a
cached history, ours) and the top layer at the last token only against the whole top layer
(`top`); prints tables.

    .venv/bin/python bench/llm_speed.py [--prompts 64] [--ml100k PATH]
        [--sections scoring,prefix,generation,training,coco,top] [--train-prompts 64]

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

# LLM-CF style: reason about the user first, then answer
COT_SUFFIX = ("Think step by step about what this user likes and whether the target item fits, "
              "then answer yes or no. Reasoning:")


def timed(fn, *args) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--ml100k", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cot-tokens", type=int, default=64,
                        help="new tokens per prompt for the chain-of-thought generation")
    parser.add_argument("--prefix-users", type=int, default=8,
                        help="users whose 16 candidates are scored after one shared prefix")
    parser.add_argument("--sections", default="scoring,prefix,generation,training")
    parser.add_argument("--train-prompts", type=int, default=64,
                        help="real training prompts each adapter-training variant learns from")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    path = args.ml100k if Path(args.ml100k).is_dir() else None
    task = build_task(load_ml100k(path))
    if "training" in sections:
        adapter_training(args.ml100k if path else "", args.train_prompts)
    if "coco" in sections:
        coco_step(task)
    if "top" in sections:
        top_layer(task, args.prompts)
    if not sections & {"scoring", "prefix", "generation"}:
        return
    prompts = task.prompts(task.index("test")[: args.prompts])
    llm = LLM(LLMConfig(batch_size=args.batch_size, score_dtype="bfloat16"))
    tokens = np.mean([len(s) for s in llm.tokenize(prompts)])
    llm.score(prompts[:4])  # warm-up
    if "scoring" not in sections:
        return after_scoring(llm, task, prompts, args, sections)
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
    after_scoring(llm, task, prompts, args, sections)


def after_scoring(llm, task, prompts: list[str], args, sections: set[str]) -> None:
    if "prefix" in sections:
        shared_prefix(llm, task, args.prefix_users, args.batch_size)
    if "generation" not in sections:
        return
    print("\n| generation (greedy, bf16, batch 8, chat template) | new tokens | seconds | "
          "tokens/s | example |")
    print("|---|---:|---:|---:|---|")
    for name, suffix, limit in (("yes/no answer", "Answer:", 16),
                                ("chain of thought", COT_SUFFIX, args.cot_tokens)):
        chats = [llm.tokenizer.apply_chat_template(
            [{"role": "user", "content": p.removesuffix("Answer:") + suffix}],
            add_generation_prompt=True, tokenize=False) for p in prompts[:8]]
        new_tokens, secs, text = generate(llm, chats, limit)
        example = text.replace("|", "/").replace("\n", " ")[:80]
        print(f"| {name} (up to {limit}) | {new_tokens} | {secs:.1f} | "
              f"{new_tokens / secs:.1f} | {example} |")


def generate(llm, texts: list[str], limit: int) -> tuple[int, float, str]:
    """Greedy generation, left padded; returns real new tokens (pads and what follows EOS
    excluded), seconds, and the first answer."""
    import torch

    llm.tokenizer.padding_side = "left"
    enc = llm.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    llm.tokenizer.padding_side = "right"
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = llm.model.generate(**enc, max_new_tokens=limit, do_sample=False,
                                 pad_token_id=llm.tokenizer.pad_token_id)
    secs = time.perf_counter() - t0
    new = out[:, enc.input_ids.shape[1]:]
    eos = llm.tokenizer.eos_token_id
    counts = [int((row != eos).cumprod(0).sum()) + int((row == eos).any()) for row in new]
    return sum(counts), secs, llm.tokenizer.decode(new[0], skip_special_tokens=True).strip()

def shared_prefix(llm, task, users: int, batch_size: int, candidates: int = 16,
                  dtypes: tuple[str, ...] = ("float32",)) -> None:
    """S-LLMR's teacher: one anchor's prompt with many target items. Full prompts through
    score() against LLM.score_suffixes (the prefix once, its KV cache reused)."""
    rng = np.random.default_rng(0)
    anchors = rng.choice(task.index("train"), size=users, replace=False)
    items = rng.choice(np.arange(1, len(task.items) + 1), size=(users, candidates))
    groups = [[task.prompt_parts(int(a), int(i)) for i in row] for a, row in zip(anchors, items)]
    full = [p + s for group in groups for p, s in group]
    for dtype in dtypes:
        llm.model.to(getattr(__import__("torch"), dtype))
        llm.score(full[:4])  # warm-up
        t_full, p_full = timed(llm.score, full)
        t0 = time.perf_counter()
        p_shared = np.concatenate([llm.score_suffixes(g[0][0], [s for _, s in g], batch_size)
                                   for g in groups])
        t_shared = time.perf_counter() - t0
        prefix = np.mean([len(llm.tokenize([g[0][0]])[0]) for g in groups])
        suffix = np.mean([len(llm.tokenize([s])[0]) for g in groups for _, s in g])
        print(f"\n{len(full)} prompts ({users} users x {candidates} candidates; prefix "
              f"{prefix:.0f} tokens, suffix {suffix:.0f}), {dtype}\n")
        print("| scorer | prompts/s | speed-up | max abs diff |")
        print("|---|---:|---:|---:|")
        print(f"| full prompts, batched | {len(full) / t_full:.2f} | 1.00x | 0 |")
        print(f"| shared prefix (score_suffixes) | {len(full) / t_shared:.2f} | "
              f"{t_full / t_shared:.2f}x | {np.abs(p_full - p_shared).max():.2e} |")



# (name, AdapterTraining fields): today's path first, then what the top-layers path adds
TRAINING_VARIANTS = [
    ("today: LoRA in all 30 layers, random batches", {"length_sorted": False}),
    ("all layers, length-sorted batches", {}),
    ("top 8 layers, frozen 22 without autograd", {"top_layers": 8}),
    ("top 4 layers", {"top_layers": 4}),
    ("top 2 layers", {"top_layers": 2}),
    ("top 4 layers, 4 epochs, frozen states computed once", {"top_layers": 4, "epochs": 4}),
]


def coco_step(task, windows: int = 8, steps: int = 3, appended: int = 8) -> None:
    """One CoCo training step over a batch of user windows: `appended` soft tokens (shared +
    selected prompts) with the user's 5-item history, forward and backward through the
    frozen LLM into the soft tokens. Paper's order: [prompts; history], the whole sequence
    every step. Ours: [history; prompts], the history's pass cached once per window."""
    import torch

    from engine.methods.coco import CoCo, CoCoConfig

    llm = LLM(LLMConfig(score_dtype="float32"))
    for p in llm.model.parameters():
        p.requires_grad_(False)
    method = CoCo(config=CoCoConfig())
    method.task_ = task
    rows = task.index("train")[::997][:windows]
    texts = [method.history_text(int(r)) for r in rows]
    seqs = llm.tokenize(texts)
    torch.manual_seed(0)
    soft = torch.randn(windows, appended, llm.hidden_size, requires_grad=True)
    t0 = time.perf_counter()
    prefixes = llm.prefix_states(texts)
    prefix_s = time.perf_counter() - t0
    embed = llm._backbone().embed_tokens

    def paper() -> None:
        longest = max(len(q) for q in seqs)
        ids = torch.zeros((windows, longest), dtype=torch.long)
        mask = torch.zeros((windows, appended + longest), dtype=torch.long)
        for i, q in enumerate(seqs):
            ids[i, :len(q)] = torch.tensor(q)
            mask[i, :appended + len(q)] = 1
        out = llm.forward_embeds(torch.cat([soft, embed(ids)], 1), mask)
        out.sum().backward()

    def ours() -> None:
        out = llm.forward_embeds(soft, torch.ones((windows, appended)), prefixes)
        out.sum().backward()

    rows_out = []
    for name, step in (("paper: [prompts; history], whole sequence", paper),
                       ("ours: [history; prompts], history cached", ours)):
        step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        rows_out.append((name, (time.perf_counter() - t0) / steps))
    tokens = np.mean([len(q) for q in seqs])
    print(f"\nCoCo training step: {windows} windows x ({tokens:.0f} history tokens + "
          f"{appended} soft tokens), forward + backward into the soft tokens, SmolLM2-135M "
          f"float32\n")
    print("| step | seconds per step | speed-up |")
    print("|---|---:|---:|")
    for name, secs in rows_out:
        print(f"| {name} | {secs:.3f} | {rows_out[0][1] / secs:.2f}x |")
    print(f"| (ours, once per window: the history's pass) | {prefix_s:.3f} | |")


def top_layer(task, n: int, top: int = 4, batch: int = 8) -> None:
    """The decoder's top layer run whole (transformers' layer, every position) against at
    each prompt's last token only (engine.models.llm._top_layer_at), on n real test prompts,
    float32, batch 8: the whole LLM, the top `top` layers from cached frozen states (CoRA's
    and CoReLLa's scoring), and those layers forward + backward with CoRA's generated
    weights active (CoRA's training step)."""
    import torch

    from engine.models.collab_weights import CollabConfig, CollaborativeWeights

    llm = LLM(LLMConfig(score_dtype="float32", batch_size=batch))
    for p in llm.model.parameters():
        p.requires_grad_(False)
    llm.model.float().eval()
    prompts = task.prompts(task.index("test")[:n])
    split = llm.n_layers - top
    lower: dict = {}
    llm.fill_lower(prompts, split, lower)
    torch.manual_seed(0)
    weights = CollaborativeWeights(llm._backbone(), 16, CollabConfig(top_layers=top))
    with torch.no_grad():
        for p in weights.P.values():
            p.normal_(std=0.02)
    pairs = torch.randn(len(prompts), 2, 16)

    def train_pass() -> np.ndarray:
        out = []
        for start in range(0, len(prompts), batch):
            part = slice(start, start + batch)
            a = weights.generator(pairs[part, 0], pairs[part, 1])
            with weights.active(a):
                logit = llm.logit_from_lower([lower[q] for q in prompts[part]], split)[0]
            weights.zero_grad(set_to_none=True)
            logit.sum().backward()
            out.append(torch.sigmoid(logit.detach()).double().numpy())
        return np.concatenate(out)

    tokens = np.mean([len(s) for s in llm.tokenize(prompts)])
    print(f"\ntop layer at the last token only: {len(prompts)} ML-100k test prompts, mean "
          f"{tokens:.0f} tokens, SmolLM2-135M ({llm.n_layers} layers), float32, batch "
          f"{batch}\n")
    print("| pass | whole top layer (s) | last token only (s) | speed-up | max abs diff |")
    print("|---|---:|---:|---:|---:|")
    for name, run in (("whole LLM, scoring", lambda: llm.score(prompts)),
                      (f"top {top} layers from frozen states, scoring",
                       lambda: llm.score_above(prompts, split, lower)[0]),
                      (f"top {top} layers, generated weights, forward + backward",
                       train_pass)):
        timings = []
        for flag in (False, True):
            llm.last_token_top = flag
            run()  # warm-up
            timings.append(timed(run))
        (t_whole, p_whole), (t_fast, p_fast) = timings
        print(f"| {name} | {t_whole:.1f} | {t_fast:.1f} | {t_whole / t_fast:.2f}x | "
              f"{np.abs(p_whole - p_fast).max():.1e} |", flush=True)


def adapter_training(ml100k: str, n: int) -> None:
    """Training prompts/s (prompts x epochs per second) and peak memory per variant, each in
    its own process (peak RSS is per process), on the same n real training prompts, LoRA
    r=8 alpha=16 on q/k/v/o, batch 8, float32."""
    import multiprocessing as mp

    context = mp.get_context("spawn")
    print(f"\nadapter training: {n} ML-100k training prompts (template A, 10 history items), "
          "SmolLM2-135M, LoRA r=8 on q/k/v/o, batch 8, float32\n")
    print("| path | trainable params | prompts/s | speed-up | peak RSS (MB) | loss first -> last "
          "epoch |")
    print("|---|---:|---:|---:|---:|---|")
    base = None
    for name, fields in TRAINING_VARIANTS:
        with context.Pool(1) as pool:
            row = pool.apply(_train_variant, (ml100k, n, fields))
        base = base or row["rate"]
        print(f"| {name} | {row['params']:,} | {row['rate']:.2f} | {row['rate'] / base:.2f}x | "
              f"{row['rss_mb']:,.0f} | {row['first']:.3f} -> {row['last']:.3f} |", flush=True)


def _train_variant(ml100k: str, n: int, fields: dict) -> dict:
    import resource

    import torch

    from engine.models.adapter_training import AdapterTraining, train_adapter

    task = build_task(load_ml100k(ml100k or None))
    rows = np.random.default_rng(0).choice(task.index("train"), size=n, replace=False)
    cfg = AdapterTraining(**fields)
    torch.manual_seed(0)
    llm = LLM(LLMConfig(score_dtype="float32"))
    params = llm.add_lora(r=8, alpha=16, top_layers=cfg.top_layers)
    seqs = llm.tokenize(task.prompts(rows))
    t0 = time.perf_counter()
    losses = train_adapter(llm, seqs, task.labels[rows], cfg)
    seconds = time.perf_counter() - t0
    per_epoch = len(losses) // cfg.epochs
    return {"params": params, "rate": n * cfg.epochs / seconds,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "first": float(np.mean(losses[:per_epoch])),
            "last": float(np.mean(losses[-per_epoch:]))}


if __name__ == "__main__":
    main()
