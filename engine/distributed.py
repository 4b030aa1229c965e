"""One run over several processes: torchrun's environment and torch.distributed's collectives.

`torchrun --nproc_per_node N -m engine run ...` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK and a rendezvous address in their environment; `start()` joins them into one
process group (gloo on CPU; with GPUs gloo for CPU tensors and nccl for CUDA ones). Every
rank runs the same program on the same data (the task is deterministic), so the collectives
below meet in the same order everywhere:

- CRM training under DistributedDataParallel, each rank on its share of every global batch
  (engine.models.trainer);
- LLM scoring and generation, each rank on its share of the prompts, gathered
  (engine.models.llm, engine.models.generation);
- adapter and hybrid training loops that are no single module's forward (LoRA, CoReLLa's
  joint stage, CoRA's generator, CoCo's phases): `data_parallel` runs each step's loss under
  DistributedDataParallel over the trainable parameters, each rank on `batch_share` of the
  batch with its loss weighted by `share_weight`, so the averaged gradients are the whole
  batch's (as one process computes them, up to float rounding);
- every rank writes its share of the per-sample outputs as Parquet parts and rank 0 merges
  them into the run's DuckDB file (engine.pipeline, engine.store); rank 0 alone claims the
  run id and publishes the run.

A rank that fails takes the others down with it (torchrun stops the group), and the store's
atomic rename leaves earlier runs as they were. One process (no torchrun) is world size 1:
every function here is then a no-op or the identity.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from engine.errors import ConfigError

T = TypeVar("T")
ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
# a rank waits this long for the others at a collective (a slow LLM stage on another rank
# is legitimate; a dead one makes torchrun stop the group long before)
TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def from_env(env: Mapping[str, str] = os.environ) -> Ranks:
    """The ranks torchrun set (world size 1 without it); a malformed value is named."""
    values = {}
    for name in ENV:
        raw = env.get(name)
        if raw is None:
            continue
        try:
            values[name] = int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r} is not an integer "
                              "(set by torchrun)") from None
    world = values.get("WORLD_SIZE", 1)
    rank = values.get("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} and WORLD_SIZE={world} do not make a process group")
    local = values.get("LOCAL_RANK", rank)
    return Ranks(rank, world, local, values.get("LOCAL_WORLD_SIZE", world))


def start() -> Ranks:
    """Join torchrun's process group (once); the ranks of this process."""
    ranks = from_env()
    if ranks.active and not dist.is_initialized():
        gpu = torch.cuda.is_available()
        if gpu:
            torch.cuda.set_device(ranks.local_rank)
        # with GPUs both: the CRMs train on the CPU (their DDP all-reduce and the object
        # collectives go through gloo), the LLM's tensors through nccl
        dist.init_process_group("cpu:gloo,cuda:nccl" if gpu else "gloo", timeout=TIMEOUT)
        torch.set_num_threads(threads())  # the ranks of one machine share its cores
    return current()


