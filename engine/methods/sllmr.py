"""S-LLMR (seed 002): the LLM as a training-time teacher for the CRM, through a gate.

For a seeded set of users, the LLM scores candidate items after one shared prefix (template A
up to the target, with the user's history at an anchor training sample): the user's later
training items (labelled) and popular and long-tail items the user never rated (unlabelled).
Within a user, the K pairs the teacher orders most clearly (largest P(yes) gaps) regularise
the CRM's logits s:

    L = L_rec + lambda * mean over sampled pairs of alpha_uij * max(0, m - (s_ui - s_uj))

with alpha_ui = sigmoid(w . [Cold(u), Tail(i), q_ui] + b) and alpha_uij the mean of its two
ends. No LLM at inference.

Two departures from the paper (README design notes say why):
- dL/dalpha >= 0, so a gate learned jointly with this loss can only shrink toward 0:
  `gate="joint"` keeps that form as the ablation that shows the collapse; the default
  `gate="reliability"` fits the same logistic form by BCE to predict whether the teacher's
  order of a labelled within-user pair agrees with the labels, and applies it with
  stop-gradient.
- Every training sample has at least `min_history` earlier ratings, so Cold(u) is "history
  length in the bottom `cold_share` of the training samples' history lengths".

Every variant starts from the same seed and initialisation as the plain backbone, so the
"none" variant is exactly that CRM and a zero gate reproduces it bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from engine.data.task import CTRTask
from engine.errors import ConfigError
from engine.methods.base import (
    EVAL_SPLITS,
    Method,
    MethodResult,
    plain_config,
    run_llm,
    train_variant,
)
from engine.metrics import auc
from engine.models import build_crm, crm_config
from engine.models.generation import DiskCache
from engine.models.llm import LLM, LLMConfig
from engine.models.regularisers import TeacherPoints
from engine.models.trainer import TaskTensors, TrainConfig
from engine.routing import binary_entropy

GATES = ("reliability", "joint")
TEACHERS = ("auto", "adapter", "base")
QS = ("auto", "entropy", "margin", "mc_variance")
VARIANTS = ("global", "pointwise", "kd", "joint")  # besides the gated headline and "none"
KINDS = ("labelled", "popular", "long-tail")
GATE_FEATURES = ("cold", "tail", "q")
POPULAR_POOL = 50  # popular candidates come from the most popular training items


@dataclass(frozen=True)
class SLLMRConfig:
    backbone: str = "dcnv2"  # any registered CRM
    crm_options: dict[str, Any] = field(default_factory=dict)
    # "adapter": the LLM adapter an earlier method of the run trained (CoReLLa's), no second
    # training; "base": the base LLM zero-shot; "auto": the adapter when the run has one
    # (`--methods dcnv2,sllmr` has none), else the base LLM; the stored config says which
    teacher: str = "auto"
    llm: LLMConfig = LLMConfig()  # the base teacher's model (the adapter brings its own)
    users: int = 200  # users the teacher scores candidates for
    labelled: int = 8  # the user's later training items after the anchor (labelled)
    popular: int = 4  # popular items the user never rated (unlabelled)
    long_tail: int = 4  # long-tail items the user never rated (unlabelled)
    pairs_per_user: int = 16  # K: the within-user pairs with the largest teacher gaps
    lam: float = 0.1  # lambda, the weight of the LLM term (paper: 0.1)
    margin: float = 0.5  # m of the hinge on logit differences
    gate: str = "reliability"
    q: str = "auto"  # CRM uncertainty: auto picks the best on held-out labelled pairs
    cold_share: float = 0.2
    mc_passes: int = 8  # dropout passes for q = mc_variance
    variants: tuple[str, ...] = VARIANTS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ConfigError(f"lam (lambda) must be >= 0, got {self.lam}")
        if self.margin <= 0:
            raise ConfigError(f"margin must be > 0, got {self.margin}")
        if self.gate not in GATES:
            raise ConfigError(f"unknown gate {self.gate!r}; valid: {', '.join(GATES)}")
        if self.q not in QS:
            raise ConfigError(f"unknown q {self.q!r}; valid: {', '.join(QS)}")
        if self.teacher not in TEACHERS:
            raise ConfigError(f"teacher must be one of {', '.join(TEACHERS)}, "
                              f"got {self.teacher!r}")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ConfigError(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
        if min(self.users, self.pairs_per_user) < 1 or self.labelled < 2:
            raise ConfigError("users and pairs_per_user must be >= 1 and labelled >= 2")
        if min(self.popular, self.long_tail) < 0 or not 0 < self.cold_share < 1:
            raise ConfigError("popular/long_tail must be >= 0 and cold_share in (0, 1)")


# --- the gate -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Gate:
    """alpha = sigmoid(w . x + b) over x = [Cold, Tail, q]."""

    w: tuple[float, float, float]
    b: float
    q: str

    def alpha(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(x @ np.asarray(self.w) + self.b)))


def fit_reliability_gate(x: np.ndarray, agree: np.ndarray, q: str) -> Gate:
    """Logistic regression of "the teacher orders this labelled pair as its labels do" on the
    pair's features; a constant gate (the agreement rate) when one class or too few pairs."""
    from sklearn.linear_model import LogisticRegression

    if len(agree) < 10 or agree.min() == agree.max():
        rate = float(np.clip(agree.mean() if len(agree) else 0.5, 0.01, 0.99))
        return Gate((0.0, 0.0, 0.0), math.log(rate / (1 - rate)), q)
    model = LogisticRegression(C=1.0).fit(x, agree.astype(int))
    return Gate(tuple(float(v) for v in model.coef_[0]), float(model.intercept_[0]), q)


