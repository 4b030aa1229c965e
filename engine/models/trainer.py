"""One trainer for every CRM: Adam, mini-batches from in-memory tensors, early stopping on
validation AUC, best weights restored. Models stay free of optimiser and device logic.

Under torchrun (engine.distributed) the model trains in DistributedDataParallel: each rank
takes its share of every global batch (same seeded order everywhere), gradients are averaged,
so every rank holds the same weights and reaches the same early-stopping decision on the
full validation split."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from engine import distributed
from engine.data.task import CTRTask
from engine.errors import ConfigError
from engine.metrics import auc, logloss


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    embedding_l2: float = 0.0  # L2 on the embedding rows a batch touches
    max_epochs: int = 10
    patience: int = 2  # epochs without validation-AUC gain before stopping
    eval_batch_size: int = 8192
    seed: int = 0
    threads: int = 0  # 0: all cores

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_epochs < 1 or self.lr <= 0:
            raise ConfigError(f"bad training sizes: batch_size={self.batch_size}, "
                              f"max_epochs={self.max_epochs}, lr={self.lr}")


@dataclass
class TrainResult:
    best_epoch: int
    best_valid_auc: float
    seconds: float
    train_samples_per_s: float
    log: list[dict] = field(default_factory=list)  # one row per epoch


class TaskTensors:
    """The task's arrays as torch tensors, built once (zero-copy from numpy)."""

    def __init__(self, task: CTRTask) -> None:
        self.arrays = {
            "sparse": torch.from_numpy(task.sparse),
            "tags": torch.from_numpy(task.tags),
            "hist_items": torch.from_numpy(task.hist_items),
            "hist_ratings": torch.from_numpy(task.hist_ratings),
            "label": torch.from_numpy(task.labels),
        }

    def batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.index_select(0, rows) for k, v in self.arrays.items()}


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads if threads > 0 else distributed.threads())


class Regulariser(Protocol):
    """An extra term of every training step's objective (S-LLMR's teacher pairs, a KD
    target): called with the model in training mode, it returns a scalar to add. Its own
    parameters (a jointly learned gate) join the optimiser; `epoch_end` adds its numbers to
    the epoch's log row. The trainer runs it under a forked RNG, so a regulariser that adds
    exactly zero leaves training bit for bit as it was."""

    def __call__(self, model: nn.Module) -> torch.Tensor: ...

    def parameters(self) -> list[torch.Tensor]: ...

    def epoch_end(self) -> dict[str, float]: ...


def fit(model: nn.Module, task: CTRTask, config: TrainConfig = TrainConfig(),
        name: str = "model", train_rows: np.ndarray | None = None,
        tensors: TaskTensors | None = None,
        regulariser: Regulariser | None = None) -> TrainResult:
    """Train `model` on the train split (or `train_rows`), early-stopping on valid AUC."""
    set_threads(config.threads)
    torch.manual_seed(config.seed)
    tensors = tensors or TaskTensors(task)
    rows = torch.from_numpy(task.index("train") if train_rows is None else train_rows)
    valid_rows = task.index("valid")
    extra = regulariser.parameters() if regulariser is not None else []
    ranks = distributed.current()
    net = model
    if ranks.active:
        from torch.nn.parallel import DistributedDataParallel

        # static graph: hybrids use parameters outside forward (a regulariser reads the
        # network again) or leave some unused; the used set is the same every step
        net = DistributedDataParallel(model, static_graph=True)
    optimiser = torch.optim.Adam([*model.parameters(), *extra], lr=config.lr,
                                 weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    log: list[dict] = []
    start = time.perf_counter()
    train_seconds = 0.0
    seen = 0
    for epoch in range(1, config.max_epochs + 1):
        t0 = time.perf_counter()
        loss = _train_epoch(net, model, tensors, rows, optimiser, config, generator,
                            desc=f"{name} epoch {epoch}", regulariser=regulariser)
        train_seconds += time.perf_counter() - t0
        seen += len(rows) // ranks.world  # this rank's samples per second
        probs = predict(model, tensors, valid_rows, config.eval_batch_size)
        labels = task.labels[valid_rows]
        row = {"epoch": epoch, "train_loss": loss, "valid_auc": auc(labels, probs),
               "valid_logloss": logloss(labels, probs),
               "seconds": time.perf_counter() - t0}
        if regulariser is not None:
            row.update(regulariser.epoch_end())
        log.append(row)
        if ranks.main:
            tqdm.write(f"  {name} epoch {epoch}: loss {loss:.4f}  valid AUC "
                       f"{row['valid_auc']:.4f}  LogLoss {row['valid_logloss']:.4f}  "
                       f"({row['seconds']:.1f}s)")
        if row["valid_auc"] > best[0]:
            best = (row["valid_auc"], epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= config.patience:
            break
    model.load_state_dict(best[2])
    model.eval()
    return TrainResult(best_epoch=best[1], best_valid_auc=best[0],
                       seconds=time.perf_counter() - start,
                       train_samples_per_s=seen / max(train_seconds, 1e-9), log=log)


def _train_epoch(net: nn.Module, model: nn.Module, tensors: TaskTensors, rows: torch.Tensor,
                 optimiser: torch.optim.Optimizer, config: TrainConfig,
                 generator: torch.Generator, desc: str,
                 regulariser: Regulariser | None = None) -> float:
    """One pass over `rows` in seeded order; `net` is `model` or its DDP wrapper, and each
    rank trains on its share (rank::world) of every global batch."""
    model.train()
    ranks = distributed.current()
    order = rows[torch.randperm(len(rows), generator=generator)]
    total, count = 0.0, 0
    # a last global batch too small to give every rank a sample is dropped on all of them
    batches = [i for i in range(0, len(order), config.batch_size)
               if min(config.batch_size, len(order) - i) >= ranks.world]
    for i in tqdm(batches, desc=desc, leave=False, unit="batch", mininterval=1.0,
                  disable=not ranks.main):
        batch = tensors.batch(order[i:i + config.batch_size][ranks.rank::ranks.world])
        logits = net(batch)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch["label"])
        objective = loss + config.embedding_l2 * _embedding_penalty(model, batch) \
            if config.embedding_l2 else loss
        if regulariser is not None:
            with torch.random.fork_rng(devices=[]):  # its dropout must not shift ours
                objective = objective + regulariser(model)
        optimiser.zero_grad(set_to_none=True)
        objective.backward()
        optimiser.step()
        total += loss.item() * len(logits)
        count += len(logits)
    return distributed.all_mean(total / max(count, 1), count)


def _embedding_penalty(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean squared norm of the sparse-field embedding rows this batch uses."""
    front = model.embedding  # every CRM names its shared front `embedding`
    terms = [table(batch["sparse"][:, i]).pow(2).sum(1).mean()
             for i, table in enumerate(front.tables)]
    return torch.stack(terms).sum()


@torch.inference_mode()
def predict(model: nn.Module, tensors: TaskTensors, rows: np.ndarray,
            batch_size: int = 8192) -> np.ndarray:
    """P(click) for the given rows, as float64 numpy."""
    model.eval()
    rows_t = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    out = [torch.sigmoid(model(tensors.batch(rows_t[i:i + batch_size])))
           for i in range(0, len(rows_t), batch_size)]
    return torch.cat(out).double().numpy() if out else np.zeros(0)
