"""CRMs (one per file) and the registry mapping a name to (config class, model class)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

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


def build_crm(name: str, schema: FeatureSchema, config: Any | None = None) -> nn.Module:
    """A freshly initialised CRM (see init_weights; seed torch first for repeatable runs)."""
    config = crm_config(name) if config is None else config
    return init_weights(CRM_REGISTRY[name][1](schema, config))
