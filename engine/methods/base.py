"""The contract every method (plain CRM, LLM, or one of the five hybrids) fulfils."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from engine.data.task import CTRTask

EVAL_SPLITS = ("valid", "test")  # splits whose per-sample outputs reach the store


@dataclass
class MethodResult:
    """What the store writes for one method of a run.

    probs: split -> P(click) aligned with rows[split].
    rows: split -> the task rows scored (default: the whole split; LLM methods analyse a
        seeded subset because the LLM is the costly part).
    diagnostics: store table name (see engine.store.DIAGNOSTIC_TABLES) -> per-sample frame.
    training_log: long frame (stage, epoch, metric, value).
    weights: file stem -> state dict, saved as safetensors beside the run.
    cost: train_seconds, infer_ms_per_1k (measured), llm_calls_per_1k.
    item_vectors: extra item spaces for the embedding maps, name -> (item ids, (N, d)
        vectors), e.g. CoReLLa's states before and after its alignment projections.
    description: one line saying what this stored variant is (the app's tooltips and
        glossary show it next to the name).
    stage_seconds: the method's sub-stages and their seconds (CoReLLa's training stages, its
        scoring per model and split), logged and stored under the method's stage.
    """

    name: str
    kind: str  # "crm", "llm" or "hybrid"
    probs: dict[str, np.ndarray]
    config: dict[str, Any]
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    training_log: pd.DataFrame = field(default_factory=pd.DataFrame)
    diagnostics: dict[str, pd.DataFrame] = field(default_factory=dict)
    weights: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    item_vectors: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    description: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)  # sub-stage -> seconds


class Method(ABC):
    """fit(task) -> self learns; result() returns what the store keeps.

    Constructors only store parameters (scikit-learn's contract); learned state ends in `_`.
    """

    name: str
    # what a method hands to the methods after it in the same run (CoReLLa's trained LLM
    # adapter, which S-LLMR's teacher can use instead of training another)
    provides: tuple[str, ...] = ()

    def needs(self) -> tuple[str, ...]:
        """Artifacts this method (with its configuration) takes from earlier methods."""
        return ()

    def use_artifacts(self, artifacts: dict[str, Any]) -> None:
        """Called before fit with what earlier methods of the run provided."""
        self.artifacts_in_ = dict(artifacts)

    def artifacts(self) -> dict[str, Any]:
        """After fit: name -> object, for the later methods of the run."""
        return {}

    @abstractmethod
    def fit(self, task: CTRTask) -> Method: ...

    @abstractmethod
    def result(self) -> MethodResult: ...

    def results(self) -> list[MethodResult]:
        """Every stored variant (a hybrid also reports its parts and ablations)."""
        return [self.result()]


def plain_config(value: Any) -> Any:
    """A config (asdict) as JSON-friendly values (tuples -> lists)."""
    if isinstance(value, dict):
        return {k: plain_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_config(v) for v in value]
    return value
