"""Terms the trainer adds to a CRM's loss (engine.models.trainer.Regulariser): teachers'
probabilities (S-LLMR's pointwise and KD variants, LLM-CF's KD baseline) and a hybrid
model's own auxiliary loss (LLM-CF's CoT reconstruction)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TeacherPoints:
    """lambda * a pointwise loss between the CRM's probability and the teacher's on sampled
    candidates: squared error ("pointwise") or cross-entropy to soft labels ("kd")."""

    def __init__(self, candidates: dict[str, torch.Tensor], target: np.ndarray, *, kind: str,
                 lam: float, per_step: int, seed: int) -> None:
        self.candidates = candidates
        self.target = torch.tensor(target, dtype=torch.float32)
        self.kind, self.lam, self.per_step = kind, lam, per_step
        self.generator = torch.Generator().manual_seed(seed)
        self._losses: list[float] = []

    def parameters(self) -> list[torch.Tensor]:
        return []

    def __call__(self, model: nn.Module) -> torch.Tensor:
        pick = torch.randint(len(self.target), (self.per_step,), generator=self.generator)
        logits = model({k: v.index_select(0, pick) for k, v in self.candidates.items()})
        if self.kind == "kd":
            loss = nn.functional.binary_cross_entropy_with_logits(logits, self.target[pick])
        else:
            loss = (torch.sigmoid(logits) - self.target[pick]).pow(2).mean()
        self._losses.append(float(loss.detach()))
        return self.lam * loss

    def epoch_end(self) -> dict[str, float]:
        row = {"l_llm": float(np.mean(self._losses)) if self._losses else 0.0}
        self._losses = []
        return row


class AuxiliaryLoss:
    """weight * the model's `auxiliary_loss()` of the batch it just scored."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self._losses: list[float] = []

    def parameters(self) -> list[torch.Tensor]:
        return []

    def __call__(self, model: nn.Module) -> torch.Tensor:
        loss = model.auxiliary_loss()
        self._losses.append(float(loss.detach()))
        return self.weight * loss

    def epoch_end(self) -> dict[str, float]:
        row = {"aux_loss": float(np.mean(self._losses)) if self._losses else 0.0}
        self._losses = []
        return row
