"""Training an LLM's LoRA adapter to answer yes/no clicks, fast on a CPU.

Today's path puts LoRA in every layer and back-propagates through all of them. On two CPU
cores the cheaper path (bench/llm_speed.py, "adapter training") puts LoRA in the top layers
only: the frozen layers below then run without autograd, and once per prompt when training
sees it more than once (their output is the same every epoch), and batches hold prompts of
similar length so little of each batch is padding. `top_layers=0` is the usual full-LoRA
path, unchanged (what a GPU run uses). Under torchrun each rank trains on its share of every
batch under DistributedDataParallel (engine.distributed.data_parallel).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from engine import distributed
from engine.errors import ConfigError
from engine.models.llm import LLM


@dataclass(frozen=True)
class AdapterTraining:
    lr: float = 5e-4
    batch_size: int = 8
    epochs: int = 1
    top_layers: int = 0  # LoRA in the top k layers only (0: every layer, the usual path)
    length_sorted: bool = True  # batches of prompts of similar length (shuffled per epoch)
    cache_mb: int = 4096  # keep the frozen layers' states across epochs up to this size
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.epochs < 1:
            raise ConfigError(f"adapter training needs lr > 0, batch_size >= 1 and epochs "
                              f">= 1, got {self.lr}, {self.batch_size}, {self.epochs}")
        if self.top_layers < 0 or self.cache_mb < 0:
            raise ConfigError(f"top_layers and cache_mb must be >= 0, got {self.top_layers}, "
                              f"{self.cache_mb}")


def batches(lengths: np.ndarray, size: int, epoch: int, seed: int, length_sorted: bool
            ) -> list[np.ndarray]:
    """Positions into the training prompts, one array per batch. Length-sorted: neighbours
    by length (ties broken at random) form a batch, and the batches come in random order."""
    rng = np.random.default_rng(seed + 100 + epoch)
    order = rng.permutation(len(lengths))
    if length_sorted:
        order = order[np.argsort(lengths[order], kind="stable")]
        chunks = [order[i:i + size] for i in range(0, len(order), size)]
        return [chunks[k] for k in rng.permutation(len(chunks))]
    return [order[i:i + size] for i in range(0, len(order), size)]


def train_adapter(llm: LLM, seqs: list[list[int]], labels: np.ndarray, cfg: AdapterTraining,
                  desc: str = "LLM adapter",
                  on_step: Callable[[int, float], None] | None = None,
                  lower: dict[Hashable, torch.Tensor] | None = None,
                  keys: Sequence[Hashable] | None = None) -> list[float]:
    """Train `llm`'s LoRA (added with add_lora(top_layers=cfg.top_layers)) on token ids and
    0/1 labels with BCE on the yes/no answer; returns the loss per step.

    `lower` (key -> frozen layers' states) is a cache the caller may share between trainings
    on the same prompts with the same frozen layers (the learning curve's nested prompt sets,
    CoReLLa's two LLM-alone trainings, CoRA after them); it is filled as prompts are seen and
    always used. `keys` name each of `seqs` in it (default: the index in `seqs`)."""
    if llm.frozen_below != (llm.n_layers - cfg.top_layers if cfg.top_layers else 0):
        raise ConfigError(f"the LLM's LoRA layers do not match top_layers={cfg.top_layers}: "
                          "add_lora(top_layers=...) with the same value")
    targets = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    lengths = np.array([len(s) for s in seqs])
    bytes_per_token = llm.hidden_size * 4
    cache = cfg.top_layers > 0 and (lower is not None or (
        cfg.epochs > 1 and lengths.sum() * bytes_per_token <= cfg.cache_mb * 2**20))
    lower = {} if lower is None else lower
    key_of = list(range(len(seqs))) if keys is None else list(keys)
    if len(key_of) != len(seqs):
        raise ConfigError(f"{len(key_of)} cache keys for {len(seqs)} prompts")
    if cache and distributed.current().active:
        # any rank's share of a later epoch's batch may hold any prompt: the frozen layers
        # run once per prompt across the ranks, and every rank receives every state
        by_key = dict(zip(key_of, seqs))
        distributed.fill_everywhere(
            list(by_key), lower, lambda keys: lower.update(zip(keys, llm.lower_states_sorted(
                [by_key[k] for k in keys], batch_size=cfg.batch_size))), llm.device)
    trainable = [p for p in llm.model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=cfg.lr)
    run = distributed.data_parallel(trainable)  # under torchrun: DDP, a share of each batch

    def batch_loss(rows: np.ndarray, total: int) -> torch.Tensor:
        if cache:
            names = [key_of[i] for i in rows.tolist()]
            missing = [i for i, k in zip(rows.tolist(), names) if k not in lower]
            if missing:
                lower.update(zip((key_of[i] for i in missing),
                                 llm.lower_states([seqs[i] for i in missing])))
            logit, _ = llm.logit_from_lower([lower[k] for k in names])
        else:
            logit, _ = llm.forward_ids([seqs[i] for i in rows.tolist()])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logit, targets[torch.from_numpy(rows)])
        return loss * distributed.share_weight(len(rows), total)

    llm.model.train()
    losses = []
    try:
        for epoch in range(cfg.epochs):
            for rows in tqdm(batches(lengths, cfg.batch_size, epoch, cfg.seed, cfg.length_sorted),
                             desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                             leave=False, disable=not distributed.current().main):
                mine = distributed.batch_share(rows)
                if mine is None:
                    continue
                loss = run(batch_loss, mine, len(rows))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                # the batch's mean loss (each rank's share weighted back)
                losses.append(distributed.all_mean(
                    float(loss.detach()) / distributed.share_weight(len(mine), len(rows)),
                    len(mine)))
                if on_step is not None:
                    on_step(len(losses), losses[-1])
    finally:
        llm.model.eval()
    return losses
