"""LLM-CF (seed 003): the LLM's chains of thought as in-context examples for the CRM.

Offline, the LLM explains a label-balanced pool of training samples, each for its known
decision ("in fact the user liked it; explain why"), in its chat template with greedy
decoding; every explanation is scored for quality and embedded with the sentence encoder.
For each sample, the K pool examples most similar to it (half the history's, half the
target's text similarity; K/2 clicked and K/2 not) are retrieved, never the sample itself
nor a later sample of the same user. The ICT module (engine.models.ict) reads the examples'
features, CoT embeddings and labels and adds one field to the CRM. No LLM at inference.

Every variant starts from the backbone's seed and initialisation: the extra field's
weights start at zero, so before training LLM-CF computes exactly what the backbone does.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from torch import nn

from engine.data.task import CTRTask
from engine.errors import ConfigError
from engine.methods.base import (
    EVAL_SPLITS,
    Method,
    MethodResult,
    crm_key,
    plain_config,
    run_llm,
    train_variant,
)
from engine.models import build_crm, crm_config, widen_from
from engine.models.cot_quality import quality_parts
from engine.models.generation import (
    Decoding,
    explanation_prompt,
    generate_with_stats,
    score_cached,
)
from engine.models.ict import ICT, ICTConfig, InContextCRM
from engine.models.llm import LLM, LLMConfig
from engine.models.regularisers import AuxiliaryLoss, TeacherPoints
from engine.models.trainer import TaskTensors, TrainConfig

WRITERS = ("base", "adapter", "auto")
VARIANTS = ("no_cot", "mean_pool", "random", "kd")  # besides the headline and "none"
CHUNK = 4096  # query rows per retrieval block


@dataclass(frozen=True)
class LLMCFConfig:
    backbone: str = "dcnv2"  # any registered CRM
    crm_options: dict[str, Any] = field(default_factory=dict)
    # who writes the chains of thought: "base" the base LLM (default: the run's adapter is
    # trained to answer yes/no, not to write), "adapter" the LoRA adapter an earlier method
    # of the run trained (no second training), "auto" the adapter when there is one
    writer: str = "base"
    llm: LLMConfig = LLMConfig()
    pool_size: int = 128  # label-balanced training samples the LLM explains
    cot_tokens: int = 64  # the token cap per explanation
    generation_batch: int = 8
    k_pos: int = 2  # retrieved clicked examples
    k_neg: int = 2  # retrieved not-clicked examples
    ict: ICTConfig = ICTConfig()
    aux_weight: float = 0.1  # weight of 1 - cos(reconstructed, true CoT embedding)
    min_quality: float = 0.0  # explanations below this quality leave the pool
    kd_lam: float = 0.1  # the KD baseline's weight (S-LLMR's lambda)
    variants: tuple[str, ...] = VARIANTS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.writer not in WRITERS:
            raise ConfigError(f"writer must be one of {', '.join(WRITERS)}, got {self.writer!r}")
        if self.pool_size < 2:
            raise ConfigError(f"pool_size must be >= 2, got {self.pool_size}")
        if min(self.k_pos, self.k_neg) < 0:
            raise ConfigError(f"k_pos and k_neg must be >= 0, got {self.k_pos}, {self.k_neg}")
        if not 1 <= self.cot_tokens <= 2048 or self.generation_batch < 1:
            raise ConfigError(f"cot_tokens must be in 1..2048 and generation_batch >= 1, got "
                              f"{self.cot_tokens}, {self.generation_batch}")
        if self.aux_weight < 0 or self.kd_lam < 0:
            raise ConfigError("aux_weight and kd_lam must be >= 0")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ConfigError(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")

    @property
    def k(self) -> int:
        return self.k_pos + self.k_neg


# --- retrieval -------------------------------------------------------------------------------

@dataclass
class Side:
    """Samples on one side of retrieval: unit history and target vectors, user, time, row."""

    hist: np.ndarray  # (N, d)
    target: np.ndarray  # (N, d)
    user: np.ndarray
    time: np.ndarray
    row: np.ndarray  # task row (a sample never retrieves its own row)


@dataclass
class Retrieved:
    pool_pos: np.ndarray  # (N, K) positions in the pool, -1 where none is allowed
    sim: np.ndarray  # (N, K) 0.5 * sim_history + 0.5 * sim_target
    sim_history: np.ndarray
    sim_target: np.ndarray


def side(task: CTRTask, rows: np.ndarray) -> Side:
    """The retrieval view of task rows: the mean of the history items' text vectors and
    the target's, unit length (task.item_vectors: MiniLM, computed once per run)."""
    vectors = task.item_vectors
    # the history mean as one sparse (rows x items) product: the same sums, 2.5x faster on
    # ML-100k's 100k rows than gathering (rows, history, 384) blocks
    items = task.hist_items[rows]
    present = items > 0
    counts = sparse.csr_matrix(
        (np.ones(int(present.sum()), dtype=np.float32),
         (np.nonzero(present)[0], items[present] - 1)), shape=(len(rows), len(vectors)))
    hist = np.asarray(counts @ vectors, dtype=np.float32) / np.clip(
        present.sum(1, keepdims=True), 1, None)
    hist /= np.clip(np.linalg.norm(hist, axis=1, keepdims=True), 1e-12, None)
    s = task.samples
    target = vectors[s["item_idx"].to_numpy()[rows] - 1]
    return Side(hist, target, s["user_idx"].to_numpy()[rows], s["timestamp"].to_numpy()[rows],
                np.asarray(rows))


