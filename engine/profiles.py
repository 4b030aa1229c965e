"""Profiles: one-level presets for task, training and the methods of a run.

Loaded as `Profile(**d)`-style dataclasses, so a typo in an override fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from engine.data.task import TaskConfig
from engine.errors import ConfigError
from engine.maps import MapConfig
from engine.methods.coco import CoCoConfig
from engine.methods.cora import CoRAConfig
from engine.methods.corella import CoReLLaConfig
from engine.methods.llmcf import LLMCFConfig
from engine.methods.sllmr import SLLMRConfig
from engine.models.collab_weights import CollabConfig
from engine.models.llm import LLMConfig, cpu_has_bf16
from engine.models.prompt_pool import PoolConfig
from engine.models.trainer import TrainConfig
from engine.options import override


@dataclass(frozen=True)
class MethodSpec:
    """One method of a run: its registry kind, the name it is stored under, its options."""

    kind: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    task: TaskConfig
    train: TrainConfig
    methods: tuple[MethodSpec, ...]
    maps: MapConfig | None = None  # embedding maps built with the run (None: none)
    # wall seconds of the whole run on the 2-core reference CPU (README), for the ETA before
    # a run of this profile exists on the machine; None: not measured (GPU profiles)
    typical_seconds: float | None = None
    # the same on a 2-core CPU with native bf16 (AVX512-BF16/AMX), where the LLM scores in
    # bf16 (the demo: 13 min 20 s there, ~1 h without); None: as typical_seconds
    typical_seconds_bf16: float | None = None

    def typical(self) -> float | None:
        """The whole run's wall seconds expected on this machine's kind of CPU."""
        if self.typical_seconds_bf16 is not None and cpu_has_bf16():
            return self.typical_seconds_bf16
        return self.typical_seconds


def _crms(options: dict[str, Any], names: tuple[str, ...] = ("dcnv2", "deepfm", "din")
          ) -> tuple[MethodSpec, ...]:
    return tuple(MethodSpec("crm", n, {"model": n, "model_options": options}) for n in names)


def _corella(crm_options: dict[str, Any], **config: Any) -> MethodSpec:
    return MethodSpec("corella", "corella",
                      {"config": CoReLLaConfig(crm_options=crm_options, **config)})


def _sllmr(crm_options: dict[str, Any], **config: Any) -> MethodSpec:
    return MethodSpec("sllmr", "sllmr",
                      {"config": SLLMRConfig(crm_options=crm_options, **config)})


def _llmcf(crm_options: dict[str, Any], **config: Any) -> MethodSpec:
    return MethodSpec("llmcf", "llmcf",
                      {"config": LLMCFConfig(crm_options=crm_options, **config)})


def _cora(crm_options: dict[str, Any], **config: Any) -> MethodSpec:
    return MethodSpec("cora", "cora",
                      {"config": CoRAConfig(crm_options=crm_options, **config)})


def _coco(crm_options: dict[str, Any], **config: Any) -> MethodSpec:
    return MethodSpec("coco", "coco",
                      {"config": CoCoConfig(crm_options=crm_options, **config)})


SMOKE_CRM = {"embed_dim": 8, "deep_layers": (32, 16)}
SMOKE_LLM = LLMConfig(batch_size=8, max_length=256, score_dtype="float32")

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="tests: ~60 users, tiny CRMs, SmolLM2 on a few dozen prompts; ~2.5 min",
        task=TaskConfig(max_users=60, prompt_history=5),
        train=TrainConfig(batch_size=256, max_epochs=2, patience=1),
        # every LLM in float32: the smoke run (the tests' run) gives the same numbers on CPUs
        # with and without native bf16, and sharded scoring equals one process's exactly
        # (bf16 rounds differently as torchrun's shares change the batches)
        methods=_crms(SMOKE_CRM, ("dcnv2", "deepfm")) + (_corella(
            SMOKE_CRM, stage2_samples=8, stage3_samples=8, analyse_valid=16, analyse_test=32,
            answers=2, lora_top_layers=4, llm=SMOKE_LLM),
            _sllmr(SMOKE_CRM, users=8, labelled=4, popular=1, long_tail=1,
                   pairs_per_user=6, mc_passes=4, llm=SMOKE_LLM),
            _llmcf(SMOKE_CRM, pool_size=8, cot_tokens=24, llm=SMOKE_LLM),
            # after CoReLLa with the same analysed samples, top layers and LLM settings: the
            # frozen layers' states of the analysed prompts and of its 8 stage-3 prompts
            # (CoRA's training prompts) are CoReLLa's
            _cora(SMOKE_CRM, mf_dim=8, train_samples=8, train_skip=8, epochs=1,
                  analyse_valid=16, analyse_test=32, llm=SMOKE_LLM,
                  collab=CollabConfig(top_layers=4)),
            _coco(SMOKE_CRM, window=16, train_windows=8, window_batch=4, prompt_epochs=1,
                  lora_epochs=1, analyse_valid=16, analyse_test=32, history_items=3,
                  pool=PoolConfig(size=8), llm=SMOKE_LLM)),
        maps=MapConfig(max_items=60, n_neighbors=8, knn=5),
        typical_seconds=150.0,
    ),
    "demo": Profile(
        name="demo",
        description="the default run: all of ML-100k, every CRM, CoReLLa, S-LLMR, LLM-CF, "
                    "CoRA and CoCo; ~15 min on 2 CPU cores with native bf16, ~1 h without",
        task=TaskConfig(),
        train=TrainConfig(batch_size=1024, max_epochs=10, patience=2),
        # LoRA in the top 4 layers trains 2.3x more prompts per second on 2 cores and
        # repeats epochs nearly free (bench/llm_speed.py); at lr 5e-4 and one pass it does
        # not learn, at 2e-3 over 4 epochs it does (bench/llm_curve.py). Spent on 256
        # LLM-alone prompts x 4 epochs in about the training time of 3 x 128 before.
        methods=_crms({"embed_dim": 16}) + (_corella(
            {"embed_dim": 16}, stage2_samples=128, stage3_samples=256, lora_top_layers=4,
            llm_lr=2e-3, llm_epochs=4, analyse_valid=200, analyse_test=500),
            # 40 users x 12 candidates: ~2.5 min of teacher scoring on 2 cores (shared prefix)
            _sllmr({"embed_dim": 16}, users=40, labelled=8, popular=2, long_tail=2),
            # 64 explanations of up to 48 tokens, 16 per batch: ~2 min of generation on 2
            # cores without native bf16 (25 tokens/s; 128 x 64 took 7.5 min at batch 8)
            _llmcf({"embed_dim": 16}, pool_size=64, cot_tokens=48, generation_batch=16),
            # generated weights in the top 2 layers: CoReLLa's frozen states (its LoRA sits in
            # the top 4) of the 700 analysed prompts and of its 256 stage-3 prompts, which
            # CoRA trains on, run through layers 26-27 once; then every training step and
            # scoring runs 2 layers (2.8x faster than the top 4). 4 epochs, not 2: on these
            # 256 prompts 2 epochs left CoRA at the base LLM (test AUC 0.50 vs 0.66, README)
            _cora({"embed_dim": 16}, train_samples=256, train_skip=128, epochs=4,
                  collab=CollabConfig(top_layers=2)),
            # 96 training windows of up to 128 samples (~7,100 samples), one LLM pass per
            # window; the 700 analysed samples fall in ~240 windows
            _coco({"embed_dim": 16})),
        maps=MapConfig(),
        # without native bf16: estimated from stage rates measured on a 2-core AMD EPYC
        # without AVX-512 (README); with it: 13 min 20 s measured, idle, on a 2-core AMD
        # EPYC with AVX512-BF16 (2026-11-27, README "The five methods side by side")
        typical_seconds=3600.0,
        typical_seconds_bf16=800.0,
    ),
    "full": Profile(
        name="full",
        description="paper scale (ML-1M / Amazon-Books), meant for a GPU box",
        task=TaskConfig(),
        train=TrainConfig(batch_size=2048, max_epochs=20, patience=3),
        methods=_crms({"embed_dim": 32}) + (_corella(
            {"embed_dim": 32}, stage2_samples=25_000, stage3_samples=25_000,
            analyse_valid=10_000, analyse_test=100_000, answers=200,
            llm=LLMConfig(batch_size=32)),
            _sllmr({"embed_dim": 32}, users=5_000, labelled=16, popular=8, long_tail=8,
                   pairs_per_user=32, llm=LLMConfig(batch_size=32)),
            # a tenth of ML-1M's training samples, as in the paper's setting
            _llmcf({"embed_dim": 32}, pool_size=80_000, cot_tokens=256, generation_batch=32,
                   llm=LLMConfig(batch_size=32)),
            # every layer (the paper), MF d=64, CoReLLa's analysed samples
            _cora({"embed_dim": 32}, train_samples=25_000, epochs=1, analyse_valid=10_000,
                  analyse_test=100_000, llm=LLMConfig(batch_size=32, score_dtype="float32")),
            # the paper's pool of 64, and the K sweep
            _coco({"embed_dim": 32}, pool=PoolConfig(size=64), train_windows=5_000,
                  analyse_valid=10_000, analyse_test=100_000, k_sweep=(8, 16, 32),
                  llm=LLMConfig(batch_size=32, score_dtype="float32"))),
        maps=MapConfig(),
    ),
}


def get_profile(name: str, *, seed: int | None = None,
                task_overrides: dict[str, Any] | None = None,
                methods: tuple[str, ...] | None = None) -> Profile:
    """A profile by name, with the seed, task options and method selection applied."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if methods:
        known = [m.name for m in profile.methods]
        unknown = [m for m in methods if m not in known]
        if unknown:
            raise ConfigError(f"unknown method(s) {unknown} in profile {name!r}; "
                              f"valid: {', '.join(known)}")
        profile = replace(profile, methods=tuple(m for m in profile.methods
                                                 if m.name in methods))
    task_overrides = dict(task_overrides or {})
    if seed is not None:
        task_overrides["seed"] = seed
    task = override(profile.task, task_overrides, "--task", "the task")
    if seed is not None:
        profile = replace(profile, train=replace(profile.train, seed=task.seed))
    return replace(profile, task=task)
