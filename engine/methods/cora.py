"""CoRA (seed 004): a frozen LLM whose adapter weights are generated per (user, item).

A collaborative-filtering model (matrix factorisation by default, or the run's CRM's own
user and item embeddings) is trained on the training split and frozen. For each sample,
engine.models.collab_weights turns its pair of embeddings into A(u, i) and adds
(alpha / r) * (x A) P to the chosen projections of the LLM; only the generator and the P
matrices learn, by BCE on P(yes) against the label with the usual yes/no prompt. P starts at
zero, so before training CoRA is the base LLM exactly.

Stored: CoRA and the base LLM on the analysed samples (the same seeded subset CoReLLa draws),
MF alone on every sample, CoRA with the pair's embeddings zeroed or with users shuffled (the
weights no longer depend on the pair: what is left is a plain adapter), and, as a trained
variant, CoRA with the CRM's embeddings instead of MF's. The `deltas` table keeps per sample
p_cora, p_base, the MF score, |e_u|, |e_i|, the delta norm per module type and A's cosine to
the mean A.
"""

from __future__ import annotations

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
    Method,
    MethodResult,
    analysed_rows,
    plain_config,
    run_crm,
    training_subsets,
)
from engine.models import crm_config
from engine.models.adapter_training import batches
from engine.models.collab_weights import CollabConfig, CollaborativeWeights
from engine.models.llm import LLM, LLMConfig
from engine.models.mf import MatrixFactorisation
from engine.models.trainer import TaskTensors, TrainConfig, fit, predict

CF_SOURCES = ("mf", "crm")
VARIANTS = ("crm",)  # trained variants besides the headline


