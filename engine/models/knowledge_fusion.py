"""CoCo's decoupling and fusion (seed 001, 4.2.2-4.3), in the CTR setting.

Decoupling: each selected prompt, as a query, attends over the LLM's output states (the
history's and the appended tokens') and pulls out one vector: the mixed output of several
prompts becomes one vector per prompt. Fusion: the CRM's hidden representation attends over
[those vectors; itself], each prompt's logit biased by log of its selection weight, and a
zero-initialised head turns the result into a correction of the CRM's logit, so the fused
model is its CRM exactly until the head learns.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

DECOUPLINGS = ("attention", "mean")


class Decoupler(nn.Module):
    """Queries (B, M, H) over LLM states (B, T, H) -> (B, M, width); or, with mode "mean",
    the masked mean of the states as one vector (B, 1, width) (the ablation)."""

    def __init__(self, hidden: int, width: int, heads: int, mode: str = "attention") -> None:
        super().__init__()
        if mode not in DECOUPLINGS:
            raise ValueError(f"mode must be one of {DECOUPLINGS}, got {mode!r}")
        self.mode = mode
        # per-dimension standardisation of the LLM's states (set from training windows by
        # `standardise`): a causal LM's final states carry a few massive dimensions (SmolLM2:
        # one of ~50 on every token, the rest ~1) that would otherwise swamp the keys
        self.register_buffer("shift", torch.zeros(hidden))
        self.register_buffer("scale", torch.ones(hidden))
        self.keys = nn.Linear(hidden, width)
        if mode == "attention":
            self.queries = nn.Linear(hidden, width)
            self.attention = nn.MultiheadAttention(width, heads, batch_first=True)

    @torch.no_grad()
    def standardise(self, states: torch.Tensor) -> None:
        """Fix the per-dimension mean and std from sample states (N, H)."""
        self.shift.copy_(states.mean(0))
        self.scale.copy_(states.std(0).clamp(min=1e-4))

    def forward(self, queries: torch.Tensor, states: torch.Tensor, state_mask: torch.Tensor
                ) -> torch.Tensor:
        keys = self.keys((states - self.shift) / self.scale)
        if self.mode == "mean":
            m = state_mask[..., None].to(keys.dtype)
            return ((keys * m).sum(1) / m.sum(1).clamp(min=1.0))[:, None]
        out, _ = self.attention(self.queries(queries), keys, keys,
                                key_padding_mask=~state_mask.bool(), need_weights=False)
        return out


class Fusion(nn.Module):
    """The CRM representation attends over [prompt vectors; itself]; logit = crm_logit +
    head(result), head zero-initialised."""

    def __init__(self, crm_dim: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.query = nn.Linear(crm_dim, width)
        self.own = nn.Linear(crm_dim, width)
        self.value = nn.Linear(width, width)
        self.head = nn.Linear(width, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, crm_hidden: torch.Tensor, crm_logit: torch.Tensor,
                vectors: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor,
                                                                      torch.Tensor]:
        """crm_hidden (B, D), crm_logit (B,), vectors (B, M, width), weights (B, M) (0 where
        a slot is empty). Returns the fused logit (B,) and the attention (B, M + 1): each
        prompt's share, then the CRM's own."""
        q = self.query(crm_hidden)[:, None]  # (B, 1, w)
        own = self.own(crm_hidden)[:, None]
        keys = torch.cat([vectors, own], 1)  # (B, M + 1, w)
        bias = torch.cat([torch.log(weights.clamp(min=1e-12)).masked_fill(weights <= 0,
                                                                          -torch.inf),
                          weights.new_zeros((len(weights), 1))], 1)
        scores = (q @ keys.transpose(1, 2)).squeeze(1) / math.sqrt(self.width) + bias
        attention = torch.softmax(scores, -1)
        mixed = (attention[..., None] * self.value(keys)).sum(1)
        return crm_logit + self.head(F.gelu(mixed)).squeeze(-1), attention


def helped(fused_logit: torch.Tensor, crm_logit: torch.Tensor, labels: torch.Tensor
           ) -> torch.Tensor:
    """Contradiction elimination's mask per sample: True where the fused prediction's BCE is
    lower than the CRM's alone (the LLM's knowledge helped: its LoRA gets no gradient there)."""
    with torch.no_grad():
        fused = F.binary_cross_entropy_with_logits(fused_logit, labels, reduction="none")
        crm = F.binary_cross_entropy_with_logits(crm_logit, labels, reduction="none")
        return fused < crm
