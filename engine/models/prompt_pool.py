"""CoCo's pool of soft prompts (seed 001): K learnable vectors in the LLM's input-embedding
space, chosen per user by cosine similarity to the user's projected representation.

Three choices differ from the paper's text, each for a stated reason:
- Selection thresholds the cosine itself (keep prompts with cos >= theta, always the top one,
  at most `max_selected`): the paper's softmax over 64 cosines is at most ~e^2/64 ~ 0.1, so its
  threshold 0.45 would never fire and every user would get the top prompt only.
- L_Q is VQ-VAE's pair of terms on unit vectors: the codebook term pulls the selected prompts
  towards the (stopped) user vector, the commitment term the user projection towards the
  (stopped) prompts. Unit vectors, because selection is by cosine and the prompts must keep
  the norm of real token embeddings for the LLM to read them.
- L_ortho sums squared cosines between distinct prompts: the paper's plain sum of cosines is
  minimised by anti-parallel prompts, not orthogonal ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engine.errors import ConfigError


@dataclass(frozen=True)
class PoolConfig:
    size: int = 16  # K prompts
    theta: float = 0.3  # cosine threshold for selecting more than the top prompt
    max_selected: int = 4  # M_max
    shared_tokens: int = 4  # learnable tokens every user gets (the shared prompt)
    temperature: float = 0.1  # softmax over the selected prompts' cosines -> their weights
    commitment: float = 0.25  # VQ-VAE's beta on the commitment term

    def __post_init__(self) -> None:
        if self.size < 1 or self.shared_tokens < 1:
            raise ConfigError(f"pool size and shared_tokens must be >= 1, got size={self.size}, "
                              f"shared_tokens={self.shared_tokens}")
        if not 1 <= self.max_selected <= self.size:
            raise ConfigError(f"max_selected must be in 1..size ({self.size}), "
                              f"got {self.max_selected}")
        if not -1.0 <= self.theta <= 1.0:
            raise ConfigError(f"theta is a cosine threshold in [-1, 1], got {self.theta}")
        if self.temperature <= 0 or self.commitment < 0:
            raise ConfigError("temperature must be > 0 and commitment >= 0")


@dataclass
class Selection:
    """Per user (B rows): the chosen prompt ids (B, M_max) padded with -1, their mask, their
    cosines and softmax weights (0 where padded), and the cosine to every prompt (B, K)."""

    ids: torch.Tensor
    mask: torch.Tensor
    cosines: torch.Tensor
    weights: torch.Tensor
    all_cosines: torch.Tensor

    @property
    def top(self) -> torch.Tensor:
        return self.ids[:, 0]

    @property
    def count(self) -> torch.Tensor:
        return self.mask.sum(1)


class PromptPool(nn.Module):
    """The codebook Z (K, H), the shared prompt tokens (S, H) and the projection of centred
    user vectors into the embedding space; prompts start at `token_norm` scale, the mean
    norm of the LLM's token embeddings."""

    def __init__(self, config: PoolConfig, user_dim: int, hidden: int, token_norm: float
                 ) -> None:
        super().__init__()
        self.config = config
        self.token_norm = float(token_norm)
        self.project = nn.Linear(user_dim, hidden, bias=False)
        scale = self.token_norm / math.sqrt(hidden)
        self.codes = nn.Parameter(torch.randn(config.size, hidden) * scale)
        self.shared = nn.Parameter(torch.randn(config.shared_tokens, hidden) * scale)
        # the training users' mean, taken off before projecting: CRM user vectors share a
        # common direction that would put every cosine near 1 (measured: 0.9+ uncentred)
        self.register_buffer("centre", torch.zeros(user_dim))

    @torch.no_grad()
    def init_codes(self, user_vectors: torch.Tensor, seed: int) -> None:
        """k-means (scikit-learn) over the projected, unit-normalised training users; each
        centre, rescaled to token_norm, starts one prompt. With fewer distinct users than
        prompts the remaining prompts keep their random start."""
        from sklearn.cluster import KMeans

        self.centre.copy_(user_vectors.mean(0))
        points = F.normalize(self.projected(user_vectors), dim=-1).double().numpy()
        points = np.unique(points.round(6), axis=0)
        k = min(self.config.size, len(points))
        if k < 1:
            return
        centres = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(points).cluster_centers_
        centres = F.normalize(torch.from_numpy(centres).float(), dim=-1) * self.token_norm
        self.codes[:k] = centres

    def projected(self, users: torch.Tensor) -> torch.Tensor:
        """W (e_u - centre): user vectors in the embedding space (B, H)."""
        return self.project(users - self.centre)

    def cosines(self, users: torch.Tensor) -> torch.Tensor:
        """cos(W (e_u - centre), z_k) for every prompt (B, K)."""
        return F.normalize(self.projected(users), dim=-1) @ F.normalize(self.codes, dim=-1).T

    def select(self, users: torch.Tensor) -> Selection:
        """Prompts with cosine >= theta, the top one always, at most max_selected, in
        descending cosine (a stable sort: ties go to the lower id, so it is deterministic)."""
        cfg = self.config
        cos = self.cosines(users)
        order = torch.sort(cos.detach(), dim=1, descending=True, stable=True).indices
        ids = order[:, :cfg.max_selected]
        chosen = cos.gather(1, ids)
        mask = chosen.detach() >= cfg.theta
        mask[:, 0] = True
        weights = torch.softmax((chosen / cfg.temperature).masked_fill(~mask, -torch.inf), 1)
        return Selection(ids=ids.masked_fill(~mask, -1), mask=mask,
                         cosines=chosen * mask, weights=weights * mask, all_cosines=cos)

    def selected_embeds(self, selection: Selection) -> torch.Tensor:
        """(B, M_max, H) the selected prompts (zeros where padded)."""
        ids = selection.ids.clamp(min=0)
        return self.codes[ids] * selection.mask[..., None]

    def vq_loss(self, users: torch.Tensor, selection: Selection) -> torch.Tensor:
        """VQ-VAE's codebook + beta * commitment terms between each user's unit vector and
        its top prompt's unit vector."""
        e = F.normalize(self.projected(users), dim=-1)
        z = F.normalize(self.codes[selection.top], dim=-1)
        codebook = (e.detach() - z).pow(2).sum(-1).mean()
        commitment = (e - z.detach()).pow(2).sum(-1).mean()
        return codebook + self.config.commitment * commitment

    def ortho_loss(self) -> torch.Tensor:
        return orthogonality(self.codes)


def orthogonality(codes: torch.Tensor) -> torch.Tensor:
    """Sum over distinct pairs of cos^2(z_i, z_j): 0 exactly for an orthogonal pool."""
    unit = F.normalize(codes, dim=-1)
    gram = unit @ unit.T
    return torch.triu(gram, diagonal=1).pow(2).sum()


def usage_stats(top: np.ndarray, size: int) -> tuple[float, int]:
    """Codebook perplexity exp(entropy) of the top-prompt counts, and how many prompts no
    user chose (dead codes)."""
    counts = np.bincount(top[top >= 0], minlength=size).astype(float)
    if counts.sum() == 0:
        return 0.0, size
    p = counts / counts.sum()
    nz = p[p > 0]
    return float(np.exp(-(nz * np.log(nz)).sum())), int((counts == 0).sum())
