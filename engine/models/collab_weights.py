"""CoRA's collaborative weights (seed 004): adapter weights generated per (user, item).

A small query transformer reads the pair's collaborative embeddings [e_u; e_i] and writes
A(u, i), hidden x r with unit columns; every target projection (q, k, v, o by default) of the
chosen layers has its own P (r x out), zero at the start, and its output gains
(alpha / r) * (x A(u, i)) P. Only the generator and the P matrices train; the LLM stays frozen.

Injected with forward hooks on the Hugging Face modules, not a forked model file, so any
causal LM that engine.models.llm loads works. The deltas of a batch are per sample: each row
of the batch multiplies by its own A (a batched matmul), so samples never mix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from engine.errors import ConfigError

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
FFN = ("gate_proj", "up_proj")  # down_proj reads the FFN's inner width, not the hidden one


@dataclass(frozen=True)
class CollabConfig:
    rank: int = 8
    alpha: float = 16.0
    width: int = 128  # the generator's width
    layers: int = 2  # generator decoder layers
    heads: int = 4
    targets: tuple[str, ...] = ATTENTION
    # 0: every LLM layer (the paper); k: the top k only, so the frozen layers below run once
    # per prompt and are reused across epochs and between the base and CoRA scores
    top_layers: int = 0

    def __post_init__(self) -> None:
        if self.rank < 1 or self.width < 1 or self.layers < 1 or self.heads < 1:
            raise ConfigError(f"bad generator sizes: rank={self.rank}, width={self.width}, "
                              f"layers={self.layers}, heads={self.heads}")
        if self.width % self.heads:
            raise ConfigError(f"generator width {self.width} must divide by heads {self.heads}")
        unknown = [t for t in self.targets if t not in ATTENTION + FFN]
        if unknown or not self.targets:
            raise ConfigError(f"unknown target module(s) {unknown or '(none)'}; valid: "
                              f"{', '.join(ATTENTION + FFN)}")
        if self.top_layers < 0:
            raise ConfigError(f"top_layers must be >= 0, got {self.top_layers}")


class WeightGenerator(nn.Module):
    """r learned queries cross-attend to the two collaborative tokens (user, item) through
    standard transformer decoder layers; query j becomes column j of A, unit length."""

    def __init__(self, cf_dim: int, hidden: int, config: CollabConfig) -> None:
        super().__init__()
        w = config.width
        # per-dimension standardisation of the two tables (set by `standardise`): MF's
        # embeddings vary by ~0.08 per dimension, so the input layer's bias swamped them and
        # A(u, i) came out the same for every pair (cosine to the mean A 0.9986 at init on
        # ML-100k; 0.84 standardised)
        for side in ("user", "item"):
            self.register_buffer(f"{side}_shift", torch.zeros(cf_dim))
            self.register_buffer(f"{side}_scale", torch.ones(cf_dim))
        self.inputs = nn.Linear(cf_dim, w)
        self.kind = nn.Parameter(torch.zeros(2, w))  # which token is the user, which the item
        self.queries = nn.Parameter(torch.randn(config.rank, w) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerDecoderLayer(w, config.heads, 2 * w, dropout=0.0, batch_first=True,
                                       norm_first=True) for _ in range(config.layers))
        self.norm = nn.LayerNorm(w)
        self.out = nn.Linear(w, hidden)

    @torch.no_grad()
    def standardise(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Fix each side's per-dimension mean and std from its embedding table (N, cf_dim)."""
        for side, table in (("user", users), ("item", items)):
            getattr(self, f"{side}_shift").copy_(table.mean(0))
            getattr(self, f"{side}_scale").copy_(table.std(0).clamp(min=1e-6))

    def forward(self, e_user: torch.Tensor, e_item: torch.Tensor) -> torch.Tensor:
        """(B, cf_dim) each -> A (B, hidden, rank), each column of unit norm."""
        tokens = torch.stack([(e_user - self.user_shift) / self.user_scale,
                              (e_item - self.item_shift) / self.item_scale], dim=1)
        memory = self.inputs(tokens) + self.kind
        x = self.queries.expand(len(e_user), -1, -1)
        for block in self.blocks:
            x = block(x, memory)
        columns = nn.functional.normalize(self.out(self.norm(x)), dim=-1)  # (B, r, hidden)
        return columns.transpose(1, 2)