def retrieve(query: Side, pool: Side, pool_label: np.ndarray, k_pos: int, k_neg: int,
             random_seed: int | None = None) -> Retrieved:
    """Per query, the k_pos most similar clicked and k_neg not-clicked pool examples, most
    similar first, never its own row nor a same-user example at the same or a later time
    (the public code's `pos_id < example.pos_id` lets a training sample see its own CoT).
    With random_seed, examples are drawn at random under the same rules (the ablation).
    Deterministic: ties go to the earlier pool position."""
    n, k = len(query.row), k_pos + k_neg
    out = Retrieved(np.full((n, k), -1), *(np.full((n, k), np.nan) for _ in range(3)))
    rng = np.random.default_rng(random_seed) if random_seed is not None else None
    for start in range(0, n, CHUNK):
        q = slice(start, start + CHUNK)
        sim_h = query.hist[q] @ pool.hist.T
        sim_t = query.target[q] @ pool.target.T
        sim = 0.5 * sim_h + 0.5 * sim_t
        banned = (query.row[q, None] == pool.row[None, :]) | (
            (query.user[q, None] == pool.user[None, :])
            & (pool.time[None, :] >= query.time[q, None]))
        rank_by = rng.random(sim.shape) if rng is not None else sim
        chosen = []
        for label, count in ((1, k_pos), (0, k_neg)):
            if not count:
                continue
            score = np.where(banned | (pool_label[None, :] != label), -np.inf, rank_by)
            order = np.argsort(-score, axis=1, kind="stable")[:, :count]
            ok = np.take_along_axis(score, order, axis=1) > -np.inf
            chosen.append(np.where(ok, order, -1))
        picked = np.concatenate(chosen, axis=1) if chosen else np.zeros((sim.shape[0], 0), int)
        rows = np.arange(sim.shape[0])[:, None]
        safe = np.maximum(picked, 0)
        parts = [np.where(picked >= 0, m[rows, safe], np.nan) for m in (sim, sim_h, sim_t)]
        # most similar first (absent last), whatever the label
        order = np.argsort(-np.nan_to_num(parts[0], nan=-np.inf), axis=1, kind="stable")
        out.pool_pos[q] = np.take_along_axis(picked, order, axis=1)
        for target, part in zip((out.sim, out.sim_history, out.sim_target), parts):
            target[q] = np.take_along_axis(part, order, axis=1)
    return out


# --- the method ------------------------------------------------------------------------------

