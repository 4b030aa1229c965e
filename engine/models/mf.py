"""Matrix factorisation: the collaborative-filtering model CoRA reads its user and item
embeddings from. logit(u, i) = <e_u, e_i> + b_u + b_i + b, trained by BCE on the training
split with the shared trainer (it takes the same batches as the CRMs: the user and item ids
are the first sparse field and the schema's item field), then frozen."""

from __future__ import annotations

import torch
from torch import nn

from engine.data.task import FeatureSchema
from engine.errors import ConfigError


class MatrixFactorisation(nn.Module):
    def __init__(self, schema: FeatureSchema, dim: int = 64) -> None:
        super().__init__()
        if dim < 1:
            raise ConfigError(f"MF dimension must be >= 1, got {dim}")
        (user_name, n_users), (_, n_items) = (schema.sparse_fields[0],
                                              schema.sparse_fields[schema.item_field])
        if user_name != "user":
            raise ConfigError(f"MF reads the user id from the first sparse field, found "
                              f"{user_name!r}")
        self.item_field = schema.item_field
        self.users = nn.Embedding(n_users, dim)
        self.items = nn.Embedding(n_items, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        self.bias = nn.Parameter(torch.zeros(()))
        for table in (self.users, self.items):
            nn.init.normal_(table.weight, std=0.05)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)

    def ids(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["sparse"][:, 0], batch["sparse"][:, self.item_field]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        users, items = self.ids(batch)
        e_u, e_i = self.users(users), self.items(items)
        return ((e_u * e_i).sum(-1) + self.user_bias(users).squeeze(-1)
                + self.item_bias(items).squeeze(-1) + self.bias)
