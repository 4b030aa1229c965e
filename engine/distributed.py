"""One run over several processes: torchrun's environment and torch.distributed's collectives.

`torchrun --nproc_per_node N -m engine run ...` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK and a rendezvous address in their environment; `start()` joins them into one
process group (gloo on CPU, nccl on GPU). Every rank runs the same program on the same data
(the task is deterministic), so the collectives below meet in the same order everywhere:

- CRM training under DistributedDataParallel, each rank on its share of every global batch
  (engine.models.trainer);
- LLM scoring, each rank on its share of the prompts, gathered (engine.models.llm);
- rank 0 alone claims the run id and writes the store (engine.pipeline).

A rank that fails takes the others down with it (torchrun stops the group), and the store's
atomic rename leaves earlier runs as they were. One process (no torchrun) is world size 1:
every function here is then a no-op or the identity.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

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
        dist.init_process_group("nccl" if gpu else "gloo", timeout=TIMEOUT)
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


def gather(positions: np.ndarray, values: T) -> list[tuple[np.ndarray, T]]:
    """Every rank's (positions, values), in rank order (just this rank's alone)."""
    if not current().active:
        return [(positions, values)]
    out: list[Any] = [None] * current().world
    dist.all_gather_object(out, (positions, values))
    return out


def assemble(n: int, positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The full (n, ...) array from every rank's rows at `positions` (this rank's share)."""
    parts = gather(positions, values)
    out = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
    for where, part in parts:
        out[where] = part
    return out


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