class LLMCF(Method):
    uses_item_vectors = True  # the pipeline embeds item texts once for retrieval and maps

    def __init__(self, name: str = "llmcf", config: LLMCFConfig = LLMCFConfig(),
                 train: TrainConfig = TrainConfig(), writer_fn: Any = None,
                 encoder: Any = None) -> None:
        """writer_fn replaces the LLM in tests: (prompts, labels) -> texts; encoder: any
        object with encode(texts) -> unit vectors (default: the run's MiniLM)."""
        self.name = name
        self.config = config
        self.train = train
        self.writer_fn = writer_fn
        self.encoder = encoder
        self.model_config = crm_config(config.backbone, config.crm_options)

    def needs(self) -> tuple[str, ...]:
        return ("llm_adapter",) if self.config.writer == "adapter" and not self.writer_fn \
            else ()

    # --- fit ------------------------------------------------------------------------------
    def fit(self, task: CTRTask) -> LLMCF:
        cfg = self.config
        self.task_ = task
        self.stage_seconds_: dict[str, float] = {}
        self.log_: list[pd.DataFrame] = []
        encoder = self._encoder()
        if task.item_vectors is None:
            task.use_item_vectors(encoder.encode(task.items["text"].tolist()))
        self.tensors_ = TaskTensors(task)
        self.query_side_: Side | None = None
        self.results_: dict[str, dict[str, Any]] = {}
        self.results_["none"] = self._backbone()
        t0 = time.perf_counter()
        self.pool_ = self.choose_pool(task)
        self._write_cots(task)
        self.offline_seconds_ = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.cot_vectors_ = encoder.encode(self.pool_["text"].tolist())
        items = task.items["text"].to_numpy()[self.pool_["item_idx"].to_numpy() - 1]
        self.pool_ = pd.concat([self.pool_, quality_parts(
            encoder, self.cot_vectors_, self.pool_["text"].tolist(), items.tolist(),
            self.pool_["label"].to_numpy() > 0.5)], axis=1)
        self.pool_["kept"] = self.pool_["quality"] >= cfg.min_quality
        self.kept_ = np.flatnonzero(self.pool_["kept"].to_numpy())
        if len(self.kept_) == 0:
            raise ConfigError(f"{self.name}: no explanation reaches min_quality "
                              f"{cfg.min_quality}")
        self.stage_seconds_["CoT quality and embeddings"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.retrieved_ = self._retrieve(task)
        self.random_ = self._retrieve(task, random_seed=cfg.seed + 1) \
            if "random" in cfg.variants else None
        self.stage_seconds_["retrieval"] = time.perf_counter() - t0
        self.models_: dict[str, InContextCRM] = {}
        for variant in ("llmcf", *[v for v in cfg.variants if v in ("no_cot", "mean_pool",
                                                                     "random")]):
            self.results_[variant] = self._train_in_context(variant)
        if "kd" in cfg.variants:
            self.results_["kd"] = self._train_kd(task)
        return self

    def _encoder(self) -> Any:
        if self.encoder is None:
            from engine.models.encoder import Encoder

            self.encoder = Encoder()
        return self.encoder

    def choose_pool(self, task: CTRTask) -> pd.DataFrame:
        """pool_size training samples, half clicked, half not (seeded), in time order."""
        rng = np.random.default_rng(self.config.seed)
        train = task.index("train")
        labels = task.labels[train]
        half = self.config.pool_size // 2
        picked = []
        for label, count in ((1, self.config.pool_size - half), (0, half)):
            rows = train[labels == label]
            picked.append(rng.choice(rows, size=min(count, len(rows)), replace=False))
        rows = np.sort(np.concatenate(picked))
        if len(np.unique(task.labels[rows])) < 2:
            raise ConfigError(f"{self.name}: the training split needs clicked and not-clicked "
                              "samples for a label-balanced CoT pool")
        s = task.samples.iloc[rows]
        return pd.DataFrame({
            "cot_id": np.arange(len(rows)), "row": rows, "sample_id": s["sample_id"].to_numpy(),
            "user": s["user"].astype(str).to_numpy(), "item": s["item"].astype(str).to_numpy(),
            "item_idx": s["item_idx"].to_numpy(), "label": task.labels[rows].astype(float)})

    def _write_cots(self, task: CTRTask) -> None:
        """The pool's explanations, with their cost (cached ones cost nothing)."""
        cfg = self.config
        pool = self.pool_
        prompts = [explanation_prompt(p, liked)
                   for p, liked in zip(task.prompts(pool["row"].to_numpy()), pool["label"] > 0.5)]
        t0 = time.perf_counter()
        if self.writer_fn is not None:
            texts = list(self.writer_fn(prompts, pool["label"].to_numpy()))
            pool["text"], pool["tokens"] = texts, [len(t.split()) for t in texts]
            pool["seconds"], pool["cached"] = 0.0, False
            self.writer_source_ = "planted"
            self.teacher_probs_ = np.clip(pool["label"].to_numpy() * 0.6 + 0.2, 0, 1)
        else:
            llm = self._writer_llm()
            made = generate_with_stats(llm, prompts, Decoding("explanation", cfg.cot_tokens),
                                       batch_size=cfg.generation_batch,
                                       progress="LLM-CF chains of thought")
            pool["text"], pool["tokens"] = made.texts, made.tokens
            pool["seconds"], pool["cached"] = made.seconds, made.cached
            generated = time.perf_counter() - t0
            self.stage_seconds_[f"CoT generation: {len(pool)} texts "
                                f"({int(np.sum(made.cached))} cached)"] = generated
            if "kd" in cfg.variants:  # the KD baseline's teacher: P(yes) on the same samples
                t1 = time.perf_counter()
                self.teacher_probs_ = score_cached(llm, task.prompts(pool["row"].to_numpy()))
                self.stage_seconds_["KD teacher: P(yes) on the pool"] = time.perf_counter() - t1
        pool["model"] = self.writer_source_
        fresh = ~pool["cached"].to_numpy(bool)
        self.tokens_per_s_ = (float(pool.loc[fresh, "tokens"].sum() / pool.loc[fresh, "seconds"]
                                    .sum()) if fresh.any() and pool.loc[fresh, "seconds"].sum()
                              else float("nan"))

    def _writer_llm(self) -> LLM:
        llm, self.writer_source_ = run_llm(self.config.writer,
                                           getattr(self, "artifacts_in_", {}),
                                           self.config.llm, self.name, "writer")
        return llm

    def _retrieve(self, task: CTRTask, random_seed: int | None = None) -> Retrieved:
        """Neighbours of every task row among the kept pool (positions in the full pool)."""
        kept = self.pool_.iloc[self.kept_]
        pool_side = side(task, kept["row"].to_numpy())
        if self.query_side_ is None:  # every task row, shared by the random ablation
            self.query_side_ = side(task, np.arange(len(task)))
        found = retrieve(self.query_side_, pool_side, kept["label"].to_numpy(),
                         self.config.k_pos, self.config.k_neg, random_seed)
        found.pool_pos = np.where(found.pool_pos >= 0, self.kept_[np.maximum(found.pool_pos, 0)],
                                  -1)
        return found

    # --- training -------------------------------------------------------------------------
    def _backbone(self) -> dict[str, Any]:
        """The backbone alone: the run's own CRM of the same configuration when an earlier
        method trained it (no second training), else trained here."""
        shared = getattr(self, "artifacts_in_", {}).get(
            crm_key(self.config.backbone, self.model_config, self.train))
        if shared is None:
            return self._train_plain("none", None)
        self.stage_seconds_["train none: the run's own backbone, reused"] = 0.0
        self.log_.append(shared.log.assign(stage="none")[["stage", *shared.log.columns]])
        return shared.as_dict()

    def _train_plain(self, variant: str, regulariser: Any) -> dict[str, Any]:
        torch.manual_seed(self.train.seed)
        model = build_crm(self.config.backbone, self.task_.schema, self.model_config)
        return self._fit(variant, model, regulariser)

    def build_in_context(self, variant: str = "llmcf") -> InContextCRM:
        """The backbone widened by one field (from the backbone's own seed and init: zero
        weights on the new field) and an ICT for `variant`."""
        cfg = self.config
        torch.manual_seed(self.train.seed)
        plain = build_crm(cfg.backbone, self.task_.schema, self.model_config)
        wide = build_crm(cfg.backbone, self.task_.schema,
                         replace(self.model_config, extra_fields=1))
        widen_from(wide, plain)
        ict_config = cfg.ict
        if variant == "no_cot":
            ict_config = replace(ict_config, use_cot=False)
        elif variant == "mean_pool":
            ict_config = replace(ict_config, pooling="mean")
        dim = wide.embedding.dim
        ict = ICT(wide.embedding.n_base_fields * dim, self.cot_vectors_.shape[1], dim, cfg.k,
                  ict_config)
        rows = torch.from_numpy(self.pool_["row"].to_numpy().copy())
        pool_inputs = {k: v for k, v in self.tensors_.batch(rows).items()
                       if k in ("sparse", "tags", "hist_items", "hist_ratings")}
        return InContextCRM(wide, ict, pool_inputs, torch.from_numpy(self.cot_vectors_),
                            torch.tensor(self.pool_["label"].to_numpy()))

    def examples(self, variant: str) -> np.ndarray:
        found = self.random_ if variant == "random" else self.retrieved_
        return found.pool_pos

    def _train_in_context(self, variant: str, zero_ict: bool = False) -> dict[str, Any]:
        model = self.build_in_context(variant)
        model.zero_ict = zero_ict
        self.tensors_.arrays["examples"] = torch.from_numpy(self.examples(variant).astype(np.int64))
        aux = AuxiliaryLoss(self.config.aux_weight) \
            if self.config.aux_weight and model.ict.reconstruct is not None else None
        result = self._fit(variant, model, aux)
        self.models_[variant] = model
        return result

    def _train_kd(self, task: CTRTask) -> dict[str, Any]:
        rows = torch.from_numpy(self.pool_["row"].to_numpy().copy())
        candidates = {k: v for k, v in self.tensors_.batch(rows).items() if k != "label"}
        teacher = TeacherPoints(candidates, self.teacher_probs_, kind="kd", lam=self.config.kd_lam,
                                per_step=min(len(rows), 256), seed=self.config.seed)
        return self._train_plain("kd", teacher)

    def _fit(self, variant: str, model: nn.Module, regulariser: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        run = train_variant(model, self.task_, self.train, self.tensors_, self.name, variant,
                            regulariser)
        self.stage_seconds_[f"train {variant}"] = time.perf_counter() - t0
        self.log_.append(run.log)
        return run.as_dict()

    # --- analysis -------------------------------------------------------------------------
    @torch.no_grad()
    def analyse(self, variant: str = "llmcf") -> pd.DataFrame:
        """Per valid/test sample and retrieved example: rank, CoT, similarity parts, the
        example's label, the final position's attention on it and the reconstruction cosine,
        with both models' probabilities."""
        model = self.models_[variant].eval()
        task, found = self.task_, self.retrieved_
        pool_ids = self.pool_["cot_id"].to_numpy()
        pool_labels = self.pool_["label"].to_numpy()
        frames = []
        for split in EVAL_SPLITS:
            rows = task.index(split)
            attention, recon = [], []
            for start in range(0, len(rows), 4096):
                batch = self.tensors_.batch(torch.from_numpy(rows[start:start + 4096]))
                batch["examples"] = torch.from_numpy(found.pool_pos[rows[start:start + 4096]])
                out = model.in_context(batch)
                attention.append(out.attention.numpy())
                recon.append(out.recon_cos.numpy() if out.recon_cos is not None
                             else np.full(out.valid.shape, np.nan))
            attention, recon = np.concatenate(attention), np.concatenate(recon)
            k = found.pool_pos.shape[1]
            pos = found.pool_pos[rows]
            present = pos >= 0
            s = task.samples.iloc[rows]
            frame = pd.DataFrame({
                "sample_id": np.repeat(s["sample_id"].to_numpy(), k), "split": split,
                "rank": np.tile(np.arange(1, k + 1), len(rows)),
                "cot_id": np.where(present, pool_ids[np.maximum(pos, 0)], -1).ravel(),
                "neighbour_label": np.where(present, pool_labels[np.maximum(pos, 0)],
                                            np.nan).ravel(),
                "similarity": found.sim[rows].ravel(),
                "sim_history": found.sim_history[rows].ravel(),
                "sim_target": found.sim_target[rows].ravel(),
                "attention": attention[:, :k].ravel(),
                "attention_self": np.repeat(attention[:, k], k),
                "recon_cos": recon.ravel(),
                "label": np.repeat(task.labels[rows].astype(float), k),
                "p_backbone": np.repeat(self.results_["none"]["probs"][split], k),
                "p_llmcf": np.repeat(self.results_[variant]["probs"][split], k)})
            frames.append(frame[frame["cot_id"] >= 0])
        return pd.concat(frames, ignore_index=True)

    def _cot_table(self) -> pd.DataFrame:
        columns = ["cot_id", "sample_id", "user", "item", "label", "text", "completeness",
                   "relevance", "consistency", "repetition", "quality", "kept", "tokens",
                   "seconds", "cached", "model"]
        table = self.pool_[columns].copy()
        counts = np.bincount(self.retrieved_.pool_pos[self.retrieved_.pool_pos >= 0],
                             minlength=len(table))
        table["times_retrieved"] = counts  # over every train/valid/test sample
        return table

    # --- results --------------------------------------------------------------------------
    def results(self) -> list[MethodResult]:
        cfg = self.config
        pool = self.pool_
        base = {"config": plain_config(asdict(cfg)), "writer": self.writer_source_,
                "pool": int(len(pool)), "kept": int(pool["kept"].sum()),
                "cot_tokens_per_s": self.tokens_per_s_,
                "cot_mean_tokens": float(pool["tokens"].mean()),
                "cot_mean_quality": float(pool["quality"].mean()),
                "k": cfg.k, "offline_seconds": self.offline_seconds_}
        names = {"llmcf": self.name, "none": f"{self.name}_none"} | {
            v: f"{self.name}_{v}" for v in cfg.variants if v in self.results_}
        out = []
        for variant, name in names.items():
            r = self.results_[variant]
            out.append(MethodResult(
                name=name, kind="crm" if variant == "none" else "hybrid", probs=r["probs"],
                config={**base, "variant": variant, "best_epoch": r["best_epoch"]},
                cost={"train_seconds": r["seconds"], "infer_ms_per_1k": r["infer_ms_per_1k"],
                      "llm_calls_per_1k": 0.0,
                      "offline_llm_seconds": 0.0 if variant == "none" else self.offline_seconds_},
                description=DESCRIPTIONS[variant].format(backbone=cfg.backbone, k=cfg.k)))
        head = out[0]
        head.training_log = pd.concat(self.log_, ignore_index=True)
        head.diagnostics = {"cot": self._cot_table(), "neighbours": self.analyse()}
        head.stage_seconds = dict(self.stage_seconds_)
        head.weights = {self.name: {k: v.detach().contiguous() for k, v in
                                    self.models_["llmcf"].state_dict().items()}}
        return out

    def result(self) -> MethodResult:
        return self.results()[0]


DESCRIPTIONS = {
    "llmcf": "LLM-CF: {backbone} with one more field from the ICT module over {k} retrieved "
             "examples (features, the LLM's chain of thought, label); no LLM at inference",
    "none": "LLM-CF's backbone without the LLM: {backbone} from the same seed and init",
    "no_cot": "LLM-CF ablation: the retrieved examples' features and labels only, no chain "
              "of thought",
    "mean_pool": "LLM-CF ablation: the examples' tokens averaged instead of read by the "
                 "causal decoder",
    "random": "LLM-CF ablation: random pool examples (same label balance and exclusions) "
              "instead of the most similar",
    "kd": "KD baseline: {backbone} distilled from the LLM's P(yes) on the CoT pool's samples "
          "(the same LLM budget)",
}
