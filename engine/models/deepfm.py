"""DeepFM (Guo et al., 2017): first-order + FM second-order interactions + a deep network."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.data.task import FeatureSchema
from engine.errors import ConfigError
from engine.models.features import FeatureEmbedding, mlp


@dataclass(frozen=True)
class DeepFMConfig:
    embed_dim: int = 16
    deep_layers: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    extra_fields: int = 0  # fields a hybrid supplies in batch["extra_fields"]

    def __post_init__(self) -> None:
        if self.embed_dim < 1 or not self.deep_layers:
            raise ConfigError(f"bad sizes: embed_dim={self.embed_dim}, "
                              f"deep_layers={self.deep_layers}")


class DeepFM(nn.Module):
    def __init__(self, schema: FeatureSchema, config: DeepFMConfig = DeepFMConfig()) -> None:
        super().__init__()
        self.config = config
        self.embedding = FeatureEmbedding(schema, config.embed_dim, config.extra_fields)
        self.first_order = FeatureEmbedding(schema, 1)  # per-feature weights as 1-d embeddings
        d = self.embedding.n_fields * config.embed_dim
        self.deep = mlp(d, config.deep_layers, config.dropout)
        self.deep_head = nn.Linear(config.deep_layers[-1], 1)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict[str, torch.Tensor], return_hidden: bool = False):
        emb = self.embedding(batch)  # (B, F, D)
        linear = self.first_order(batch).sum(dim=(1, 2))  # (B,)
        own = emb[:, :self.embedding.n_base_fields]  # extra fields feed the deep part only
        square_of_sum = own.sum(1).pow(2)  # (B, D)
        sum_of_square = own.pow(2).sum(1)
        fm = 0.5 * (square_of_sum - sum_of_square).sum(1)  # (B,)
        h = emb.flatten(1)
        hidden = [h]
        for block in self.deep:
            h = block(h)
            hidden.append(h)
        logits = self.bias + linear + fm + self.deep_head(h).squeeze(-1)
        return (logits, hidden) if return_hidden else logits
