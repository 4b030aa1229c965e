"""A plain CRM as a method: train with the shared trainer, predict valid and test."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import torch

from engine.data.task import CTRTask
from engine.methods.base import EVAL_SPLITS, Method, MethodResult, VariantRun, crm_key
from engine.models import build_crm, crm_config
from engine.models.trainer import TaskTensors, TrainConfig, TrainResult, fit, predict

CRM_NAMES = {"dcnv2": "DCNv2 (deep & cross network v2)", "deepfm": "DeepFM",
             "din": "DIN (deep interest network)"}


class CRMMethod(Method):
    def __init__(self, name: str, model: str = "dcnv2", model_options: dict[str, Any] | None = None,
                 train: TrainConfig = TrainConfig()) -> None:
        self.name = name
        self.model = model
        self.model_config = crm_config(model, model_options)
        self.train = train

    def fit(self, task: CTRTask) -> CRMMethod:
        self.task_ = task
        self.tensors_ = TaskTensors(task)
        torch.manual_seed(self.train.seed)  # initial weights depend on the seed too
        self.model_ = build_crm(self.model, task.schema, self.model_config)
        self.train_result_: TrainResult = fit(self.model_, task, self.train, name=self.name,
                                              tensors=self.tensors_)
        self.probs_, infer_seconds = {}, 0.0
        for split in EVAL_SPLITS:
            t0 = time.perf_counter()
            self.probs_[split] = predict(self.model_, self.tensors_, task.index(split),
                                         self.train.eval_batch_size)
            infer_seconds += time.perf_counter() - t0
        n_eval = sum(len(p) for p in self.probs_.values())
        self.infer_ms_per_1k_ = 1e6 * infer_seconds / max(n_eval, 1)
        return self

    def artifacts(self) -> dict[str, Any]:
        """This trained run, for a later hybrid whose backbone is the same network."""
        r = self.train_result_
        log = pd.DataFrame(r.log).melt(id_vars=["epoch"], var_name="metric", value_name="value")
        return {crm_key(self.model, self.model_config, self.train): VariantRun(
            self.probs_, r.seconds, r.best_epoch, self.infer_ms_per_1k_, log, self.model_)}

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return predict(self.model_, self.tensors_, rows, self.train.eval_batch_size)

    def result(self) -> MethodResult:
        r = self.train_result_
        log = pd.DataFrame(r.log).melt(id_vars=["epoch"], var_name="metric", value_name="value")
        log.insert(0, "stage", "train")
        params = sum(p.numel() for p in self.model_.parameters())
        return MethodResult(
            name=self.name, kind="crm", probs=self.probs_,
            config={"model": self.model, "model_config": asdict(self.model_config),
                    "train": asdict(self.train), "best_epoch": r.best_epoch, "params": params},
            training_log=log,
            weights={self.name: {k: v.detach().contiguous()
                                 for k, v in self.model_.state_dict().items()}},
            cost={"train_seconds": r.seconds, "train_samples_per_s": r.train_samples_per_s,
                  "infer_ms_per_1k": self.infer_ms_per_1k_, "llm_calls_per_1k": 0.0},
            description=f"{CRM_NAMES.get(self.model, self.model)} alone: the conventional "
                        "recommender trained on every training sample, no LLM",
        )