def current() -> Ranks:
    """This process's place in the group (world size 1 outside torchrun)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    env = from_env()
    return Ranks(dist.get_rank(), dist.get_world_size(), env.local_rank, env.local_world)


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def threads() -> int:
    """CPU threads one rank may use (all cores for a single process)."""
    cores, ranks = os.cpu_count() or 1, current()
    return max(1, cores // ranks.local_world) if ranks.active else cores


def share(positions: np.ndarray) -> np.ndarray:
    """This rank's share of `positions` (every world-th, from its rank): with length-sorted
    positions, each rank gets prompts of every length, so the ranks finish together."""
    ranks = current()
    return positions[ranks.rank::ranks.world] if ranks.active else positions


def gather_objects(value: T) -> list[T]:
    """Every rank's `value` (picklable), in rank order (just this one's in one process)."""
    if not current().active:
        return [value]
    out: list[Any] = [None] * current().world
    dist.all_gather_object(out, value)
    return out


def fill_everywhere(keys: list[Any], cache: dict[Any, torch.Tensor],
                    compute: Callable[[list[Any]], Any], device: torch.device | str = "cpu"
                    ) -> int:
    """Make every rank's `cache` hold every key (a collective: all ranks call it with the
    same keys, each with its own cache): `compute(keys)` adds to this rank's cache its share
    of the keys no rank holds, and each rank receives what it lacks from the first rank that
    holds it. Returns how many keys were computed (by all ranks together)."""
    ranks = current()
    if not ranks.active:
        todo = [k for k in keys if k not in cache]
        if todo:
            compute(todo)
        return len(todo)
    held = np.stack(gather_objects(np.array([k in cache for k in keys], bool)))
    nobody = np.flatnonzero(~held.any(0))
    mine = [keys[j] for j in share(nobody)]
    if mine:
        compute(mine)
    sender = held.argmax(0)  # the first rank holding each key ...
    sender[nobody] = np.arange(len(nobody)) % ranks.world  # ... or the one computing it
    wanted = ~held.all(0) & (sender == ranks.rank)
    # through the CPU: a CUDA tensor would unpickle onto the sender's GPU
    for part in gather_objects({keys[j]: cache[keys[j]].cpu() for j in np.flatnonzero(wanted)}):
        cache.update((k, v.to(device)) for k, v in part.items() if k not in cache)
    return len(nobody)


def gather(positions: np.ndarray, values: T) -> list[tuple[np.ndarray, T]]:
    """Every rank's (positions, values), in rank order (just this rank's alone)."""
    return gather_objects((positions, values))


def assemble(n: int, positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The full (n, ...) array from every rank's rows at `positions` (this rank's share)."""
    parts = gather(positions, values)
    out = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
    for where, part in parts:
        out[where] = part
    return out


def all_mean_dict(values: dict[str, float], weight: float) -> dict[str, float]:
    """Each key's weighted mean over the ranks that report it (one collective; a rank's
    batch share may lack a segment another's has)."""
    if not current().active:
        return dict(values)
    parts = gather_objects((values, weight))
    keys = dict.fromkeys(k for v, _ in parts for k in v)
    return {k: sum(v[k] * w for v, w in parts if k in v)
            / max(sum(w for v, w in parts if k in v), 1e-12) for k in keys}


def broadcast(value: T) -> T:
    """Rank 0's value on every rank."""
    if not current().active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_mean(value: float, weight: float) -> float:
    """The weighted mean of a per-rank number over the ranks (e.g. an epoch's loss)."""
    if not current().active:
        return value
    both = torch.tensor([value * weight, weight], dtype=torch.float64)
    dist.all_reduce(both)
    return float(both[0] / max(float(both[1]), 1e-12))


def barrier() -> None:
    if current().active:
        dist.barrier()


def batch_share(rows: np.ndarray) -> np.ndarray | None:
    """This rank's rows of one global training batch (every world-th); None on every rank
    when the batch is too small to give each rank one (all ranks then skip that step)."""
    ranks = current()
    if not ranks.active:
        return rows
    return rows[ranks.rank::ranks.world] if len(rows) >= ranks.world else None


def share_weight(mine: int, total: int) -> float:
    """What a rank multiplies its mean loss over `mine` of the batch's `total` samples by, so
    that DDP's average over the ranks is the mean over the whole batch."""
    return current().world * mine / max(total, 1)


class _Parameters(nn.Module):
    """A training step's trainable parameters as one module, whose forward is the step's loss
    (a closure over models that are not one nn.Module: the LLM's LoRA layers called layer by
    layer, a generator whose output patches the LLM, CoCo's pool, decoupler and fusion)."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        super().__init__()
        self.params = nn.ParameterList(params)

    def forward(self, step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return step(*args, **kwargs)


def data_parallel(params: list[nn.Parameter]) -> Callable[..., Any]:
    """`run(step, *args)` computes a training step's loss `step(*args)`; under torchrun it runs
    inside DistributedDataParallel over `params` (rank 0's values broadcast at the start), so
    backward averages their gradients over the ranks; in one process it is a plain call.
    Everything the loss depends on must be computed inside `step`."""
    trainable = [p for p in params if p.requires_grad]
    if not current().active or not trainable:
        return lambda step, *args, **kwargs: step(*args, **kwargs)
    from torch.nn.parallel import DistributedDataParallel

    # find_unused_parameters: a step may leave some untouched (a variant without the pool)
    return DistributedDataParallel(_Parameters(trainable), find_unused_parameters=True)