@dataclass(frozen=True)
class CoRAConfig:
    cf: str = "mf"  # where the headline's e_u, e_i come from: "mf" or "crm" (the run's CRM)
    mf_dim: int = 64
    crm: str = "dcnv2"  # the CRM whose embeddings the "crm" source and variant read
    crm_options: dict[str, Any] = field(default_factory=dict)
    llm: LLMConfig = LLMConfig(score_dtype="float32")
    collab: CollabConfig = CollabConfig()
    train_samples: int = 192  # training prompts (seeded subset of the training split)
    # skip the first k of the seeded order the LLM methods cut their prompts from: the demo
    # skips CoReLLa's stage-2 prompts to train on its stage-3 ones, whose frozen states the
    # run already holds
    train_skip: int = 0
    epochs: int = 2
    # 1e-3 learnt one adapter for every pair on ML-100k (A's cosine to the mean A 0.98, own
    # pair = shuffled users); 3e-3 learns a pair signal (tests/ and README)
    lr: float = 3e-3
    batch_size: int = 8
    analyse_valid: int = 200
    analyse_test: int = 500
    # keep the frozen layers' states of every prompt up to this size (else recompute them per
    # batch: the full profile's 110,000 prompts would need ~60 GB)
    lower_cache_mb: int = 2048
    variants: tuple[str, ...] = VARIANTS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.cf not in CF_SOURCES:
            raise ConfigError(f"cf must be one of {', '.join(CF_SOURCES)}, got {self.cf!r}")
        if self.train_skip < 0:
            raise ConfigError(f"train_skip must be >= 0, got {self.train_skip}")
        if self.mf_dim < 1 or self.train_samples < 2 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"bad CoRA sizes: mf_dim={self.mf_dim}, train_samples="
                              f"{self.train_samples}, epochs={self.epochs}, batch_size="
                              f"{self.batch_size}")
        if self.lr <= 0 or min(self.analyse_valid, self.analyse_test) < 1:
            raise ConfigError("lr must be > 0 and analyse_valid/analyse_test >= 1")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ConfigError(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")


class CollaborativeSource:
    """Frozen per-sample (e_u, e_i) from a trained model's user and item tables."""

    def __init__(self, users: nn.Embedding, items: nn.Embedding, user_field: int,
                 item_field: int) -> None:
        self.users, self.items = users.weight.detach(), items.weight.detach()
        self.user_field, self.item_field = user_field, item_field

    @property
    def dim(self) -> int:
        return self.users.shape[1]

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = batch["sparse"]
        return self.users[sparse[:, self.user_field]], self.items[sparse[:, self.item_field]]


class CoRA(Method):
    def __init__(self, name: str = "cora", config: CoRAConfig = CoRAConfig(),
                 train: TrainConfig = TrainConfig()) -> None:
        self.name = name
        self.config = config
        self.train = train

    # --- fit ------------------------------------------------------------------------------
    def fit(self, task: CTRTask) -> CoRA:
        cfg = self.config
        self.task_ = task
        self.tensors_ = TaskTensors(task)
        self.stage_seconds_: dict[str, float] = {}
        self.log_: list[dict] = []
        t0 = time.perf_counter()
        self.mf_, self.p_mf_, self.mf_run_ = self._fit_mf(task)
        self.stage_seconds_["MF"] = time.perf_counter() - t0
        sources = {"mf": CollaborativeSource(self.mf_.users, self.mf_.items, 0,
                                             task.schema.item_field)}
        if cfg.cf == "crm" or "crm" in cfg.variants:
            t0 = time.perf_counter()
            sources["crm"] = self._crm_source(task)
            self.stage_seconds_["CRM embeddings"] = time.perf_counter() - t0
        # train_samples of the seeded order CoReLLa cuts its LLM subsets from, after the
        # first train_skip: in a run with CoReLLa (same seed), its stage-3 prompts' frozen
        # states come with the run
        self.train_rows_ = training_subsets(task, (cfg.train_skip, cfg.train_samples),
                                            cfg.seed)[1]
        self.rows_ = analysed_rows(task, cfg.analyse_valid, cfg.analyse_test, cfg.seed)
        self.llm_ = self._llm()
        self.lower_ = self._shared_lower()
        prompts = [*task.prompts(self.train_rows_),
                   *(p for s in EVAL_SPLITS for p in task.prompts(self.rows_[s]))]
        bytes_needed = len(prompts) * cfg.llm.max_length * self.llm_.hidden_size * 4
        self.cache_lower_ = bool(self.split_) and bytes_needed <= cfg.lower_cache_mb * 2**20
        if not self.split_:
            self.lower_source_ = "none: weights in every layer, the whole LLM runs"
        elif not self.cache_lower_:
            self.lower_source_ = "recomputed per batch (beyond lower_cache_mb)"
        if self.cache_lower_:
            t0 = time.perf_counter()
            # training batches give any rank any training prompt (every rank holds them all);
            # each rank scores only its share of the analysed prompts
            todo = self.llm_.fill_lower_everywhere(task.prompts(self.train_rows_), self.split_,
                                                   self.lower_, progress=True)
            analysed = [task.prompts(self.rows_[s]) for s in EVAL_SPLITS]
            todo += self._fill_lower([ps[i] for ps in analysed for i in self._scoring_share(ps)])
            self.stage_seconds_[f"frozen layers of {todo:,} prompts "
                                f"({len(set(prompts)) - todo:,} from the run)"] = (
                time.perf_counter() - t0)
        self.weights_: dict[str, CollaborativeWeights] = {}
        self.sources_ = sources
        for variant, source in (("cora", cfg.cf), *((v, "crm") for v in cfg.variants)):
            t0 = time.perf_counter()
            self.weights_[variant] = self._train_weights(task, sources[source], variant)
            self.stage_seconds_[f"train {variant} ({source} embeddings, "
                                f"{len(self.train_rows_)} prompts x {cfg.epochs})"] = (
                time.perf_counter() - t0)
        t0 = time.perf_counter()
        self.scores_ = self._score_all(task)
        self.stage_seconds_["scoring the analysed samples"] = time.perf_counter() - t0
        return self

    def _fit_mf(self, task: CTRTask) -> tuple[MatrixFactorisation, dict, Any]:
        torch.manual_seed(self.train.seed)
        mf = MatrixFactorisation(task.schema, self.config.mf_dim)
        run = fit(mf, task, self.train, name=f"{self.name}:mf", tensors=self.tensors_)
        t0 = time.perf_counter()
        probs = {s: predict(mf, self.tensors_, task.index(s)) for s in EVAL_SPLITS}
        self.mf_infer_ms_per_1k_ = 1e6 * (time.perf_counter() - t0) / max(
            sum(len(p) for p in probs.values()), 1)
        for p in mf.parameters():
            p.requires_grad_(False)
        for row in run.log:
            self.log_ += [{"stage": "mf", "epoch": row["epoch"], "metric": k, "value": v}
                          for k, v in row.items() if k != "epoch"]
        return mf, probs, run

    def _crm_source(self, task: CTRTask) -> CollaborativeSource:
        """The user and item tables of the run's CRM of this configuration (no second
        training when an earlier method of the run trained it), else of one trained here."""
        cfg = self.config
        model = run_crm(cfg.crm, crm_config(cfg.crm, cfg.crm_options), self.train, task,
                        self.tensors_, getattr(self, "artifacts_in_", {}), self.name)
        tables = model.embedding.tables
        return CollaborativeSource(tables[0], tables[task.schema.item_field], 0,
                                   task.schema.item_field)

    def _llm(self) -> LLM:
        torch.manual_seed(self.config.seed)
        llm = LLM(self.config.llm)
        for p in llm.model.parameters():
            p.requires_grad_(False)
        llm.model.float().eval()  # trained and scored in float32: p_base and p_cora comparable
        return llm

    @property
    def split_(self) -> int:
        top = self.config.collab.top_layers
        return self.llm_.n_layers - top if top else 0

    def _shared_lower(self) -> dict[str, torch.Tensor]:
        """The frozen states of an earlier LLM method of the run (CoReLLa, LoRA in its top
        layers: its analysed and training prompts), run up to this method's first weighted
        layer when that is higher; else an empty cache this method fills."""
        shared = getattr(self, "artifacts_in_", {}).get("llm_lower_states")
        llm = self.config.llm
        if not (self.split_ and shared is not None
                and shared.usable(llm.model, self.split_, llm.max_length)):
            self.lower_source_ = "computed here"
            return {}
        states = shared.as_dtype(torch.float32)
        kinds = " and ".join(sorted({str(s.dtype).removeprefix("torch.")
                                     for s in shared.states.values()}))
        self.lower_source_ = (f"read from the run ({len(states):,} prompts' states, computed "
                              f"by an earlier LLM method in {kinds}")
        if shared.split < self.split_:
            t0 = time.perf_counter()
            states = self.llm_.lift_lower(states, shared.split, self.split_, progress=True)
            self.stage_seconds_[f"layers {shared.split}-{self.split_ - 1} of the run's "
                                f"{len(states):,} prompts"] = time.perf_counter() - t0
            self.lower_source_ += f", run through layers {shared.split}-{self.split_ - 1} here"
        self.lower_source_ += ")"
        return states

    # --- the LLM with generated weights -----------------------------------------------------
    def _logits(self, prompts: list[str], a: torch.Tensor | None,
                weights: CollaborativeWeights | None) -> torch.Tensor:
        """Click logits of prompts in one batch, with weights active for A (B, H, r)."""
        llm = self.llm_
        if self.split_:
            if self.cache_lower_:
                self._fill_lower(prompts)
                states = [self.lower_[p] for p in prompts]
            else:
                states = llm.lower_states(llm.tokenize(prompts), self.split_)

            def run() -> torch.Tensor:
                return llm.logit_from_lower(states, self.split_)[0]
        else:
            seqs = llm.tokenize(prompts)

            def run() -> torch.Tensor:
                return llm.forward_ids(seqs)[0]
        if a is None or weights is None:
            return run()
        with weights.active(a):
            return run()

    def _fill_lower(self, prompts: list[str]) -> int:
        return self.llm_.fill_lower(prompts, self.split_, self.lower_, progress=True)

    def _pair(self, source: CollaborativeSource, rows: np.ndarray
              ) -> tuple[torch.Tensor, torch.Tensor]:
        return source(self.tensors_.batch(torch.from_numpy(rows)))

    def _train_weights(self, task: CTRTask, source: CollaborativeSource, variant: str
                       ) -> CollaborativeWeights:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        weights = CollaborativeWeights(self.llm_._backbone(), source.dim, cfg.collab)
        weights.generator.standardise(source.users, source.items)
        optimiser = torch.optim.AdamW(weights.parameters(), lr=cfg.lr)
        run = distributed.data_parallel(list(weights.parameters()))  # DDP under torchrun
        rows = self.train_rows_
        prompts = task.prompts(rows)
        lengths = np.array([len(s) for s in self.llm_.tokenize(prompts)])
        labels = torch.from_numpy(task.labels[rows].astype(np.float32))

        def batch_loss(part: np.ndarray, total: int) -> torch.Tensor:
            e_u, e_i = self._pair(source, rows[part])
            a = weights.generator(e_u, e_i)
            logit = self._logits([prompts[i] for i in part], a, weights)
            loss = nn.functional.binary_cross_entropy_with_logits(
                logit, labels[torch.from_numpy(part)])
            return loss * distributed.share_weight(len(part), total)

        weights.train()
        step = 0
        for epoch in range(cfg.epochs):
            for part in tqdm(batches(lengths, cfg.batch_size, epoch, cfg.seed, True),
                             desc=f"CoRA {variant} epoch {epoch + 1}/{cfg.epochs}",
                             unit="batch", leave=False, disable=not distributed.current().main):
                mine = distributed.batch_share(part)
                if mine is None:
                    continue
                loss = run(batch_loss, mine, len(part))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                step += 1
                value = float(loss.detach()) / distributed.share_weight(len(mine), len(part))
                self.log_.append({"stage": variant, "epoch": step, "metric": "llm_loss",
                                  "value": distributed.all_mean(value, len(mine))})
        weights.eval()
        return weights

    @torch.no_grad()
    def _scores(self, prompts: list[str], rows: np.ndarray, weights: CollaborativeWeights | None,
                source: CollaborativeSource | None, pair: str = "own",
                ) -> tuple[np.ndarray, torch.Tensor | None]:
        """P(yes) per prompt (batched by length), and A per prompt when weights are given.
        pair: "own" (the sample's embeddings), "zero" (both zeroed) or "shuffled" (another
        analysed sample's user, seeded)."""
        out = np.zeros(len(prompts))
        a_all = None
        e_u = e_i = None
        if weights is not None:
            e_u, e_i = self._pair(source, rows)
            if pair == "zero":
                e_u, e_i = torch.zeros_like(e_u), torch.zeros_like(e_i)
            elif pair == "shuffled":
                e_u = e_u[torch.from_numpy(np.random.default_rng(self.config.seed + 2)
                                           .permutation(len(rows)))]
            a_all = weights.generator(e_u, e_i)
        size = self.config.llm.batch_size
        order = self._scoring_share(prompts)  # under torchrun, this rank's share
        what = "base" if weights is None else pair
        for start in tqdm(range(0, len(order), size), desc=f"CoRA scoring ({what})",
                          unit="batch", leave=False,
                          disable=len(order) <= size or not distributed.current().main):
            part = order[start:start + size]
            a = a_all[torch.from_numpy(part)] if a_all is not None else None
            logit = self._logits([prompts[i] for i in part], a, weights)
            out[part] = torch.sigmoid(logit).double().numpy()
        if distributed.current().active:
            out = distributed.assemble(len(out), order, out[order])
        return out, a_all

    @staticmethod
    def _scoring_share(prompts: list[str]) -> np.ndarray:
        """Positions of the prompts this rank scores, length-sorted (all in one process)."""
        return distributed.share(np.argsort([len(p) for p in prompts], kind="stable"))

    def _score_all(self, task: CTRTask) -> dict[str, dict[str, np.ndarray]]:
        cfg = self.config
        scores: dict[str, dict[str, np.ndarray]] = {k: {} for k in (
            "base", "cora", "zero_pair", "shuffled_user", *cfg.variants)}
        self.a_: dict[str, torch.Tensor] = {}
        headline = self.sources_[cfg.cf]
        for split in EVAL_SPLITS:
            rows = self.rows_[split]
            prompts = task.prompts(rows)
            scores["base"][split] = self._scores(prompts, rows, None, None)[0]
            scores["cora"][split], self.a_[split] = self._scores(
                prompts, rows, self.weights_["cora"], headline)
            for pair, key in (("zero", "zero_pair"), ("shuffled", "shuffled_user")):
                scores[key][split] = self._scores(prompts, rows, self.weights_["cora"],
                                                  headline, pair)[0]
            for variant in cfg.variants:
                scores[variant][split] = self._scores(prompts, rows, self.weights_[variant],
                                                      self.sources_["crm"])[0]
        return scores

    # --- analysis -------------------------------------------------------------------------
    @torch.no_grad()
    def deltas(self) -> pd.DataFrame:
        """Per analysed sample: both probabilities, the MF score, the embedding norms, the
        delta norm per module type (mean over layers) and A's cosine to the mean A."""
        weights = self.weights_["cora"]
        source = self.sources_[self.config.cf]
        mean_a = torch.cat([self.a_[s] for s in EVAL_SPLITS]).mean(0).flatten()
        frames = []
        for split in EVAL_SPLITS:
            rows = self.rows_[split]
            e_u, e_i = self._pair(source, rows)
            a = self.a_[split]
            norms = weights.delta_norms(a)
            positions = np.searchsorted(self.task_.index(split), rows)
            frame = pd.DataFrame({
                "sample_id": self.task_.samples["sample_id"].to_numpy()[rows], "split": split,
                "label": self.task_.labels[rows].astype(float),
                "p_cora": self.scores_["cora"][split], "p_base": self.scores_["base"][split],
                "p_mf": self.p_mf_[split][positions],
                "user_norm": e_u.norm(dim=-1).numpy(), "item_norm": e_i.norm(dim=-1).numpy(),
                "a_cos_mean": nn.functional.cosine_similarity(
                    a.flatten(1), mean_a[None], dim=-1).numpy()})
            for module, values in norms.items():
                frame[f"delta_{module}"] = values.numpy()
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def item_vectors(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """MF's item embeddings (every item) and each analysed item's mean A(u, i)."""
        items = self.task_.items
        out = {f"{self.name}: MF items": (
            items["item"].to_numpy(),
            self.mf_.items.weight[torch.as_tensor(items["idx"].to_numpy().copy())]
            .detach().numpy())}
        rows = np.concatenate([self.rows_[s] for s in EVAL_SPLITS])
        a = torch.cat([self.a_[s] for s in EVAL_SPLITS]).flatten(1).numpy()
        mean = pd.DataFrame(a).groupby(self.task_.samples["item"].to_numpy()[rows],
                                       sort=True).mean()
        out[f"{self.name}: mean A(u, i)"] = (mean.index.to_numpy(), mean.to_numpy(np.float32))
        return out

    # --- results --------------------------------------------------------------------------
    def results(self) -> list[MethodResult]:
        cfg = self.config
        n = sum(len(r) for r in self.rows_.values())
        scoring = self.stage_seconds_["scoring the analysed samples"]
        per_1k = 1e6 * scoring / max(n, 1) / (4 + len(cfg.variants))  # per scored model
        train_seconds = sum(v for k, v in self.stage_seconds_.items() if k.startswith("train"))
        base = {"config": plain_config(asdict(cfg)), "train_samples": len(self.train_rows_),
                "lower_states": self.lower_source_, "mf_best_epoch": self.mf_run_.best_epoch}
        llm_cost = {"infer_ms_per_1k": per_1k, "llm_calls_per_1k": 1000.0,
                    "train_seconds": train_seconds}
        out = []
        for key, name, kind in (("cora", self.name, "llm"), ("base", f"{self.name}_base", "llm"),
                                ("zero_pair", f"{self.name}_zero_pair", "llm"),
                                ("shuffled_user", f"{self.name}_shuffled_user", "llm"),
                                *((v, f"{self.name}_{v}", "llm") for v in cfg.variants)):
            out.append(MethodResult(
                name=name, kind=kind, probs=self.scores_[key], rows=dict(self.rows_),
                config={**base, "variant": key}, cost=dict(llm_cost),
                description=DESCRIPTIONS[key].format(cf=cfg.cf.upper(), crm=cfg.crm)))
        out.append(MethodResult(
            name=f"{self.name}_mf", kind="crm", probs=self.p_mf_,
            config={**base, "variant": "mf"},
            cost={"train_seconds": self.mf_run_.seconds, "llm_calls_per_1k": 0.0,
                  "infer_ms_per_1k": self.mf_infer_ms_per_1k_},
            description=DESCRIPTIONS["mf"].format(dim=cfg.mf_dim)))
        head = out[0]
        head.training_log = pd.DataFrame(self.log_, columns=["stage", "epoch", "metric",
                                                             "value"])
        head.diagnostics = {"deltas": self.deltas()}
        head.stage_seconds = dict(self.stage_seconds_)
        head.item_vectors = self.item_vectors()
        # stems the live scorer reads (engine.scoring): each trained variant's generator
        # and P, and the headline's embedding tables (MF's or the CRM's)
        head.weights = {f"{self.name}_generated_{variant}": {
            k: v.detach().contiguous() for k, v in w.state_dict().items()}
            for variant, w in self.weights_.items()}
        source = self.sources_[cfg.cf]
        head.weights[f"{self.name}_pair_tables"] = {"users": source.users.contiguous(),
                                                    "items": source.items.contiguous()}
        return out

    def result(self) -> MethodResult:
        return self.results()[0]


DESCRIPTIONS = {
    "cora": "CoRA: the frozen LLM with adapter weights generated per (user, item) from {cf} "
            "embeddings",
    "base": "CoRA's base LLM: the same prompts with no generated weights (zero-shot)",
    "zero_pair": "CoRA ablation: the user and item embeddings zeroed, so the generated weights "
                 "no longer depend on the pair (a plain adapter)",
    "shuffled_user": "CoRA ablation: each sample's user embedding swapped for another "
                     "analysed sample's (seeded)",
    "crm": "CoRA with the {crm}'s user and item embeddings instead of MF's",
    "mf": "matrix factorisation alone (dimension {dim}): CoRA's collaborative model",
}
