"""DCNv2 (Wang et al., 2021): a cross network and a deep network, parallel or stacked."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.data.task import FeatureSchema
from engine.errors import ConfigError
from engine.models.features import FeatureEmbedding, mlp


@dataclass(frozen=True)
class DCNv2Config:
    embed_dim: int = 16
    cross_layers: int = 3
    deep_layers: tuple[int, ...] = (256, 128)
    structure: str = "parallel"  # or "stacked"
    dropout: float = 0.1
    extra_fields: int = 0  # fields a hybrid supplies in batch["extra_fields"]

    def __post_init__(self) -> None:
        if self.structure not in ("parallel", "stacked"):
            raise ConfigError(f"structure must be 'parallel' or 'stacked', got {self.structure!r}")
        if self.embed_dim < 1 or self.cross_layers < 0:
            raise ConfigError(f"bad sizes: embed_dim={self.embed_dim}, "
                              f"cross_layers={self.cross_layers}")


class CrossLayer(nn.Module):
    """x_{l+1} = x_0 * (W x_l + b) + x_l, all (B, d)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class DCNv2(nn.Module):
    def __init__(self, schema: FeatureSchema, config: DCNv2Config = DCNv2Config()) -> None:
        super().__init__()
        self.config = config
        self.embedding = FeatureEmbedding(schema, config.embed_dim, config.extra_fields)
        d = self.embedding.n_fields * config.embed_dim
        self.cross = nn.ModuleList(CrossLayer(d) for _ in range(config.cross_layers))
        self.deep = mlp(d, config.deep_layers, config.dropout)
        deep_out = config.deep_layers[-1] if config.deep_layers else d
        head_in = d + deep_out if config.structure == "parallel" else deep_out
        self.head = nn.Linear(head_in, 1)

    def forward(self, batch: dict[str, torch.Tensor], return_hidden: bool = False):
        """Logits (B,); with return_hidden also the per-layer states [(B, d_l), ...]:
        the flat embedding, each cross layer, each deep block, in forward order."""
        x0 = self.embedding(batch).flatten(1)  # (B, F*D)
        hidden = [x0]
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
            hidden.append(x)
        deep_in = x0 if self.config.structure == "parallel" else x
        h = deep_in
        for block in self.deep:
            h = block(h)
            hidden.append(h)
        final = torch.cat([x, h], dim=1) if self.config.structure == "parallel" else h
        logits = self.head(final).squeeze(-1)
        return (logits, hidden) if return_hidden else logits

