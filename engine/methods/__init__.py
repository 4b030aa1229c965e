"""Methods: everything that turns a CTRTask into per-sample predictions + diagnostics.

A registry maps a method name to its class; CRMs are methods too, so the pipeline, store and
pages treat a plain DCNv2 and a hybrid such as CoReLLa alike.
"""

from __future__ import annotations

from engine.errors import ConfigError
from engine.methods.base import Method, MethodResult
from engine.methods.coco import CoCo
from engine.methods.cora import CoRA
from engine.methods.corella import CoReLLa
from engine.methods.crm import CRMMethod
from engine.methods.llmcf import LLMCF
from engine.methods.sllmr import SLLMR

METHOD_REGISTRY: dict[str, type[Method]] = {
    "crm": CRMMethod,
    "corella": CoReLLa,
    "sllmr": SLLMR,
    "llmcf": LLMCF,
    "cora": CoRA,
    "coco": CoCo,
}


def method_class(kind: str) -> type[Method]:
    if kind not in METHOD_REGISTRY:
        raise ConfigError(f"unknown method {kind!r}; valid: {', '.join(sorted(METHOD_REGISTRY))}")
    return METHOD_REGISTRY[kind]


__all__ = ["METHOD_REGISTRY", "Method", "MethodResult", "CRMMethod", "CoReLLa", "SLLMR", "LLMCF",
           "CoRA", "CoCo", "method_class"]
