"""CRMs (one per file) and the registry mapping a name to (config class, model class)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import nn

from engine.data.task import FeatureSchema
from engine.errors import ConfigError
from engine.models.dcnv2 import DCNv2, DCNv2Config
from engine.models.deepfm import DeepFM, DeepFMConfig
from engine.models.din import DIN, DINConfig
from engine.models.features import init_weights

CRM_REGISTRY: dict[str, tuple[type, type[nn.Module]]] = {
    "dcnv2": (DCNv2Config, DCNv2),
    "deepfm": (DeepFMConfig, DeepFM),
    "din": (DINConfig, DIN),
}


def crm_config(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """The config dataclass of CRM `name` with overrides; unknown keys fail loudly."""
    if name not in CRM_REGISTRY:
        raise ConfigError(f"unknown CRM {name!r}; valid: {', '.join(sorted(CRM_REGISTRY))}")
    config_cls, _ = CRM_REGISTRY[name]
    overrides = dict(overrides or {})
    valid = {f.name for f in fields(config_cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"unknown {name} option(s) {unknown}; valid: {sorted(valid)}")
    for key, value in overrides.items():  # JSON gives lists where configs hold tuples
        if isinstance(value, list):
            overrides[key] = tuple(value)
    return config_cls(**overrides)


@torch.no_grad()
def widen_from(wide: nn.Module, plain: nn.Module) -> nn.Module:
    """Give `wide` (a CRM built with extra_fields) the weights of `plain` (the same CRM
    without): every tensor is copied, and where `wide` reads the extra fields' flat input
    (E * D more entries along a dimension, inserted after the base fields' F * D) the new
    entries are zero. With zero weights on the extra fields, `wide` computes exactly what
    `plain` does whatever the extra fields hold, and gradients still reach those weights."""
    base = plain.embedding.n_fields * plain.embedding.dim
    grow = wide.embedding.extra_fields * wide.embedding.dim
    source = plain.state_dict()
    for name, target in wide.state_dict().items():
        value = source[name]
        if value.dim() != target.dim():
            raise ValueError(f"cannot widen {name}: {tuple(value.shape)} -> "
                             f"{tuple(target.shape)}")
        where = []  # per dimension: the positions in `target` of `value`'s entries
        for size, wide_size in zip(value.shape, target.shape):
            if wide_size == size:
                where.append(torch.arange(size))
            elif wide_size == size + grow and size >= base:
                where.append(torch.cat([torch.arange(base),
                                        torch.arange(base + grow, wide_size)]))
            else:
                raise ValueError(f"cannot widen {name}: {tuple(value.shape)} -> "
                                 f"{tuple(target.shape)}")
        target.zero_()
        target[torch.meshgrid(*where, indexing="ij")] = value
    return wide


def build_crm(name: str, schema: FeatureSchema, config: Any | None = None) -> nn.Module:
    """A freshly initialised CRM (see init_weights; seed torch first for repeatable runs)."""
    config = crm_config(name) if config is None else config
    return init_weights(CRM_REGISTRY[name][1](schema, config))