def target_modules(backbone: nn.Module, targets: tuple[str, ...], start: int
                   ) -> dict[str, nn.Linear]:
    """'<layer>.<name>' -> the projection, for each decoder layer >= start."""
    found: dict[str, nn.Linear] = {}
    hidden = backbone.config.hidden_size
    for j, layer in enumerate(backbone.layers):
        if j < start:
            continue
        for path, module in layer.named_modules():
            name = path.rsplit(".", 1)[-1]
            if name in targets and isinstance(module, nn.Linear):
                if module.in_features != hidden:
                    raise ConfigError(f"target {name} of layer {j} reads {module.in_features} "
                                      f"features, not the hidden width {hidden}: A(u, i) is "
                                      "hidden x r")
                found[f"{j}.{name}"] = module
    missing = set(targets) - {key.split(".", 1)[1] for key in found}
    if missing:
        raise ConfigError(f"the LLM has no {', '.join(sorted(missing))} projections")
    return found


class CollaborativeWeights(nn.Module):
    """The generator and one zero-initialised P per target projection, hooked into an LLM.

    Outside `active(a)` the hooks add nothing (the base LLM); inside, each projection's
    output of batch row b gains scale * (x_b A_b) P."""

    def __init__(self, backbone: nn.Module, cf_dim: int, config: CollabConfig) -> None:
        super().__init__()
        self.config = config
        n_layers = len(backbone.layers)
        if config.top_layers > n_layers:
            raise ConfigError(f"top_layers={config.top_layers} exceeds the LLM's {n_layers} "
                              "layers")
        self.start = n_layers - config.top_layers if config.top_layers else 0
        hidden = backbone.config.hidden_size
        self.generator = WeightGenerator(cf_dim, hidden, config)
        modules = target_modules(backbone, config.targets, self.start)
        self.keys = tuple(modules)
        self._targets = dict(modules)  # a plain dict: the LLM's weights are not ours to save
        self.P = nn.ParameterDict({
            key.replace(".", "_"): nn.Parameter(torch.zeros(config.rank, m.out_features))
            for key, m in modules.items()})
        self.scale = config.alpha / config.rank
        self._a: torch.Tensor | None = None
        self._handles = [m.register_forward_hook(self._hook(key.replace(".", "_")))
                         for key, m in modules.items()]

    def _hook(self, key: str):
        def add_delta(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            a = self._a
            if a is None:
                return output
            x = inputs[0]
            if x.shape[0] != a.shape[0]:
                raise RuntimeError(f"the batch has {x.shape[0]} rows but A(u, i) was set for "
                                   f"{a.shape[0]}")
            p = self.P[key]
            delta = torch.matmul(torch.matmul(x, a.to(x.dtype)), p.to(x.dtype))
            return output + self.scale * delta
        return add_delta

    @contextmanager
    def active(self, a: torch.Tensor) -> Iterator[None]:
        """Within the block, the hooked projections add each row's delta (A: (B, H, r))."""
        self._a = a
        try:
            yield
        finally:
            self._a = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def module_types(self) -> list[str]:
        return sorted({key.split(".", 1)[1] for key in self.keys})

    @torch.no_grad()
    def delta_norms(self, a: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per module type, ||scale * A P||_F per sample (B,), averaged over layers, without
        forming the H x out delta: ||A P||^2 = sum((A^T A) * (P P^T))."""
        gram = a.transpose(1, 2) @ a  # (B, r, r)
        out: dict[str, list[torch.Tensor]] = {}
        for key in self.keys:
            p = self.P[key.replace(".", "_")]
            squared = (gram * (p @ p.T)).sum((1, 2)).clamp_min(0)
            out.setdefault(key.split(".", 1)[1], []).append(self.scale * squared.sqrt())
        return {name: torch.stack(values).mean(0) for name, values in out.items()}

    @torch.no_grad()
    def merge_into(self, a: torch.Tensor) -> list[tuple[nn.Linear, torch.Tensor]]:
        """Add one sample's delta (A: (H, r)) to the target weights, as a merged adapter
        would; returns what `unmerge` needs to restore them exactly."""
        saved = []
        for key in self.keys:
            module = self._targets[key]
            saved.append((module, module.weight.detach().clone()))
            p = self.P[key.replace(".", "_")]
            module.weight += (self.scale * (a @ p)).T.to(module.weight.dtype)
        return saved

    @staticmethod
    def unmerge(saved: list[tuple[nn.Linear, torch.Tensor]]) -> None:
        with torch.no_grad():
            for module, weight in saved:
                module.weight.copy_(weight)
