"""The contract every method (plain CRM, LLM, or one of the five hybrids) fulfils."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from engine.data.task import CTRTask
from engine.errors import ConfigError

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
    # whether fit reads task.item_vectors (the pipeline then embeds the item texts once)
    uses_item_vectors: bool = False

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


@dataclass
class VariantRun:
    """One trained CRM variant of a hybrid: its probabilities per split and costs, and its
    per-epoch log in long form (stage = the variant)."""

    probs: dict[str, np.ndarray]
    seconds: float
    best_epoch: int
    infer_ms_per_1k: float
    log: pd.DataFrame
    model: Any = None  # the trained network, where a later method reads its weights

    def as_dict(self) -> dict[str, Any]:
        return {"probs": self.probs, "seconds": self.seconds, "best_epoch": self.best_epoch,
                "infer_ms_per_1k": self.infer_ms_per_1k}


def train_variant(model: torch.nn.Module, task: CTRTask, train: Any, tensors: Any,
                  name: str, variant: str, regulariser: Any = None) -> VariantRun:
    """Train `model` (seeded by the caller) on the task and score the valid and test splits,
    timing the scoring for the cost table."""
    import time

    from engine.models.trainer import fit, predict

    run = fit(model, task, train, name=f"{name}:{variant}", tensors=tensors,
              regulariser=regulariser)
    probs, infer = {}, 0.0
    for split in EVAL_SPLITS:
        t0 = time.perf_counter()
        probs[split] = predict(model, tensors, task.index(split))
        infer += time.perf_counter() - t0
    n = sum(len(p) for p in probs.values())
    log = pd.DataFrame(run.log).melt(id_vars=["epoch"], var_name="metric", value_name="value")
    log.insert(0, "stage", variant)
    return VariantRun(probs, run.seconds, run.best_epoch, 1e6 * infer / max(n, 1), log)


def run_llm(choice: str, artifacts: dict[str, Any], config: Any, method: str,
            role: str) -> tuple[Any, str]:
    """The LLM a method uses as teacher or writer, and a line saying which: choice
    "adapter" is the LoRA adapter an earlier method of the run trained (no second
    training), "base" the base model, "auto" the adapter when the run has one."""
    from engine.models.llm import LLM

    adapter = artifacts.get("llm_adapter")
    if choice == "adapter" or (choice == "auto" and adapter):
        if adapter is None:
            raise ConfigError(f"{method}: {role}='adapter' needs the LLM adapter an earlier "
                              "method of the run trains (corella)")
        return adapter.load(), f"{adapter.source}'s LoRA adapter"
    llm = LLM(config)
    llm.for_inference()
    return llm, config.model


def analysed_rows(task: CTRTask, valid: int, test: int, seed: int) -> dict[str, np.ndarray]:
    """A seeded random subset of each eval split, where the LLM is the costly part. The LLM
    methods draw it alike, so with the same sizes and seed they analyse the same samples
    (and may share the frozen layers' states of their prompts)."""
    rng = np.random.default_rng(seed + 1)
    caps = {"valid": valid, "test": test}
    out = {}
    for split in EVAL_SPLITS:
        rows = task.index(split)
        if caps[split] < len(rows):
            rows = np.sort(rng.choice(rows, size=caps[split], replace=False))
        out[split] = rows
    return out


def training_subsets(task: CTRTask, sizes: tuple[int, ...], seed: int
                     ) -> list[np.ndarray]:
    """Consecutive cuts of one seeded order of the training split (each sorted): the LLM
    methods' training prompts. With the same seed, a method asking for n rows gets the first
    n of that order, the prompts CoReLLa's LLM trainings saw, whose frozen states the run
    already holds."""
    train = np.random.default_rng(seed).permutation(task.index("train"))
    if sum(sizes) > len(train):
        raise ConfigError(f"training subsets ({' + '.join(map(str, sizes))}) exceed the "
                          f"{len(train)} training samples")
    cuts = np.cumsum((0, *sizes))
    return [np.sort(train[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


@dataclass
class LowerStates:
    """The frozen lower layers' states of prompts (prompt -> (T, H) entering layer `split`),
    which one LLM method of a run computed and a later one with the same base model reuses:
    only their top layers differ."""

    model: str
    split: int
    max_length: int  # prompts were cut to this many tokens
    states: dict[str, torch.Tensor]

    def usable(self, model: str, split: int, max_length: int) -> bool:
        """Whether a method with trainable weights from layer `split` up may start from these
        (running the layers from self.split to `split` once per prompt when they differ)."""
        return (self.model == model and self.split <= split and self.max_length == max_length
                and bool(self.states))

    def as_dtype(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Every prompt's states in `dtype`. The earlier method may have scored its analysed
        prompts in bfloat16 (CPUs with native bf16) and trained in float32: a float32 reader
        takes both, since the frozen layers' output is what it is either way up to bf16
        rounding, and recomputing them cost CoRA 173 of its 237 s in the demo."""
        return {p: s.to(dtype) for p, s in self.states.items()}


def crm_key(model: str, model_config: Any, train: Any) -> str:
    """The artifact name under which a plain CRM method shares its trained run: a hybrid
    whose backbone has the same model, options and training config (hence the same seed and
    init) reads it instead of training the same network again; the probabilities are the
    same bit for bit (tested)."""
    return "crm_run:" + json.dumps([model, plain_config(asdict(model_config)),
                                    plain_config(asdict(train))], sort_keys=True, default=str)


def run_crm(crm: str, model_config: Any, train: Any, task: CTRTask, tensors: Any,
            artifacts: dict[str, Any], name: str) -> torch.nn.Module:
    """The trained CRM network of this configuration: the run's own when an earlier method
    trained it (no second training), else one trained here from the same seed."""
    from engine.models import build_crm
    from engine.models.trainer import fit

    model = getattr(artifacts.get(crm_key(crm, model_config, train)), "model", None)
    if model is None:
        torch.manual_seed(train.seed)
        model = build_crm(crm, task.schema, model_config)
        fit(model, task, train, name=f"{name}:{crm}", tensors=tensors)
    return model


def plain_config(value: Any) -> Any:
    """A config (asdict) as JSON-friendly values (tuples -> lists)."""
    if isinstance(value, dict):
        return {k: plain_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_config(v) for v in value]
    return value
