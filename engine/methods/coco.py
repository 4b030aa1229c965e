"""CoCo (seed 001) in the CTR setting: a pool of soft prompts chosen per user, decoupling,
fusion with the CRM, and contradiction elimination.

Per user window (up to `window` consecutive samples of one user in one split) the frozen LLM
reads the user's history as text, the snapshot before the window's first sample (no sample's
own or later items, so no leak), followed by the shared prompt tokens and the prompts the
user's CRM representation selects from the pool (engine.models.prompt_pool). One LLM pass
serves every sample of the window. Each selected prompt pulls one vector out of the LLM's
states (decoupling); the CRM's hidden representation attends over those vectors and itself,
and a zero-initialised head corrects the CRM's logit (engine.models.knowledge_fusion), so
CoCo is its CRM exactly at the start.

Training, in two phases: (1) the LLM frozen, gradients reach the prompts through it (BCE +
L_Q + L_ortho); (2) LoRA in the LLM's top layers, trained with contradiction elimination:
per sample, where the fused prediction's loss is lower than the CRM's alone the gradient into
the LLM stops, so the LoRA learns only from the samples the LLM made worse.

Two choices of ours, both for two CPU cores (README, design notes):
- Order [history; shared; selected prompts] rather than the paper's [prompts; shared;
  history]: in a causal LM the appended prompts still read the whole history, and the
  history's pass (keys, values, final states) is computed once per window and reused by every
  step, epoch and variant; only the 4-8 appended tokens run per step.
- The LoRA adapts the appended tokens' path; the history's cached states stay the base
  model's (recomputing every history per step would cost ~10x here).

The CRM is the run's own (same configuration and seed, no second training) and stays frozen:
CoCo learns a correction of it on a seeded subset of training windows.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from engine import distributed
from engine.data.task import CTRTask, history_text
from engine.errors import ConfigError
from engine.methods.base import (
    EVAL_SPLITS,
    Method,
    MethodResult,
    analysed_rows,
    plain_config,
    run_crm,
)
from engine.metrics import auc, segment_masks
from engine.models import crm_config
from engine.models.knowledge_fusion import Decoupler, Fusion, helped
from engine.models.llm import LLM, LLMConfig, PrefixStates
from engine.models.prompt_pool import PoolConfig, PromptPool, Selection, usage_stats
from engine.models.trainer import TaskTensors, TrainConfig

VARIANTS = ("shared_only", "mean_pool", "no_elimination")


@dataclass(frozen=True)
class CoCoConfig:
    crm: str = "dcnv2"
    crm_options: dict[str, Any] = field(default_factory=dict)
    llm: LLMConfig = LLMConfig(score_dtype="float32")
    pool: PoolConfig = PoolConfig()
    history_items: int = 5  # history items the LLM reads per window
    window: int = 128  # samples of one user (consecutive, one split) sharing one LLM pass
    train_windows: int = 96  # seeded subset of the training split's windows
    window_batch: int = 8  # windows per step
    prompt_epochs: int = 3  # phase 1: the LLM frozen, the prompts learn through it
    lora_epochs: int = 1  # phase 2: LoRA with contradiction elimination
    lora_top_layers: int = 4
    lora_r: int = 8
    width: int = 64  # decoupling and fusion width
    heads: int = 4
    lr: float = 2e-3  # the prompt pool (codes, shared tokens, user projection)
    head_lr: float = 1e-2  # decoupling and fusion: the zero head must grow before anything
    # upstream gets a gradient, in a few dozen steps
    lora_lr: float = 1e-3
    # keep, per phase, the epoch (0: the phase's starting point, for phase 1 the CRM itself)
    # with the best AUC on the analysed valid samples, as the CRMs' early stopping does
    select_on_valid: bool = True
    ortho_weight: float = 0.1
    vq_weight: float = 1.0
    analyse_valid: int = 200
    analyse_test: int = 500
    variants: tuple[str, ...] = VARIANTS
    k_sweep: tuple[int, ...] = ()  # more pool sizes, each trained as its own variant
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.history_items, self.window, self.train_windows, self.window_batch,
               self.width, self.heads, self.lora_r) < 1:
            raise ConfigError("CoCo's sizes (history_items, window, train_windows, "
                              "window_batch, width, heads, lora_r) must be >= 1")
        if self.width % self.heads:
            raise ConfigError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if self.prompt_epochs < 0 or self.lora_epochs < 0 or self.lora_top_layers < 0:
            raise ConfigError("prompt_epochs, lora_epochs and lora_top_layers must be >= 0")
        if min(self.lr, self.head_lr, self.lora_lr) <= 0 or min(self.ortho_weight,
                                                                self.vq_weight) < 0:
            raise ConfigError("lr, head_lr and lora_lr must be > 0, the loss weights >= 0")
        if min(self.analyse_valid, self.analyse_test) < 1:
            raise ConfigError("analyse_valid and analyse_test must be >= 1")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ConfigError(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
        bad = [k for k in self.k_sweep if k < self.pool.max_selected]
        if bad:
            raise ConfigError(f"k_sweep sizes {bad} are below pool.max_selected "
                              f"({self.pool.max_selected})")


@dataclass(frozen=True)
class VariantSpec:
    """How one stored variant differs from the headline."""

    key: str  # "coco", a VARIANTS entry or "k<K>"
    pool: bool = True  # False: the shared prompt only
    decoupling: str = "attention"
    elimination: bool = True
    size: int | None = None  # pool size override (the K sweep)
    reuse_prompts_of: str | None = None  # phase 1 shared with another variant


SPECS = {"shared_only": VariantSpec("shared_only", pool=False),
         "mean_pool": VariantSpec("mean_pool", decoupling="mean"),
         "no_elimination": VariantSpec("no_elimination", elimination=False,
                                       reuse_prompts_of="coco")}


@dataclass
class Windows:
    """User windows: per window its scored task rows (time order), the row whose history is
    the snapshot (the window's first sample in its split), and the user's index."""

    rows: list[np.ndarray]
    first: np.ndarray
    users: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, ids: np.ndarray) -> Windows:
        return Windows([self.rows[i] for i in ids], self.first[ids], self.users[ids])


def user_windows(task: CTRTask, split: str, size: int, keep: np.ndarray | None = None
                 ) -> Windows:
    """Chunks of `size` consecutive samples per user in `split`; with `keep`, only windows
    holding a kept row, each scoring only its kept rows (its snapshot is still the window's
    first sample, so the analysed subset does not change what a window reads)."""
    rows = task.index(split)
    users = task.sparse[rows, 0]
    position = pd.Series(users).groupby(users).cumcount().to_numpy()
    key = pd.MultiIndex.from_arrays([users, position // size])
    codes, _ = pd.factorize(key)
    kept = np.ones(len(rows), bool) if keep is None else np.isin(rows, keep)
    out_rows, first, owner = [], [], []
    for group in pd.Series(np.arange(len(rows))).groupby(codes, sort=True).indices.values():
        group = np.sort(group)
        scored = group[kept[group]]
        if len(scored):
            out_rows.append(rows[scored])
            first.append(rows[group[0]])
            owner.append(users[group[0]])
    return Windows(out_rows, np.array(first, dtype=np.int64), np.array(owner, dtype=np.int64))


@dataclass
class CoCoParts:
    """One trained variant: its pool, decoupler, fusion and LoRA weights."""

    spec: VariantSpec
    pool: PromptPool
    decoupler: Decoupler
    fusion: Fusion
    lora: dict[str, torch.Tensor] | None = None

    def modules(self) -> list[nn.Module]:
        return [self.pool, self.decoupler, self.fusion]


@dataclass
class WindowPass:
    """What the LLM side gives a batch of windows: decoupling queries, their weights, the
    states to decouple from (history + appended tokens) and the selection."""

    queries: torch.Tensor
    weights: torch.Tensor
    states: torch.Tensor
    state_mask: torch.Tensor
    selection: Selection | None


class CoCo(Method):
    def __init__(self, name: str = "coco", config: CoCoConfig = CoCoConfig(),
                 train: TrainConfig = TrainConfig()) -> None:
        self.name = name
        self.config = config
        self.train = train

    # --- fit ------------------------------------------------------------------------------
    def fit(self, task: CTRTask) -> CoCo:
        cfg = self.config
        self.task_ = task
        self.tensors_ = TaskTensors(task)
        self.stage_seconds_: dict[str, float] = {}
        self.log_: list[dict] = []
        t0 = time.perf_counter()
        self.crm_ = copy.deepcopy(run_crm(cfg.crm, crm_config(cfg.crm, cfg.crm_options),
                                          self.train, task, self.tensors_,
                                          getattr(self, "artifacts_in_", {}), self.name)).eval()
        for p in self.crm_.parameters():
            p.requires_grad_(False)
        self.stage_seconds_["CRM (the run's, reused when trained)"] = time.perf_counter() - t0
        self._windows(task)
        self._crm_features(task)
        self.llm_ = self._llm()
        t0 = time.perf_counter()
        # training batches give any rank any window; each rank scores its share of the
        # analysed windows, so under torchrun it reads only their histories
        texts = [self.history_text(int(r)) for r in self.train_windows_.first]
        shares = {s: self._eval_share(s) for s in EVAL_SPLITS}
        texts += [self.history_text(int(self.eval_windows_[s].first[i]))
                  for s in EVAL_SPLITS for i in shares[s]]
        unique = list(dict.fromkeys(texts))
        states = dict(zip(unique, self.llm_.prefix_states(unique, progress=True)))
        self.train_prefix_ = [states[t] for t in texts[:len(self.train_windows_)]]
        rest = texts[len(self.train_windows_):]
        self.eval_prefix_: dict[str, list[PrefixStates | None]] = {}
        for split in EVAL_SPLITS:
            n = len(shares[split])
            self.eval_prefix_[split] = [None] * len(self.eval_windows_[split])
            for i, text in zip(shares[split], rest[:n]):
                self.eval_prefix_[split][i] = states[text]
            rest = rest[n:]
        self.stage_seconds_[f"LLM pass over {len(unique):,} window histories"] = (
            time.perf_counter() - t0)
        self._add_lora()
        self.parts_: dict[str, CoCoParts] = {}
        self.prompts_state_: dict[str, tuple] = {}  # each variant's modules after phase 1
        self.chosen_epochs_: dict[str, int] = {}  # "<variant>:<phase>" -> epoch kept
        for spec in self._specs():
            t0 = time.perf_counter()
            self.parts_[spec.key] = self._train_variant(spec)
            self.stage_seconds_[f"train {spec.key}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.scores_: dict[str, dict[str, np.ndarray]] = {}
        self.trace_: dict[str, dict] = {}
        for key, parts in self.parts_.items():
            self.scores_[key], self.trace_[key] = self.score(parts)
        self.stage_seconds_["scoring the analysed samples"] = time.perf_counter() - t0
        return self

    def _specs(self) -> list[VariantSpec]:
        cfg = self.config
        return [VariantSpec("coco"), *(SPECS[v] for v in cfg.variants),
                *(VariantSpec(f"k{k}", size=k) for k in cfg.k_sweep)]

    def _eval_share(self, split: str) -> np.ndarray:
        """The analysed windows of `split` this rank scores (all of them in one process)."""
        return distributed.share(np.arange(len(self.eval_windows_[split])))

    def history_text(self, row: int) -> str:
        """What the LLM reads of a window: the user's most recent rated items before it."""
        task = self.task_
        titles = task.items["title"].to_numpy()
        text = history_text(titles, task.rating_levels, task.hist_items[row],
                            task.hist_ratings[row], self.config.history_items)
        return f"A user's recent ratings: {text}."

    def _windows(self, task: CTRTask) -> None:
        cfg = self.config
        self.rows_ = analysed_rows(task, cfg.analyse_valid, cfg.analyse_test, cfg.seed)
        every = user_windows(task, "train", cfg.window)
        if len(every) < 1:
            raise ConfigError("CoCo needs training samples")
        rng = np.random.default_rng(cfg.seed)
        pick = np.sort(rng.choice(len(every), size=min(cfg.train_windows, len(every)),
                                  replace=False))
        self.train_windows_ = every.take(pick)
        self.eval_windows_ = {s: user_windows(task, s, cfg.window, self.rows_[s])
                              for s in EVAL_SPLITS}

    @torch.no_grad()
    def _crm_features(self, task: CTRTask) -> None:
        """The frozen CRM's logit and hidden representation (its head's input) per row of
        every training window and analysed sample, computed once."""
        rows = np.unique(np.concatenate([*self.train_windows_.rows,
                                         *(self.rows_[s] for s in EVAL_SPLITS)]))
        head = getattr(self.crm_, "head", None) or self.crm_.deep_head
        seen: list[torch.Tensor] = []
        hook = head.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        logits = []
        try:
            for start in range(0, len(rows), 4096):
                part = torch.from_numpy(rows[start:start + 4096])
                logits.append(self.crm_(self.tensors_.batch(part)))
        finally:
            hook.remove()
        self.crm_rows_ = rows
        self.crm_logit_ = torch.cat(logits).float()
        self.crm_hidden_ = torch.cat(seen).float()
        self.user_dim_ = self.user_vectors(self.task_.sparse[:1, 0]).shape[1]

    @torch.no_grad()
    def user_vectors(self, user_idx: np.ndarray) -> torch.Tensor:
        """e_u: the CRM's embeddings of the user's fields (id and attributes), joined."""
        tables = self.crm_.embedding.tables
        codes = self.task_.codes
        n_attr = 0 if codes is None else codes.user_codes.shape[1]
        idx = torch.as_tensor(user_idx, dtype=torch.long)
        parts = [tables[0](idx)]
        for j in range(n_attr):
            parts.append(tables[2 + j](torch.as_tensor(codes.user_codes[user_idx, j])))
        return torch.cat(parts, 1).float()

    def _features(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pos = torch.from_numpy(np.searchsorted(self.crm_rows_, rows))
        labels = torch.from_numpy(self.task_.labels[rows].astype(np.float32))
        return self.crm_hidden_[pos], self.crm_logit_[pos], labels

    def _llm(self) -> LLM:
        torch.manual_seed(self.config.seed)
        llm = LLM(self.config.llm)
        for p in llm.model.parameters():
            p.requires_grad_(False)
        llm.model.float().eval()
        self.token_norm_ = float(llm._backbone().embed_tokens.weight.norm(dim=-1).mean())
        return llm

    def _add_lora(self) -> None:
        cfg = self.config
        self.lora_params_: list[nn.Parameter] = []
        if not cfg.lora_epochs:
            return
        top = min(cfg.lora_top_layers, self.llm_.n_layers)  # 0: every layer
        self.llm_.add_lora(r=cfg.lora_r, alpha=2 * cfg.lora_r, dropout=0.0,
                           top_layers=top if self.llm_.splittable else 0)
        self.llm_.model.eval()
        self.lora_params_ = [p for n, p in self.llm_.model.named_parameters() if "lora_" in n]
        self.lora_init_ = {k: v.clone() for k, v in self.llm_.lora_state().items()}

    def _use_lora(self, state: dict[str, torch.Tensor] | None) -> None:
        if self.lora_params_:
            self.llm_.load_lora_state(state if state is not None else self.lora_init_)

    # --- the model ------------------------------------------------------------------------
    def build_parts(self, spec: VariantSpec) -> CoCoParts:
        """A variant's modules at initialisation (seeded): prompts from k-means over the
        training users, a zero fusion head."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        pool_config = cfg.pool if spec.size is None else _resized(cfg.pool, spec.size)
        hidden = self.llm_.hidden_size
        pool = PromptPool(pool_config, self.user_dim_, hidden, self.token_norm_)
        pool.init_codes(self.user_vectors(np.unique(self.train_windows_.users)), cfg.seed)
        decoupler = Decoupler(hidden, cfg.width, cfg.heads, spec.decoupling)
        decoupler.standardise(torch.cat([p.final for p in self.train_prefix_]))
        fusion = Fusion(self.crm_hidden_.shape[1], cfg.width)
        return CoCoParts(spec, pool, decoupler, fusion)

    def window_pass(self, parts: CoCoParts, prefixes: list[PrefixStates],
                    users: np.ndarray) -> WindowPass:
        """One LLM pass for a batch of windows: [history (cached); shared; selected]."""
        pool = parts.pool
        b = len(prefixes)
        shared = pool.shared[None].expand(b, -1, -1)
        ones = torch.ones((b, shared.shape[1]), dtype=torch.bool)
        if parts.spec.pool:
            selection = pool.select(self.user_vectors(users))
            chosen = pool.selected_embeds(selection)
            tokens, mask = torch.cat([shared, chosen], 1), torch.cat([ones, selection.mask], 1)
            queries, weights = chosen, selection.weights
        else:
            selection = None
            tokens, mask, queries = shared, ones, shared
            weights = torch.full(ones.shape, 1.0 / ones.shape[1])
        out = self.llm_.forward_embeds(tokens, mask, prefixes)
        longest = max(p.length for p in prefixes)
        history = out.new_zeros((b, longest, out.shape[-1]))
        history_mask = torch.zeros((b, longest), dtype=torch.bool)
        for i, p in enumerate(prefixes):
            history[i, :p.length] = p.final
            history_mask[i, :p.length] = True
        if parts.spec.decoupling == "mean":
            weights = torch.ones((b, 1))
        return WindowPass(queries, weights, torch.cat([history, out], 1),
                          torch.cat([history_mask, mask], 1), selection)

    def batch_loss(self, parts: CoCoParts, windows: Windows, prefixes: list[PrefixStates],
                   phase: str, elimination: bool, force_helped: bool | None = None
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one batch of windows and what to log. phase "prompts": BCE + L_Q +
        L_ortho; phase "lora": BCE, with the gradient into the LLM stopped for the samples
        the LLM helped when `elimination` (force_helped overrides the mask, for tests)."""
        cfg = self.config
        wp = self.window_pass(parts, prefixes, windows.users)
        counts = [len(r) for r in windows.rows]
        owner = torch.from_numpy(np.repeat(np.arange(len(windows)), counts))
        rows = np.concatenate(windows.rows)
        hidden, crm_logit, labels = self._features(rows)
        free = parts.decoupler(wp.queries, wp.states, wp.state_mask)
        weights = wp.weights[owner]
        if phase == "lora" and elimination:
            stopped = parts.decoupler(wp.queries, wp.states.detach(), wp.state_mask)
            with torch.no_grad():
                first, _ = parts.fusion(hidden, crm_logit, stopped[owner], weights)
            mask = helped(first, crm_logit, labels)
            if force_helped is not None:
                mask = torch.full_like(mask, force_helped)
            vectors = torch.where(mask[:, None, None], stopped[owner], free[owner])
            logit, _ = parts.fusion(hidden, crm_logit, vectors, weights)
        else:
            logit, _ = parts.fusion(hidden, crm_logit, free[owner], weights)
            mask = helped(logit, crm_logit, labels)
        bce = F.binary_cross_entropy_with_logits(logit, labels)
        logs = {"bce": float(bce.detach()), "mask_rate": float(mask.float().mean()),
                **self._mask_rate_by_segment(rows, mask)}
        loss = bce
        if phase == "prompts" and parts.spec.pool:
            l_q = parts.pool.vq_loss(self.user_vectors(windows.users), wp.selection)
            l_ortho = parts.pool.ortho_loss()
            loss = loss + cfg.vq_weight * l_q + cfg.ortho_weight * l_ortho
            logs |= {"l_q": float(l_q.detach()), "l_ortho": float(l_ortho.detach())}
        return loss, logs

    def _mask_rate_by_segment(self, rows: np.ndarray, mask: torch.Tensor) -> dict[str, float]:
        """The mask rate over the batch's samples of each segment it holds
        ("mask_rate:<segment>"): where the LLM helps as training goes."""
        flags = segment_masks(self.task_.samples.iloc[rows])
        return {f"mask_rate:{name}": float(mask[torch.from_numpy(m)].float().mean())
                for name, m in flags.items() if name != "all" and m.any()}

    def _train_variant(self, spec: VariantSpec) -> CoCoParts:
        cfg = self.config
        source = spec.reuse_prompts_of
        if source is not None and source in self.parts_:
            parts = copy.deepcopy(self.parts_[source])
            parts.spec, parts.lora = spec, None
            parts.pool.load_state_dict(self.prompts_state_[source][0])
            parts.decoupler.load_state_dict(self.prompts_state_[source][1])
            parts.fusion.load_state_dict(self.prompts_state_[source][2])
        else:
            parts = self.build_parts(spec)
            self._use_lora(None)
            self._phase(parts, "prompts", cfg.prompt_epochs, cfg.lr)
        self.prompts_state_[spec.key] = tuple(copy.deepcopy(m.state_dict())
                                              for m in parts.modules())
        if self.lora_params_:
            self._use_lora(None)
            self._phase(parts, "lora", cfg.lora_epochs, cfg.lora_lr)
            parts.lora = {k: v.clone() for k, v in self.llm_.lora_state().items()}
        return parts

    def _phase(self, parts: CoCoParts, phase: str, epochs: int, lr: float) -> None:
        """Phase "prompts": the pool (at `lr`), decoupling and fusion (at head_lr) learn, the
        LLM frozen. Phase "lora": the LoRA (at `lr`), decoupling and fusion; the pool stays
        as phase 1 left it."""
        cfg = self.config
        head = [p for m in (parts.decoupler, parts.fusion) for p in m.parameters()]
        upstream = list(parts.pool.parameters()) if phase == "prompts" else self.lora_params_
        for p in parts.pool.parameters():
            p.requires_grad_(phase == "prompts")
        for p in self.lora_params_:
            p.requires_grad_(phase == "lora")
            p.grad = None
        if not epochs:
            return
        optimiser = torch.optim.AdamW([{"params": upstream, "lr": lr},
                                       {"params": head, "lr": cfg.head_lr}])
        run = distributed.data_parallel([*upstream, *head])  # DDP under torchrun
        rng = np.random.default_rng(cfg.seed + (phase == "lora"))
        windows = self.train_windows_
        sizes = np.array([len(r) for r in windows.rows])
        step = 0
        stage = f"{parts.spec.key}:{phase}"
        best = self._checkpoint(parts, stage, step, 0, None)

        def share_loss(ids: np.ndarray, weight: float) -> tuple[torch.Tensor, dict]:
            loss, logs = self.batch_loss(parts, windows.take(ids),
                                         [self.train_prefix_[i] for i in ids], phase,
                                         parts.spec.elimination)
            return loss * weight, logs

        for epoch in range(epochs):
            order = rng.permutation(len(windows))
            starts = range(0, len(order), cfg.window_batch)
            for start in tqdm(starts, desc=f"CoCo {stage} epoch {epoch + 1}/{epochs}",
                              unit="batch", leave=False, disable=not distributed.current().main):
                ids = order[start:start + cfg.window_batch]
                mine = distributed.batch_share(ids)  # under torchrun: a share of the windows
                if mine is None:
                    continue
                # weighted by samples: DDP's average is the mean over the batch's samples
                weight = distributed.share_weight(int(sizes[mine].sum()), int(sizes[ids].sum()))
                loss, logs = run(share_loss, mine, weight)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                step += 1
                logs = distributed.all_mean_dict(logs, float(sizes[mine].sum()))
                self.log_ += [{"stage": stage, "epoch": step, "metric": k, "value": v}
                              for k, v in logs.items()]
            if parts.spec.pool and phase == "prompts":
                with torch.no_grad():
                    top = parts.pool.select(self.user_vectors(windows.users)).top.numpy()
                perplexity, dead = usage_stats(top, parts.pool.config.size)
                self.log_ += [{"stage": stage, "epoch": step, "metric": "perplexity",
                               "value": perplexity},
                              {"stage": stage, "epoch": step, "metric": "dead_codes",
                               "value": float(dead)}]
            best = self._checkpoint(parts, stage, step, epoch + 1, best)
        if best is not None:  # back to the best epoch on valid
            for module, state in zip(parts.modules(), best[2]):
                module.load_state_dict(state)
            if best[3] is not None:
                self.llm_.load_lora_state(best[3])
        self.chosen_epochs_[stage] = best[1] if best is not None else epochs
        for p in parts.pool.parameters():
            p.requires_grad_(False)

    def _checkpoint(self, parts: CoCoParts, stage: str, step: int, epoch: int,
                    best: tuple | None) -> tuple | None:
        """Log the analysed valid samples' AUC now and return the better of (auc, epoch,
        module states, LoRA state) and `best` (None when select_on_valid is off)."""
        if not self.config.select_on_valid:
            return None
        probs, _ = self.score(parts, ("valid",), load_lora=False)
        value = auc(self.task_.labels[self.rows_["valid"]], probs["valid"])
        self.log_.append({"stage": stage, "epoch": step, "metric": "valid_auc",
                          "value": float(value)})
        if best is not None and not value > best[0]:
            return best
        lora = ({k: v.clone() for k, v in self.llm_.lora_state().items()}
                if self.lora_params_ else None)
        return (value, epoch, [copy.deepcopy(m.state_dict()) for m in parts.modules()], lora)

    @torch.no_grad()
    def score(self, parts: CoCoParts, splits: tuple[str, ...] = EVAL_SPLITS,
              load_lora: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """P(click) of every analysed sample (aligned with rows_[split]) and, per sample, its
        window's selection and the fusion's attention; with load_lora False the LLM keeps the
        LoRA weights it has now (validation during training)."""
        if load_lora:
            self._use_lora(parts.lora)
        probs, trace = {}, {}
        size = 2 * self.config.window_batch
        for split in splits:
            windows, prefixes = self.eval_windows_[split], self.eval_prefix_[split]
            out = pd.Series(np.nan, index=self.rows_[split])
            frames = []
            mine = self._eval_share(split)  # under torchrun, this rank's windows
            for start in range(0, len(mine), size):
                ids = mine[start:start + size]
                part = windows.take(ids)
                wp = self.window_pass(parts, [prefixes[i] for i in ids], part.users)
                vectors = parts.decoupler(wp.queries, wp.states, wp.state_mask)
                counts = [len(r) for r in part.rows]
                owner = torch.from_numpy(np.repeat(np.arange(len(part)), counts))
                rows = np.concatenate(part.rows)
                hidden, crm_logit, _ = self._features(rows)
                logit, attention = parts.fusion(hidden, crm_logit, vectors[owner],
                                                wp.weights[owner])
                frame = {"row": rows, "prob": torch.sigmoid(logit).double().numpy(),
                         "p_crm": torch.sigmoid(crm_logit).double().numpy(),
                         "llm_share": (1 - attention[:, -1]).double().numpy()}
                if wp.selection is not None:
                    sel = wp.selection
                    for key, value in (("ids", sel.ids), ("cosines", sel.cosines),
                                       ("weights", sel.weights)):
                        frame[key] = list(value[owner].numpy())
                frames.append(pd.DataFrame(frame))
            frames = [f for part in distributed.gather_objects(frames) for f in part]
            scored = pd.concat(frames, ignore_index=True).set_index("row")
            out.loc[scored.index] = scored.pop("prob").to_numpy()
            probs[split] = out.to_numpy()
            trace[split] = scored.loc[self.rows_[split]].reset_index()
        return probs, trace

    # --- analysis -------------------------------------------------------------------------
    def prompt_usage(self) -> pd.DataFrame:
        """Per analysed sample: the selected prompts with cosines and weights, how much of
        the fusion's attention went to the LLM's vectors, p_crm and p_coco."""
        samples = self.task_.samples
        frames = []
        for split in EVAL_SPLITS:
            t = self.trace_["coco"][split]
            rows = t["row"].to_numpy()
            ids = [np.asarray(v) for v in t["ids"]]
            keep = [v >= 0 for v in ids]
            frames.append(pd.DataFrame({
                "sample_id": samples["sample_id"].to_numpy()[rows], "split": split,
                "user": samples["user"].to_numpy()[rows],
                "label": self.task_.labels[rows].astype(float),
                "prompt_ids": [",".join(str(int(i)) for i in v[k]) for v, k in zip(ids, keep)],
                "prompt_cosines": [",".join(f"{c:.4f}" for c in np.asarray(v)[k])
                                   for v, k in zip(t["cosines"], keep)],
                "prompt_weights": [",".join(f"{w:.4f}" for w in np.asarray(v)[k])
                                   for v, k in zip(t["weights"], keep)],
                "n_selected": [int(k.sum()) for k in keep],
                "top_prompt": [int(v[0]) for v in ids],
                "top_cosine": [float(np.asarray(v)[0]) for v in t["cosines"]],
                "llm_share": t["llm_share"].to_numpy(),
                "p_crm": t["p_crm"].to_numpy(), "p_coco": self.scores_["coco"][split]}))
        return pd.concat(frames, ignore_index=True)

    @torch.no_grad()
    def prompt_pool(self, usage: pd.DataFrame) -> pd.DataFrame:
        """Per prompt of the headline's pool: its share of each split's samples (training
        windows' samples for train) and of the test segments, the users whose top prompt it
        is, their mean cosine, the nearest vocabulary tokens, the CRM's and CoCo's AUC over
        the test samples it serves first, and its cosine to every other prompt."""
        pool = self.parts_["coco"].pool
        size = pool.config.size
        samples = self.task_.samples
        train_sel = pool.select(self.user_vectors(self.train_windows_.users))
        counts = np.array([len(r) for r in self.train_windows_.rows])
        train_ids = np.repeat(train_sel.ids.numpy(), counts, axis=0)
        users = np.unique(self.task_.sparse[:, 0])
        everyone = pool.select(self.user_vectors(users))
        embed = self.llm_._backbone().embed_tokens.weight
        nearest = (F.normalize(pool.codes, dim=-1) @ F.normalize(embed, dim=-1).T).topk(5).indices
        tokenizer = self.llm_.tokenizer
        unit = F.normalize(pool.codes, dim=-1)
        gram = (unit @ unit.T).numpy()
        test = usage[usage["split"] == "test"]
        test_rows = samples.set_index("sample_id").loc[test["sample_id"]]
        out = []
        for k in range(size):
            chosen = usage["prompt_ids"].str.split(",").apply(lambda v, k=k: str(k) in v)
            row: dict[str, Any] = {"prompt": k,
                                   "share_train": float((train_ids == k).any(1).mean())}
            for split in EVAL_SPLITS:
                row[f"share_{split}"] = float(chosen[usage["split"] == split].mean())
            in_test = chosen[usage["split"] == "test"].to_numpy()
            for segment in ("cold_user", "long_tail_item"):
                seg = test_rows[segment].to_numpy().astype(bool)
                row[f"share_{segment}"] = float(in_test[seg].mean()) if seg.any() else np.nan
            top_users = everyone.top.numpy() == k
            row["top_users"] = int(top_users.sum())
            row["mean_cosine"] = float(everyone.all_cosines[:, k].mean())
            row["nearest_tokens"] = " | ".join(
                tokenizer.decode([int(t)]).strip() or repr(tokenizer.decode([int(t)]))
                for t in nearest[k])
            served = test[test["top_prompt"] == k]
            row["n_test"] = len(served)
            two = served["label"].nunique() == 2
            row["auc_crm"] = auc(served["label"], served["p_crm"]) if two else np.nan
            row["auc_coco"] = auc(served["label"], served["p_coco"]) if two else np.nan
            row |= {f"cos_{j}": float(gram[k, j]) for j in range(size)}
            out.append(row)
        return pd.DataFrame(out)

    @torch.no_grad()
    def prompt_users(self) -> pd.DataFrame:
        """Every user of the task: the top prompt and its cosine, how many prompts the user
        gets, and a 2-D UMAP of the users' projected vectors (the space prompts are chosen
        in)."""
        from engine.maps import MapConfig, umap_2d

        pool = self.parts_["coco"].pool
        samples = self.task_.samples
        first = samples.drop_duplicates("user")
        user_idx = self.task_.sparse[first.index.to_numpy(), 0]
        selection = pool.select(self.user_vectors(user_idx))
        projected = F.normalize(pool.projected(self.user_vectors(user_idx)), dim=-1).numpy()
        if len(projected) > 3:
            xy = umap_2d(projected, MapConfig(n_neighbors=15, seed=self.config.seed))
        else:
            xy = np.zeros((len(projected), 2))
        return pd.DataFrame({"user": first["user"].to_numpy(),
                             "top_prompt": selection.top.numpy(),
                             "top_cosine": selection.all_cosines.max(1).values.numpy(),
                             "n_selected": selection.count.numpy(),
                             "x": xy[:, 0], "y": xy[:, 1]})

    # --- results --------------------------------------------------------------------------
    def results(self) -> list[MethodResult]:
        cfg = self.config
        n = sum(len(r) for r in self.rows_.values())
        n_windows = sum(len(w) for w in self.eval_windows_.values())
        scoring = self.stage_seconds_["scoring the analysed samples"]
        per_1k = 1e6 * scoring / max(n, 1) / max(len(self.parts_), 1)
        base = {"config": plain_config(asdict(cfg)), "train_windows": len(self.train_windows_),
                "train_samples": int(sum(len(r) for r in self.train_windows_.rows)),
                "eval_windows": n_windows, "token_norm": self.token_norm_,
                "chosen_epochs": dict(self.chosen_epochs_)}
        out = []
        for key, parts in self.parts_.items():
            seconds = self.stage_seconds_.get(f"train {key}", 0.0)
            out.append(MethodResult(
                name=self.name if key == "coco" else f"{self.name}_{key}", kind="hybrid",
                probs=self.scores_[key], rows=dict(self.rows_),
                config={**base, "variant": key, "spec": asdict(parts.spec)},
                cost={"infer_ms_per_1k": per_1k, "train_seconds": seconds,
                      # one LLM pass per window serves all of its samples
                      "llm_calls_per_1k": 1000.0 * n_windows / max(n, 1)},
                description=_description(parts.spec)))
        crm_probs = {s: self.trace_["coco"][s]["p_crm"].to_numpy() for s in EVAL_SPLITS}
        out.append(MethodResult(
            name=f"{self.name}_crm", kind="crm", probs=crm_probs, rows=dict(self.rows_),
            config={**base, "variant": "crm"},
            cost={"train_seconds": 0.0, "llm_calls_per_1k": 0.0, "infer_ms_per_1k": 0.0},
            description=f"CoCo's CRM alone ({cfg.crm}, the run's own) on the same samples"))
        head = out[0]
        usage = self.prompt_usage()
        head.diagnostics = {"prompt_usage": usage, "prompt_pool": self.prompt_pool(usage),
                            "prompt_users": self.prompt_users()}
        head.training_log = pd.DataFrame(self.log_, columns=["stage", "epoch", "metric",
                                                             "value"])
        head.stage_seconds = dict(self.stage_seconds_)
        head.weights = {f"{self.name}_{key}": {
            f"{m}.{k}": v.detach().contiguous()
            for m, module in (("pool", parts.pool), ("decoupler", parts.decoupler),
                              ("fusion", parts.fusion))
            for k, v in module.state_dict().items()} | {
            f"lora.{k}": v.contiguous() for k, v in (parts.lora or {}).items()}
            for key, parts in self.parts_.items()}
        return out

    def result(self) -> MethodResult:
        return self.results()[0]


def _resized(pool: PoolConfig, size: int) -> PoolConfig:
    return replace(pool, size=size, max_selected=min(pool.max_selected, size))


def _description(spec: VariantSpec) -> str:
    if spec.key == "coco":
        return ("CoCo: prompts chosen per user from a soft-prompt pool, decoupled from the "
                "LLM's states and fused with the CRM; LoRA with contradiction elimination")
    if spec.size is not None:
        return f"CoCo with a pool of {spec.size} prompts (the K sweep)"
    return {"shared_only": "CoCo ablation: the shared prompt only, no pool",
            "mean_pool": "CoCo ablation: the LLM's states mean-pooled instead of decoupled",
            "no_elimination": "CoCo ablation: contradiction elimination off (the LoRA "
                              "learns from every sample)"}[spec.key]

