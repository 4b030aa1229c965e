"""Profiles: one-level presets for task, training and the methods of a run.

Loaded as `Profile(**d)`-style dataclasses, so a typo in an override fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from engine.data.task import TaskConfig
from engine.errors import ConfigError
from engine.models.trainer import TrainConfig


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


def _crms(embed_dim: int, names: tuple[str, ...] = ("dcnv2", "deepfm", "din")
          ) -> tuple[MethodSpec, ...]:
    return tuple(MethodSpec("crm", n, {"model": n, "model_options": {"embed_dim": embed_dim}})
                 for n in names)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="tests: ~60 users, tiny models, 2 epochs; seconds",
        task=TaskConfig(max_users=60),
        train=TrainConfig(batch_size=256, max_epochs=2, patience=1),
        methods=tuple(
            MethodSpec("crm", n, {"model": n, "model_options": {
                "embed_dim": 8, "deep_layers": (32, 16)}})
            for n in ("dcnv2", "deepfm")),
    ),
    "demo": Profile(
        name="demo",
        description="the default run: all of ML-100k, every CRM; minutes on 2 CPU cores",
        task=TaskConfig(),
        train=TrainConfig(batch_size=1024, max_epochs=10, patience=2),
        methods=_crms(16),
    ),
    "full": Profile(
        name="full",
        description="paper scale (ML-1M / Amazon-Books), meant for a GPU box",
        task=TaskConfig(),
        train=TrainConfig(batch_size=2048, max_epochs=20, patience=3),
        methods=_crms(32),
    ),
}


def get_profile(name: str, *, seed: int | None = None,
                task_overrides: dict[str, Any] | None = None) -> Profile:
    """A profile by name, with the seed and task options a user passed applied."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}")
    profile = PROFILES[name]
    task_overrides = dict(task_overrides or {})
    valid = {f.name for f in fields(TaskConfig)}
    unknown = sorted(set(task_overrides) - valid)
    if unknown:
        raise ConfigError(f"unknown task option(s) {unknown}; valid: {sorted(valid)}")
    if seed is not None:
        task_overrides["seed"] = seed
        profile = replace(profile, train=replace(profile.train, seed=seed))
    return replace(profile, task=replace(profile.task, **task_overrides))