def held_out_logloss(x: np.ndarray, agree: np.ndarray, fold: np.ndarray, q: str) -> float:
    """Log loss of a gate fitted on the other folds, over each fold (users split in folds)."""
    losses = []
    for k in np.unique(fold):
        gate = fit_reliability_gate(x[fold != k], agree[fold != k], q)
        p = np.clip(gate.alpha(x[fold == k]), 1e-6, 1 - 1e-6)
        y = agree[fold == k]
        losses.append(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return float(np.mean(np.concatenate(losses))) if losses else float("inf")


class JointGate(nn.Module):
    """The paper's gate, learned with the CRM: only ever pushed toward alpha = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(len(GATE_FEATURES), 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)  # alpha starts at 0.5 everywhere

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (P, 3) -> (P,)
        return torch.sigmoid(self.linear(x).squeeze(-1))


# --- regularisers the trainer adds to every step -------------------------------------------

class TeacherPairs:
    """lambda * mean(alpha * hinge) over pairs sampled each step (all pairs once per epoch
    on average). alpha: fixed per pair (stop-gradient) or a JointGate over pair features."""

    def __init__(self, candidates: dict[str, torch.Tensor], pair_i: np.ndarray,
                 pair_j: np.ndarray, *, lam: float, margin: float, per_step: int, seed: int,
                 alpha: np.ndarray | None = None, features: np.ndarray | None = None) -> None:
        self.candidates = candidates
        self.i = torch.from_numpy(pair_i.astype(np.int64))
        self.j = torch.from_numpy(pair_j.astype(np.int64))
        self.lam, self.margin, self.per_step = lam, margin, per_step
        self.generator = torch.Generator().manual_seed(seed)
        self.fixed = None if alpha is None else torch.tensor(alpha, dtype=torch.float32)
        self.gate = JointGate() if alpha is None else None
        self.x = None if features is None else torch.as_tensor(features, dtype=torch.float32)
        self._stats: list[tuple[float, float, float]] = []

    def parameters(self) -> list[torch.Tensor]:
        return list(self.gate.parameters()) if self.gate is not None else []

    def __call__(self, model: nn.Module) -> torch.Tensor:
        pick = torch.randint(len(self.i), (self.per_step,), generator=self.generator)
        i, j = self.i[pick], self.j[pick]
        s_i, s_j = candidate_logits(model, self.candidates, i, j)
        hinge = torch.relu(self.margin - (s_i - s_j))
        alpha = self.fixed[pick] if self.gate is None else self.gate(self.x[pick])
        term = (alpha * hinge).mean()
        self._stats.append((float(alpha.detach().mean()), float((hinge > 0).float().mean()),
                            float(term.detach())))
        return self.lam * term

    def learned_gate(self, q: str) -> Gate:
        weights = self.gate.linear.weight.detach().numpy()[0]
        return Gate(tuple(float(v) for v in weights), float(self.gate.linear.bias.detach()[0]),
                    q)

    def epoch_end(self) -> dict[str, float]:
        stats = np.asarray(self._stats) if self._stats else np.zeros((1, 3))
        self._stats = []
        row = {"mean_alpha": float(stats[:, 0].mean()),
               "active_hinge_share": float(stats[:, 1].mean()), "l_llm": float(stats[:, 2].mean())}
        if self.gate is not None:
            weights = self.gate.linear.weight.detach().numpy()[0]
            row |= {f"w_{name}": float(v) for name, v in zip(GATE_FEATURES, weights)}
            row["b"] = float(self.gate.linear.bias.detach()[0])
        return row


def candidate_logits(model: nn.Module, candidates: dict[str, torch.Tensor], i: torch.Tensor,
                     j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The CRM's logits of both ends of pairs, each candidate through the model once."""
    both = torch.cat([i, j])
    unique, inverse = torch.unique(both, return_inverse=True)
    logits = model({k: v.index_select(0, unique) for k, v in candidates.items()})
    return logits[inverse[:len(i)]], logits[inverse[len(i):]]


# --- the method ------------------------------------------------------------------------------

TeacherFn = Callable[[pd.DataFrame], np.ndarray]


class SLLMR(Method):
    def __init__(self, name: str = "sllmr", config: SLLMRConfig = SLLMRConfig(),
                 train: TrainConfig = TrainConfig(), teacher_fn: TeacherFn | None = None
                 ) -> None:
        """teacher_fn replaces the LLM (tests plant a teacher): candidates -> P(yes)."""
        self.name = name
        self.config = config
        self.train = train
        self.teacher_fn = teacher_fn
        self.model_config = crm_config(config.backbone, config.crm_options)

    def needs(self) -> tuple[str, ...]:
        return ("llm_adapter",) if self.config.teacher == "adapter" and not self.teacher_fn \
            else ()

    # --- fit ------------------------------------------------------------------------------
    def fit(self, task: CTRTask) -> SLLMR:
        cfg = self.config
        self.task_ = task
        self.tensors_ = TaskTensors(task)
        self.stage_seconds_: dict[str, float] = {}
        self.log_: list[pd.DataFrame] = []
        self.cold_cut_ = float(np.quantile(
            task.samples["hist_len"].to_numpy()[task.index("train")], cfg.cold_share))
        self.backbone_, result = self._train("none", None)
        self.results_ = {"none": result}
        t0 = time.perf_counter()
        self.candidates_ = self.choose_candidates(task)
        self.cand_tensors_ = self._candidate_tensors(task, self.candidates_)
        self.candidates_["s_llm"] = self._teacher_scores(task, self.candidates_)
        self.offline_seconds_ = time.perf_counter() - t0
        self.stage_seconds_[f"teacher: {len(self.candidates_):,} candidates scored"] = (
            self.offline_seconds_)
        self.candidates_["q_entropy"], self.candidates_["q_margin"], \
            self.candidates_["q_mc_variance"] = self._uncertainties(self.backbone_,
                                                                    self.cand_tensors_)
        self.candidates_["logit_before"] = self._logits(self.backbone_, self.cand_tensors_)
        self.pairs_ = self.choose_pairs(self.candidates_, cfg.pairs_per_user)
        self.gate_ = self._fit_gate()
        self._train_variants()
        # what the headline applied: the reliability gate, or the learned joint one
        self.applied_gate_ = self.joint_gate_ if cfg.gate == "joint" else self.gate_
        if cfg.gate == "joint":
            self.pairs_["alpha"] = self.applied_gate_.alpha(self._pair_features(self.gate_.q))
        return self

    def _train(self, variant: str, regulariser: Any) -> tuple[nn.Module, dict[str, Any]]:
        """One CRM from the backbone's seed and initialisation, with `regulariser` added."""
        t0 = time.perf_counter()
        torch.manual_seed(self.train.seed)
        model = build_crm(self.config.backbone, self.task_.schema, self.model_config)
        run = train_variant(model, self.task_, self.train, self.tensors_, self.name, variant,
                            regulariser)
        self.log_.append(run.log)
        self.stage_seconds_[f"train: {variant}"] = time.perf_counter() - t0
        return model, run.as_dict()

    def _train_variants(self) -> None:
        """The gated headline, then the configured variants, each from the backbone's seed."""
        cfg = self.config
        for variant in ["gated", *[v for v in cfg.variants if v != "gated"]]:
            if variant == "joint" and cfg.gate == "joint":
                continue  # the headline already is the joint gate
            reg = self._regulariser("joint" if variant == "gated" and cfg.gate == "joint"
                                    else variant)
            model, self.results_[variant] = self._train(variant, reg)
            if isinstance(reg, TeacherPairs) and reg.gate is not None:
                self.joint_gate_ = reg.learned_gate(self.gate_.q)
            if variant == "gated":
                self.model_ = model
                self.candidates_["logit_after"] = self._logits(model, self.cand_tensors_)

    def _regulariser(self, variant: str) -> TeacherPairs | TeacherPoints:
        cfg, pairs = self.config, self.pairs_
        if variant in ("pointwise", "kd"):
            return TeacherPoints(self.cand_tensors_, self.candidates_["s_llm"].to_numpy(),
                                 kind=variant, lam=cfg.lam,
                                 per_step=self._per_step(len(self.candidates_)),
                                 seed=cfg.seed + 13)
        alpha = {"gated": pairs["alpha"].to_numpy(), "global": np.ones(len(pairs)),
                 "joint": None}[variant]
        return TeacherPairs(self.cand_tensors_, pairs["i"].to_numpy(), pairs["j"].to_numpy(),
                            lam=cfg.lam, margin=cfg.margin, per_step=self._per_step(len(pairs)),
                            seed=cfg.seed + 11, alpha=alpha,
                            features=self._pair_features(self.gate_.q))

    def _per_step(self, n: int) -> int:
        steps = math.ceil(len(self.task_.index("train")) / self.train.batch_size)
        return max(1, math.ceil(n / steps))

    # --- candidates and the teacher -------------------------------------------------------
    def choose_candidates(self, task: CTRTask) -> pd.DataFrame:
        """Per chosen user: an anchor training sample, its later training items (labelled)
        and popular and long-tail items the user never rated (unlabelled). No candidate is
        an item of the anchor's history, so none appears in its own prompt."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        samples = task.samples
        train = samples.iloc[task.index("train")]
        by_user = {u: g.index.to_numpy() for u, g in train.groupby("user_idx", sort=True)}
        eligible = [u for u, rows in by_user.items() if len(rows) >= 3]
        users = rng.permutation(eligible)[:cfg.users]
        rated = task.ratings.groupby("user")["item"].agg(set)
        items = task.items
        seen = items[items["popularity"] > 0]
        popular = seen.sort_values("popularity", ascending=False)["idx"].to_numpy()
        popular = popular[:POPULAR_POOL]
        tail = seen.loc[seen["long_tail"], "idx"].to_numpy()
        rows: list[dict[str, Any]] = []
        for user_idx in sorted(users):
            user_rows = by_user[user_idx]  # time order
            anchor = user_rows[max(0, len(user_rows) - cfg.labelled - 1)]
            later = user_rows[user_rows > anchor][: cfg.labelled]
            history = set(task.hist_items[anchor][task.hist_items[anchor] > 0].tolist())
            user = str(samples.at[anchor, "user"])
            rated_idx = set(items.loc[items["item"].isin(rated.get(user, set())), "idx"])
            base = {"user": user, "user_idx": int(user_idx), "anchor": int(anchor),
                    "hist_len": int(samples.at[anchor, "hist_len"])}
            for row in later:
                item_idx = int(samples.at[row, "item_idx"])
                if item_idx in history:
                    continue
                rows.append({**base, "item_idx": item_idx, "kind": "labelled",
                             "label": float(task.labels[row])})
            for kind, pool, count in (("popular", popular, cfg.popular),
                                      ("long-tail", tail, cfg.long_tail)):
                fresh = [int(i) for i in pool if int(i) not in rated_idx]
                for item_idx in rng.permutation(fresh)[:count]:
                    rows.append({**base, "item_idx": int(item_idx), "kind": kind,
                                 "label": np.nan})
        cands = pd.DataFrame(rows)
        if cands.empty:
            raise ConfigError("S-LLMR found no user with 3 or more training samples")
        cands["item"] = items["item"].to_numpy()[cands["item_idx"] - 1]
        cands["cold"] = cands["hist_len"] <= self.cold_cut_
        cands["tail"] = items["long_tail"].to_numpy()[cands["item_idx"] - 1].astype(bool)
        return cands.reset_index(drop=True)

    def _candidate_tensors(self, task: CTRTask, cands: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Model inputs of each candidate: its user and item with the anchor's history."""
        anchors = cands["anchor"].to_numpy()
        user_idx, item_idx = cands["user_idx"].to_numpy(), cands["item_idx"].to_numpy()
        arrays = {"sparse": task.codes.sparse_rows(user_idx, item_idx),
                  "tags": task.codes.item_tags[item_idx],
                  "hist_items": task.hist_items[anchors],
                  "hist_ratings": task.hist_ratings[anchors]}
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}

    def _teacher_scores(self, task: CTRTask, cands: pd.DataFrame) -> np.ndarray:
        if self.teacher_fn is not None:
            return np.asarray(self.teacher_fn(cands), dtype=np.float64)
        llm = self._teacher_llm()
        cache = DiskCache("scores")
        adapter = llm.adapter_hash()
        out = np.zeros(len(cands))
        groups = cands.groupby("anchor", sort=True)
        for anchor, group in tqdm(groups, total=groups.ngroups, desc="S-LLMR teacher",
                                  unit="user", leave=False):
            parts = [task.prompt_parts(int(anchor), int(i)) for i in group["item_idx"]]
            prefix = parts[0][0]
            keys = [cache.key(llm.config.model, adapter, prefix + suffix)
                    for _, suffix in parts]
            values = [cache.get(k) for k in keys]
            todo = [n for n, v in enumerate(values) if v is None]
            if todo:
                fresh = llm.score_suffixes(prefix, [parts[n][1] for n in todo])
                for n, p in zip(todo, fresh):
                    cache.put(keys[n], float(p))
                    values[n] = float(p)
            out[group.index.to_numpy()] = values
        return out

    def _teacher_llm(self) -> LLM:
        llm, source = run_llm(self.config.teacher, getattr(self, "artifacts_in_", {}),
                              self.config.llm, self.name, "teacher")
        self.teacher_source_ = source if source.endswith("adapter") else f"{source} zero-shot"
        return llm

    @staticmethod
    def choose_pairs(cands: pd.DataFrame, k: int) -> pd.DataFrame:
        """Within each user, the k ordered pairs (s_i > s_j) with the largest teacher gaps."""
        frames = []
        for _, group in cands.groupby("user_idx", sort=True):
            idx = group.index.to_numpy()
            s = group["s_llm"].to_numpy()
            a, b = np.meshgrid(np.arange(len(idx)), np.arange(len(idx)), indexing="ij")
            keep = s[a] > s[b]
            gap = (s[a] - s[b])[keep]
            order = np.argsort(-gap, kind="stable")[:k]
            frames.append(pd.DataFrame({"i": idx[a[keep]][order], "j": idx[b[keep]][order],
                                        "gap": gap[order]}))
        pairs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["i", "j", "gap"])
        label_i = cands["label"].to_numpy()[pairs["i"]]
        label_j = cands["label"].to_numpy()[pairs["j"]]
        pairs["labelled"] = ~np.isnan(label_i) & ~np.isnan(label_j) & (label_i != label_j)
        pairs["agree"] = pairs["labelled"] & (label_i > label_j)
        return pairs

    # --- uncertainty and the gate ---------------------------------------------------------
    @torch.no_grad()
    def _uncertainties(self, model: nn.Module, inputs: dict[str, torch.Tensor]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """q in [0, 1] three ways: the entropy of p (bits), 1 - max(p, 1 - p) scaled by 2,
        and the variance of p over dropout passes scaled by 4."""
        model.eval()
        p = torch.sigmoid(model(inputs)).double().numpy()
        model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + 17)
            passes = np.stack([torch.sigmoid(model(inputs)).double().numpy()
                               for _ in range(self.config.mc_passes)])
        model.eval()
        margin = 2 * (1 - np.maximum(p, 1 - p))
        return binary_entropy(p), margin, np.clip(4 * passes.var(axis=0), 0, 1)

    @torch.no_grad()
    def _logits(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> np.ndarray:
        model.eval()
        return model(inputs).double().numpy()

    def _pair_features(self, q: str) -> np.ndarray:
        """(P, 3) pair features: the mean of the two ends' [Cold, Tail, q]."""
        c = self.candidates_
        ends = np.stack([c["cold"].astype(float), c["tail"].astype(float),
                         c[f"q_{q}"].astype(float)], axis=1)
        return (ends[self.pairs_["i"]] + ends[self.pairs_["j"]]) / 2

    def _fit_gate(self) -> Gate:
        """The reliability gate on the labelled pairs (q chosen on held-out users when
        q="auto"); with gate="joint" it only describes the pairs, training ignores it."""
        cfg = self.config
        labelled = self.pairs_["labelled"].to_numpy()
        agree = self.pairs_["agree"].to_numpy()[labelled].astype(float)
        users = self.candidates_["user_idx"].to_numpy()[self.pairs_["i"]][labelled]
        fold = users % 4
        options = [q for q in QS if q != "auto"] if cfg.q == "auto" else [cfg.q]
        scores = {q: held_out_logloss(self._pair_features(q)[labelled], agree, fold, q)
                  for q in options}
        self.q_scores_ = scores
        q = min(scores, key=scores.get)
        gate = fit_reliability_gate(self._pair_features(q)[labelled], agree, q)
        if cfg.gate == "joint":
            self.pairs_["alpha"] = np.full(len(self.pairs_), 0.5)  # replaced by training
        else:
            self.pairs_["alpha"] = gate.alpha(self._pair_features(q))
        return gate

    # --- results --------------------------------------------------------------------------
    def results(self) -> list[MethodResult]:
        cfg = self.config
        base = {"config": plain_config(asdict(cfg)), "teacher": getattr(self, "teacher_source_",
                                                                   "planted"),
                "gate": cfg.gate, "gate_w": dict(zip(GATE_FEATURES, self.applied_gate_.w)),
                "gate_b": self.applied_gate_.b,
                "reliability_gate_w": dict(zip(GATE_FEATURES, self.gate_.w)),
                "reliability_gate_b": self.gate_.b,
                "joint_gate_w": dict(zip(GATE_FEATURES, self.joint_gate_.w))
                if hasattr(self, "joint_gate_") else None,
                "q": self.gate_.q, "q_heldout_logloss": self.q_scores_,
                "cold_cut_hist_len": self.cold_cut_, "candidates": len(self.candidates_),
                "pairs": len(self.pairs_), "teacher_pair_accuracy": self._pair_accuracy(),
                "teacher_auc": self._teacher_auc()}
        out = []
        names = {"gated": self.name, "none": f"{self.name}_none"} | {
            v: f"{self.name}_{v}" for v in cfg.variants if v in self.results_}
        for variant, name in names.items():
            r = self.results_[variant]
            result = MethodResult(
                name=name, kind="crm" if variant == "none" else "hybrid", probs=r["probs"],
                config={**base, "variant": variant, "best_epoch": r["best_epoch"]},
                cost={"train_seconds": r["seconds"], "infer_ms_per_1k": r["infer_ms_per_1k"],
                      "llm_calls_per_1k": 0.0,
                      "offline_llm_seconds": 0.0 if variant == "none" else self.offline_seconds_},
                description=DESCRIPTIONS[variant].format(backbone=cfg.backbone,
                                                         gate=cfg.gate))
            out.append(result)
        head = out[0]
        head.training_log = pd.concat(self.log_, ignore_index=True)
        head.diagnostics = {"gates": self._gates_table(), "pairs": self._pairs_table()}
        head.stage_seconds = dict(self.stage_seconds_)
        head.weights = {self.name: {k: v.detach().contiguous()
                                    for k, v in self.model_.state_dict().items()}}
        return out

    def result(self) -> MethodResult:
        return self.results()[0]

    def _pair_accuracy(self) -> float:
        labelled = self.pairs_[self.pairs_["labelled"]]
        return float(labelled["agree"].mean()) if len(labelled) else float("nan")

    def _teacher_auc(self) -> float:
        labelled = self.candidates_.dropna(subset=["label"])
        return auc(labelled["label"].to_numpy(), labelled["s_llm"].to_numpy())

    def _gates_table(self) -> pd.DataFrame:
        """Per valid/test sample: alpha with its inputs, and both models' probabilities."""
        task, frames = self.task_, []
        for split in EVAL_SPLITS:
            rows = task.index(split)
            s = task.samples.iloc[rows]
            p_backbone = self.results_["none"]["probs"][split]
            q = self._sample_q(self.gate_.q, rows, p_backbone)
            x = np.stack([(s["hist_len"] <= self.cold_cut_).to_numpy(float),
                          s["long_tail_item"].to_numpy(float), q], axis=1)
            frames.append(pd.DataFrame({
                "sample_id": s["sample_id"].to_numpy(), "split": split,
                "alpha": self.applied_gate_.alpha(x), "cold": x[:, 0] > 0, "tail": x[:, 1] > 0,
                "q": q, "hist_len": s["hist_len"].to_numpy(),
                "item_popularity": s["item_popularity"].to_numpy(),
                "p_backbone": p_backbone, "p_sllmr": self.results_["gated"]["probs"][split]}))
        return pd.concat(frames, ignore_index=True)

    def _sample_q(self, q: str, rows: np.ndarray, p: np.ndarray) -> np.ndarray:
        if q == "entropy":
            return binary_entropy(p)
        if q == "margin":
            return 2 * (1 - np.maximum(p, 1 - p))
        batch = self.tensors_.batch(torch.from_numpy(rows))
        return self._uncertainties(self.backbone_, batch)[2]

    def _pairs_table(self) -> pd.DataFrame:
        c, pairs = self.candidates_, self.pairs_
        i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
        anchor_ids = self.task_.samples["sample_id"].to_numpy()[c["anchor"].to_numpy()]
        return pd.DataFrame({
            "user": c["user"].to_numpy()[i], "anchor_sample": anchor_ids[i],
            "item_i": c["item"].to_numpy()[i], "item_j": c["item"].to_numpy()[j],
            "kind_i": c["kind"].to_numpy()[i], "kind_j": c["kind"].to_numpy()[j],
            "label_i": c["label"].to_numpy()[i], "label_j": c["label"].to_numpy()[j],
            "s_llm_i": c["s_llm"].to_numpy()[i], "s_llm_j": c["s_llm"].to_numpy()[j],
            "gap_before": (c["logit_before"].to_numpy()[i] - c["logit_before"].to_numpy()[j]),
            "gap_after": (c["logit_after"].to_numpy()[i] - c["logit_after"].to_numpy()[j]),
            "alpha": pairs["alpha"].to_numpy(), "cold": c["cold"].to_numpy()[i],
            "labelled": pairs["labelled"].to_numpy(), "agree": pairs["agree"].to_numpy()})


DESCRIPTIONS = {
    "gated": "S-LLMR: {backbone} with the teacher's within-user pairs as a hinge, each "
             "weighted by the {gate} gate (alpha from Cold, Tail and the CRM's uncertainty)",
    "none": "S-LLMR's backbone without the LLM: {backbone} from the same seed and init",
    "global": "S-LLMR ablation: every teacher pair at alpha = 1 (global distillation of the "
              "teacher's order)",
    "pointwise": "S-LLMR ablation: squared error between the CRM's and the teacher's "
                 "probability on the candidates (no pairs, no gate)",
    "kd": "KD baseline: the CRM distilled from the teacher's probabilities (cross-entropy to "
          "soft labels on the candidates)",
    "joint": "S-LLMR ablation: the paper's gate learned jointly with the loss (collapses "
             "toward alpha = 0)",
}
