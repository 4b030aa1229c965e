"""DIN (Zhou et al., 2018): attention of the target item over the user's history."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.data.task import FeatureSchema
from engine.errors import ConfigError
from engine.models.features import FeatureEmbedding, mlp


@dataclass(frozen=True)
class DINConfig:
    embed_dim: int = 16
    attention_hidden: tuple[int, ...] = (64, 32)
    deep_layers: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    extra_fields: int = 0  # fields a hybrid supplies in batch["extra_fields"]

    def __post_init__(self) -> None:
        if self.embed_dim < 1 or not self.deep_layers or not self.attention_hidden:
            raise ConfigError(f"bad sizes: embed_dim={self.embed_dim}, "
                              f"deep_layers={self.deep_layers}, "
                              f"attention_hidden={self.attention_hidden}")


class DIN(nn.Module):
    def __init__(self, schema: FeatureSchema, config: DINConfig = DINConfig()) -> None:
        super().__init__()
        self.config = config
        self.embedding = FeatureEmbedding(schema, config.embed_dim, config.extra_fields)
        d = config.embed_dim
        # activation unit over [h, q, h - q, h * q] -> one weight per history position
        self.attention = mlp(4 * d, config.attention_hidden, 0.0)
        self.attention_out = nn.Linear(config.attention_hidden[-1], 1)
        n_fields = self.embedding.n_fields + 1  # + the attention-pooled history
        self.deep = mlp(n_fields * d, config.deep_layers, config.dropout)
        self.head = nn.Linear(config.deep_layers[-1], 1)

    def forward(self, batch: dict[str, torch.Tensor], return_hidden: bool = False):
        fields = self.embedding(batch)  # (B, F, D)
        q = self.embedding.item_embedding(batch["sparse"][:, self.embedding.schema.item_field])
        hist = self.embedding.item_embedding(batch["hist_items"]) + \
            self.embedding.rating_table(batch["hist_ratings"])  # (B, K, D)
        qk = q.unsqueeze(1).expand_as(hist)
        a = torch.cat([hist, qk, hist - qk, hist * qk], dim=-1)  # (B, K, 4D)
        for block in self.attention:
            a = block(a)
        weights = self.attention_out(a).squeeze(-1)  # (B, K); unnormalised, as in the paper
        weights = weights * (batch["hist_items"] > 0).to(weights.dtype)
        interest = (weights.unsqueeze(-1) * hist).sum(1)  # (B, D)
        h = torch.cat([fields.flatten(1), interest], dim=1)
        hidden = [h]
        for block in self.deep:
            h = block(h)
            hidden.append(h)
        logits = self.head(h).squeeze(-1)
        return (logits, hidden) if return_hidden else logits
