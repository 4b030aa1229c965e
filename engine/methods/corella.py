"""CoReLLa (seed 000): a CRM for easy samples, an LLM for hard ones, aligned layer-wise.

Stage 1 trains the CRM on all training data. Stage 2 trains CRM + LLM (LoRA) jointly on a
random subset with loss a*L_llm + b*L_crm + c*L_align, where L_align compares linear
projections of chosen LLM and CRM layer states. Stage 3 trains the LLM alone on another
subset. At inference the CRM's prediction entropy routes a sample: above the threshold the
LLM's probability replaces the CRM's. The ablation without stage 2 trains an LLM on the
stage-3 subset alone (an independently trained LLM) and routes with the stage-1 CRM.

Every analysed valid/test sample keeps p_crm, p_llm and the entropy, so any threshold can be
replayed in the router lab; the threshold reported here is the one with the best valid AUC.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from engine import distributed
from engine.data.task import CTRTask
from engine.errors import ConfigError
from engine.methods.base import (
    EVAL_SPLITS,
    LowerStates,
    Method,
    MethodResult,
    analysed_rows,
    plain_config,
    training_subsets,
)
from engine.methods.crm import CRMMethod
from engine.metrics import auc
from engine.models.adapter_training import AdapterTraining, train_adapter
from engine.models.llm import LLM, LLMAdapter, LLMConfig
from engine.models.trainer import TrainConfig
from engine.models.trainer import predict as crm_predict
from engine.routing import binary_entropy, mixed_probs, threshold_for_share


@dataclass(frozen=True)
class CoReLLaConfig:
    crm: str = "dcnv2"
    crm_options: dict[str, Any] = field(default_factory=dict)
    llm: LLMConfig = LLMConfig()
    lora_r: int = 8
    lora_alpha: int = 16
    stage2_samples: int = 128  # joint CRM + LLM training subset (paper: 20-30k)
    stage3_samples: int = 128  # LLM-alone subset
    stage_epochs: int = 1  # stage 2 (joint) epochs
    # epochs of the LLM-alone trainings (stage 3 and the ablation); with lora_top_layers the
    # frozen layers run once per prompt, so later epochs cost only the top layers
    llm_epochs: int = 1
    # LoRA in the top k LLM layers only (0: all): the frozen layers run without autograd,
    # once per prompt across epochs (engine.models.adapter_training; bench/llm_speed.py)
    lora_top_layers: int = 0
    length_sorted: bool = True  # LLM-alone batches of prompts of similar length
    # with lora_top_layers: the two LLMs share the frozen layers' states of the analysed
    # prompts when they fit in this many MB (else each LLM runs every layer)
    lower_cache_mb: int = 2048
    llm_batch_size: int = 8
    llm_lr: float = 5e-4
    crm_lr: float = 1e-4
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 0.1)  # a (LLM), b (CRM), c (align)
    align_layers: int = 3  # layer pairs, spread evenly over both depths
    align_dim: int = 64
    analyse_valid: int = 200  # samples scored by both models for threshold choice and lab
    analyse_test: int = 800
    answers: int = 16  # generated answer texts kept for the case browser
    map_states: int = 5000  # analysed samples per split whose layer states feed the maps
    budget: float = 0.2  # LLM share of the budget-routed variant
    ablation: bool = True  # also run without stage 2 (independently trained LLM)
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.stage2_samples, self.stage3_samples) < 1:
            raise ConfigError(f"stage subsets must be >= 1, got {self.stage2_samples}, "
                              f"{self.stage3_samples}")
        if min(self.stage_epochs, self.llm_epochs) < 1 or self.lora_top_layers < 0:
            raise ConfigError(f"stage_epochs and llm_epochs must be >= 1 and lora_top_layers "
                              f">= 0, got {self.stage_epochs}, {self.llm_epochs}, "
                              f"{self.lora_top_layers}")
        if len(self.loss_weights) != 3 or min(self.loss_weights) < 0:
            raise ConfigError(f"loss_weights must be three non-negative numbers, "
                              f"got {self.loss_weights}")
        if not 0 <= self.budget <= 1:
            raise ConfigError(f"budget must be in [0, 1], got {self.budget}")
        if self.align_layers < 1:
            raise ConfigError(f"align_layers must be >= 1, got {self.align_layers}")


def layer_pairs(n_llm_layers: int, n_crm_states: int, count: int) -> list[tuple[int, int]]:
    """(LLM hidden-state index, CRM state index) pairs spread evenly over both depths; the
    last pair always joins the final layers (their decisions are what routing mixes)."""
    llm = np.linspace(n_llm_layers / count, n_llm_layers, count).round().astype(int)
    first = 1 if n_crm_states > 1 and count > 1 else n_crm_states - 1
    crm = np.linspace(first, n_crm_states - 1, count).round().astype(int)
    return list(zip(llm.tolist(), crm.tolist()))


class Alignment(nn.Module):
    """Linear projections g_llm, g_crm per layer pair into a shared space.

    L_align = mean_j || norm(g_llm(h_llm[S_j])) - norm(g_crm(h_crm[T_j])) ||^2. The unit
    normalisation is ours: with plain squared error both projections can shrink to zero and
    the loss vanishes without aligning anything.
    """

    def __init__(self, llm_dim: int, crm_dims: list[int], dim: int) -> None:
        super().__init__()
        self.g_llm = nn.ModuleList(nn.Linear(llm_dim, dim) for _ in crm_dims)
        self.g_crm = nn.ModuleList(nn.Linear(d, dim) for d in crm_dims)

    def forward(self, llm_states: list[torch.Tensor], crm_states: list[torch.Tensor]
                ) -> torch.Tensor:
        losses = []
        for g_l, g_c, h_l, h_c in zip(self.g_llm, self.g_crm, llm_states, crm_states):
            a = nn.functional.normalize(g_l(h_l.float()), dim=-1)  # (B, dim)
            b = nn.functional.normalize(g_c(h_c), dim=-1)
            losses.append((a - b).pow(2).sum(-1).mean())
        return torch.stack(losses).mean()


class CoReLLa(Method):
    provides = ("llm_adapter",)

    def __init__(self, name: str = "corella", config: CoReLLaConfig = CoReLLaConfig(),
                 train: TrainConfig = TrainConfig()) -> None:
        self.name = name
        self.config = config
        self.train = train

    # --- training --------------------------------------------------------------------------
    def fit(self, task: CTRTask) -> CoReLLa:
        cfg = self.config
        self.task_ = task
        self.log_: list[dict] = []
        self.timings_: dict[str, float] = {}
        self.stage_seconds_: dict[str, float] = {}  # sub-stage -> seconds, for the run log
        t0 = time.perf_counter()
        self.stage1_ = CRMMethod(f"{self.name}_crm", cfg.crm, cfg.crm_options,
                                 self.train).fit(task)
        self.timings_["stage1_seconds"] = time.perf_counter() - t0
        self.stage_seconds_["stage 1: CRM"] = self.timings_["stage1_seconds"]
        self.stage2_rows_, self.stage3_rows_ = self._subsets(task)
        self.rows_ = self._analysed_rows(task)
        self.lower_: dict[str, torch.Tensor] = {}  # prompt -> frozen layers' states
        if cfg.ablation:
            self._fit_independent(task)
        self._fit_joint(task)
        return self

    def _subsets(self, task: CTRTask) -> tuple[np.ndarray, np.ndarray]:
        stage2, stage3 = training_subsets(
            task, (self.config.stage2_samples, self.config.stage3_samples), self.config.seed)
        return stage2, stage3

    def _analysed_rows(self, task: CTRTask) -> dict[str, np.ndarray]:
        cfg = self.config
        return analysed_rows(task, cfg.analyse_valid, cfg.analyse_test, cfg.seed)

    def _new_llm(self) -> LLM:
        torch.manual_seed(self.config.seed)
        llm = LLM(self.config.llm)
        llm.add_lora(r=self.config.lora_r, alpha=self.config.lora_alpha,
                     top_layers=self.config.lora_top_layers)
        return llm

    def _fit_independent(self, task: CTRTask) -> None:
        """Ablation: no stage 2; the LLM learns from the stage-3 subset alone."""
        t0 = time.perf_counter()
        llm = self._new_llm()
        self._train_llm_alone(llm, task, self.stage3_rows_, stage="independent")
        self.timings_["independent_train_seconds"] = time.perf_counter() - t0
        self.stage_seconds_["ablation: LLM trained alone"] = (
            self.timings_["independent_train_seconds"])
        self.p_llm_independent_ = self._score(llm, task, "independent")
        del llm

    def _fit_joint(self, task: CTRTask) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        self.llm_ = self._new_llm()
        self.crm_ = copy.deepcopy(self.stage1_.model_)
        tensors = self.stage1_.tensors_
        probe = tensors.batch(torch.arange(2))
        _, crm_states = self.crm_(probe, return_hidden=True)
        self.pairs_ = layer_pairs(self.llm_.n_layers, len(crm_states), cfg.align_layers)
        self.align_ = Alignment(self.llm_.hidden_size,
                                [crm_states[j].shape[1] for _, j in self.pairs_], cfg.align_dim)
        self._train_joint(task)
        self.timings_["stage2_seconds"] = time.perf_counter() - t0
        self.stage_seconds_["stage 2: joint CRM + LLM with alignment"] = (
            self.timings_["stage2_seconds"])
        t0 = time.perf_counter()
        self._train_llm_alone(self.llm_, task, self.stage3_rows_, stage="stage3")
        self.timings_["stage3_seconds"] = time.perf_counter() - t0
        self.stage_seconds_["stage 3: LLM alone"] = self.timings_["stage3_seconds"]
        self.p_llm_ = self._score(self.llm_, task, "joint")
        self._score_crms(task)
        t0 = time.perf_counter()
        self.answers_ = self._answers(task)
        self.stage_seconds_["answers generated"] = time.perf_counter() - t0

    def _batches(self, rows: np.ndarray, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng(self.config.seed + 100 + epoch)
        order = rng.permutation(rows)
        size = self.config.llm_batch_size
        return [order[i:i + size] for i in range(0, len(order), size)]

    def _train_joint(self, task: CTRTask) -> None:
        """Stage 2: a*L_llm + b*L_crm + c*L_align on the stage-2 subset."""
        cfg = self.config
        a, b, c = cfg.loss_weights
        llm_layers = [i for i, _ in self.pairs_]
        crm_layers = [j for _, j in self.pairs_]
        seqs = dict(zip(self.stage2_rows_.tolist(),
                        self.llm_.tokenize(task.prompts(self.stage2_rows_))))
        params = [
            {"params": [p for p in self.llm_.model.parameters() if p.requires_grad],
             "lr": cfg.llm_lr},
            {"params": self.crm_.parameters(), "lr": cfg.crm_lr},
            {"params": self.align_.parameters(), "lr": cfg.llm_lr},
        ]
        optimiser = torch.optim.AdamW(params, weight_decay=0.0)
        # under torchrun: DDP over all three, each rank on its share of every batch
        run = distributed.data_parallel([p for group in params for p in group["params"]])

        def batch_loss(rows: np.ndarray, total: int) -> tuple[torch.Tensor, ...]:
            labels = torch.from_numpy(task.labels[rows])
            batch = self.stage1_.tensors_.batch(torch.from_numpy(rows))
            crm_logits, crm_states = self.crm_(batch, return_hidden=True)
            l_crm = nn.functional.binary_cross_entropy_with_logits(crm_logits, labels)
            l_llm, llm_states = self.llm_.click_loss([seqs[r] for r in rows.tolist()],
                                                     labels, llm_layers)
            l_align = self.align_(llm_states, [crm_states[j] for j in crm_layers])
            loss = a * l_llm + b * l_crm + c * l_align
            return loss * distributed.share_weight(len(rows), total), l_llm, l_crm, l_align

        self.llm_.model.train()
        self.crm_.train()
        step = 0
        for epoch in range(cfg.stage_epochs):
            for rows in tqdm(self._batches(self.stage2_rows_, epoch), desc="CoReLLa stage 2",
                             unit="batch", leave=False, disable=not distributed.current().main):
                mine = distributed.batch_share(rows)
                if mine is None:
                    continue
                loss, l_llm, l_crm, l_align = run(batch_loss, mine, len(rows))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                step += 1
                weight = distributed.share_weight(len(mine), len(rows))
                values = distributed.all_mean_dict({  # one collective for the four
                    "loss": float(loss.detach()) / weight, "llm_loss": float(l_llm.detach()),
                    "crm_loss": float(l_crm.detach()), "align_loss": float(l_align.detach())},
                    len(mine))
                self.log_ += [{"stage": "stage2", "epoch": step, "metric": metric,
                               "value": value} for metric, value in values.items()]
        self.llm_.model.eval()
        self.crm_.eval()

    def _train_llm_alone(self, llm: LLM, task: CTRTask, rows_all: np.ndarray,
                         stage: str) -> None:
        cfg = self.config
        training = AdapterTraining(lr=cfg.llm_lr, batch_size=cfg.llm_batch_size,
                                   epochs=cfg.llm_epochs, top_layers=cfg.lora_top_layers,
                                   length_sorted=cfg.length_sorted, seed=cfg.seed)

        def log(step: int, loss: float) -> None:
            self.log_.append({"stage": stage, "epoch": step, "metric": "llm_loss",
                              "value": loss})

        prompts = task.prompts(rows_all)
        # the ablation and stage 3 learn from the same prompts with the same frozen layers:
        # one cache (by prompt) serves both, and is handed to the run's later LLM methods
        shared = self.lower_ if self._training_states_fit(llm, len(prompts)) else None
        train_adapter(llm, llm.tokenize(prompts), task.labels[rows_all], training,
                      desc=f"CoReLLa {stage}", on_step=log, lower=shared,
                      keys=prompts if shared is not None else None)

    # --- inference -------------------------------------------------------------------------
    def _score(self, llm: LLM, task: CTRTask, what: str) -> dict[str, np.ndarray]:
        """P(click) of the analysed rows; the joint LLM also keeps its state at the last
        aligned layer (the maps show it before and after the alignment projection)."""
        llm.for_inference()
        self.n_llm_layers_, self.llm_hidden_ = llm.n_layers, llm.hidden_size
        out = {}
        layers = [self.pairs_[-1][0]] if what == "joint" else []
        self.llm_states_: dict[str, np.ndarray] = {}
        t0 = time.perf_counter()
        for split in EVAL_SPLITS:
            t_split = time.perf_counter()
            prompts = task.prompts(self.rows_[split])
            cap = self.config.map_states  # states cost N x hidden floats: keep a bounded part
            if self._shares_lower(layers):
                # both LLMs differ only in their top layers: the frozen layers run once
                # per prompt for the two of them
                out[split], states = llm.score_above(prompts, self.split_layer_,
                                                     self.lower_, layers, progress=True)
                states = [s[:cap] for s in states]
            else:
                p_kept, states = llm.score_with_states(prompts[:cap], layers, progress=True)
                out[split] = np.concatenate([p_kept, llm.score(prompts[cap:], progress=True)])
            if states:
                self.llm_states_[split] = states[0]
            self.stage_seconds_[f"scoring: {what} LLM on {len(prompts):,} {split}"] = (
                time.perf_counter() - t_split)
        n = sum(len(r) for r in self.rows_.values())
        self.timings_[f"{what}_llm_ms_per_sample"] = 1e3 * (time.perf_counter() - t0) / n
        return out

    def _training_states_fit(self, llm: LLM, n_prompts: int) -> bool:
        """Whether the LLM-alone prompts' frozen states fit beside the analysed ones' within
        lower_cache_mb (the run's shared cache; LoRA in the top layers only)."""
        cfg = self.config
        prompts = n_prompts + sum(len(r) for r in self.rows_.values())
        return bool(cfg.lora_top_layers) and (
            prompts * cfg.llm.max_length * llm.hidden_size * 4 <= cfg.lower_cache_mb * 2**20)

    def _shares_lower(self, layers: list[int]) -> bool:
        """Whether scoring may keep the frozen layers' states for both LLMs: LoRA in the top
        layers only, the kept layer states above them, and the states within lower_cache_mb."""
        top = self.config.lora_top_layers
        if not top:
            return False
        self.split_layer_ = self.n_llm_layers_ - top
        tokens = sum(len(r) for r in self.rows_.values()) * self.config.llm.max_length
        fits = tokens * self.llm_hidden_ * 4 <= self.config.lower_cache_mb * 2**20
        return fits and all(j >= self.split_layer_ for j in layers)

    def _score_crms(self, task: CTRTask) -> None:
        tensors = self.stage1_.tensors_
        t0 = time.perf_counter()
        self.p_crm_ = {s: crm_predict(self.crm_, tensors, r) for s, r in self.rows_.items()}
        n = sum(len(r) for r in self.rows_.values())
        self.stage_seconds_["scoring: CRM"] = time.perf_counter() - t0
        self.timings_["crm_ms_per_sample"] = 1e3 * (time.perf_counter() - t0) / n
        self.p_crm_stage1_ = {s: self.stage1_.probs_[s][np.searchsorted(task.index(s), r)]
                              for s, r in self.rows_.items()}

    @torch.no_grad()
    def item_vectors(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per item (mean over its analysed samples): the last aligned LLM and CRM layer
        states as they are, and their alignment projections g_llm / g_crm (unit-normalised,
        as the loss compares them). Space name -> (item ids, vectors)."""
        rows = np.concatenate([self.rows_[s][:self.config.map_states] for s in EVAL_SPLITS])
        llm_state = torch.from_numpy(np.concatenate([self.llm_states_[s] for s in EVAL_SPLITS]))
        j = self.pairs_[-1][1]
        batch = self.stage1_.tensors_.batch(torch.from_numpy(rows))
        self.crm_.eval()
        crm_state = self.crm_(batch, return_hidden=True)[1][j].float()
        spaces = {
            "LLM state": llm_state,
            "CRM state": crm_state,
            "aligned LLM": nn.functional.normalize(self.align_.g_llm[-1](llm_state), dim=-1),
            "aligned CRM": nn.functional.normalize(self.align_.g_crm[-1](crm_state), dim=-1),
        }
        items = self.task_.samples["item"].to_numpy()[rows]
        out = {}
        for space, vectors in spaces.items():
            mean = pd.DataFrame(vectors.numpy()).groupby(items, sort=True).mean()
            out[f"{self.name}: {space}"] = (mean.index.to_numpy(), mean.to_numpy(np.float32))
        return out

    def _answers(self, task: CTRTask) -> dict[int, str]:
        rows = self.rows_["test"][: self.config.answers]
        if len(rows) == 0:
            return {}
        texts = self.llm_.generate(task.prompts(rows), max_new_tokens=8)
        return dict(zip(rows.tolist(), texts))

    # --- results ---------------------------------------------------------------------------
    def result(self) -> MethodResult:
        return self.results()[0]

    def artifacts(self) -> dict[str, Any]:
        """Its final LLM's adapter (after stage 3), for the later methods of the run."""
        cfg = self.config
        shared = {"llm_adapter": LLMAdapter(cfg.llm, cfg.lora_r, cfg.lora_alpha,
                                            self.llm_.lora_state(), self.name,
                                            cfg.lora_top_layers)}
        if self.lower_:  # the analysed prompts' frozen states, handed over (not kept twice)
            shared["llm_lower_states"] = LowerStates(cfg.llm.model, self.split_layer_,
                                                     cfg.llm.max_length, self.lower_)
            self.lower_ = {}
        return shared

    def results(self) -> list[MethodResult]:
        cfg = self.config
        base = {"config": plain_config(asdict(cfg)), "pairs": self.pairs_,
                "stage2_rows": len(self.stage2_rows_), "stage3_rows": len(self.stage3_rows_)}
        crm_ms = self.timings_["crm_ms_per_sample"]
        llm_ms = self.timings_["joint_llm_ms_per_sample"]
        cost = {**self.timings_, "crm_ms_per_sample": crm_ms, "llm_ms_per_sample": llm_ms,
                "train_seconds": sum(v for k, v in self.timings_.items()
                                     if k.endswith("_seconds"))}  # the training stages
        out = []
        threshold = best_threshold(self.p_crm_["valid"], self.p_llm_["valid"],
                                   self.task_.labels[self.rows_["valid"]])
        out.append(self._routed(self.name, self.p_crm_, self.p_llm_, threshold,
                                {**base, "threshold": threshold, "rule": "best valid AUC"},
                                cost, diagnostics=True, answers=self.answers_))
        out[-1].description = ("CoReLLa: the LLM answers where the CRM's entropy is above the "
                               "threshold with the best valid AUC, the CRM elsewhere")
        budget_t = threshold_for_share(binary_entropy(self.p_crm_["test"]), cfg.budget)
        out.append(self._routed(f"{self.name}_budget{round(cfg.budget * 100)}", self.p_crm_,
                                self.p_llm_, budget_t,
                                {**base, "threshold": budget_t, "rule": f"{cfg.budget:.0%} "
                                 "most uncertain test samples to the LLM"}, cost))
        out[-1].description = (f"CoReLLa at a fixed LLM budget: the {cfg.budget:.0%} most "
                               "uncertain samples (by CRM entropy) go to the LLM")
        out.append(self._single(f"{self.name}_llm", "llm", self.p_llm_, base,
                                {"infer_ms_per_1k": 1e3 * llm_ms, "llm_calls_per_1k": 1000.0,
                                 "train_seconds": cost["train_seconds"]}))
        out[-1].description = ("CoReLLa's LLM alone (after stages 2 and 3) on every analysed "
                               "sample: the 'no routing' ablation, LLM side")
        crm_seconds = self.timings_["stage1_seconds"] + self.timings_["stage2_seconds"]
        out.append(self._single(f"{self.name}_crm", "crm", self.p_crm_, base,
                                {"infer_ms_per_1k": 1e3 * crm_ms, "llm_calls_per_1k": 0.0,
                                 "train_seconds": crm_seconds}))
        out[-1].description = ("CoReLLa's CRM alone (after the joint stage 2) on every "
                               "analysed sample: the 'no routing' ablation, CRM side")
        if cfg.ablation:
            ind_ms = self.timings_["independent_llm_ms_per_sample"]
            ind_cost = {**cost, "llm_ms_per_sample": ind_ms}
            t_ind = best_threshold(self.p_crm_stage1_["valid"], self.p_llm_independent_["valid"],
                                   self.task_.labels[self.rows_["valid"]])
            out.append(self._routed(f"{self.name}_no_align", self.p_crm_stage1_,
                                    self.p_llm_independent_, t_ind,
                                    {**base, "threshold": t_ind, "ablation": "without stage 2"},
                                    ind_cost, diagnostics=True))
            out[-1].description = ("ablation without stage 2: the stage-1 CRM routed to an LLM "
                                   "trained on its own, with no alignment to the CRM")
            out.append(self._single(f"{self.name}_llm_independent", "llm",
                                    self.p_llm_independent_, base,
                                    {"infer_ms_per_1k": 1e3 * ind_ms,
                                     "llm_calls_per_1k": 1000.0,
                                     "train_seconds": self.timings_.get(
                                         "independent_train_seconds")}))
            out[-1].description = ("the independently trained LLM (no stage 2) alone on every "
                                   "analysed sample")
        out[0].stage_seconds = dict(self.stage_seconds_)
        out[0].weights = {
            f"{self.name}_lora": self.llm_.lora_state(),
            f"{self.name}_crm": {k: v.detach().contiguous()
                                 for k, v in self.crm_.state_dict().items()},
            f"{self.name}_align": {k: v.detach().contiguous()
                                   for k, v in self.align_.state_dict().items()},
        }
        out[0].training_log = pd.DataFrame(self.log_, columns=["stage", "epoch", "metric",
                                                               "value"])
        out[0].item_vectors = self.item_vectors()
        return out

    def _routed(self, name: str, p_crm: dict, p_llm: dict, threshold: float,
                config: dict, cost: dict, diagnostics: bool = False,
                answers: dict[int, str] | None = None) -> MethodResult:
        probs, frames = {}, []
        shares = {}
        for split in EVAL_SPLITS:
            entropy = binary_entropy(p_crm[split])
            mask = entropy > threshold
            probs[split] = mixed_probs(p_crm[split], p_llm[split], mask)
            shares[split] = float(mask.mean()) if len(mask) else 0.0
            rows = self.rows_[split]
            frames.append(pd.DataFrame({
                "sample_id": self.task_.samples["sample_id"].to_numpy()[rows],
                "split": split, "label": self.task_.labels[rows].astype(np.float64),
                "p_crm": p_crm[split], "p_llm": p_llm[split], "entropy": entropy,
                "answer": [(answers or {}).get(r) for r in rows.tolist()]}))
        llm_calls = 1000.0 * shares["test"]
        result = MethodResult(
            name=name, kind="hybrid", probs=probs, rows=dict(self.rows_),
            config={**config, "llm_share_test": shares["test"]},
            cost={**cost, "llm_calls_per_1k": llm_calls,
                  "infer_ms_per_1k": 1e3 * cost["crm_ms_per_sample"]
                  + llm_calls * cost["llm_ms_per_sample"]})
        if diagnostics:
            result.diagnostics = {"routing": pd.concat(frames, ignore_index=True)}
        return result

    def _single(self, name: str, kind: str, probs: dict, config: dict,
                cost: dict) -> MethodResult:
        return MethodResult(name=name, kind=kind, probs=dict(probs), rows=dict(self.rows_),
                            config=config, cost=cost)


def best_threshold(p_crm: np.ndarray, p_llm: np.ndarray, labels: np.ndarray,
                   grid: int = 51) -> float:
    """The entropy threshold whose routed mix has the best AUC on these (validation) samples;
    ties go to the higher threshold (fewer LLM calls)."""
    entropy = binary_entropy(p_crm)
    best_t, best_auc = 1.0, auc(labels, p_crm)
    for t in np.quantile(entropy, np.linspace(0, 1, grid))[::-1]:
        value = auc(labels, mixed_probs(p_crm, p_llm, entropy > t))
        if value > best_auc + 1e-12:
            best_t, best_auc = float(t), value
    return best_t
