"""Sentence encoder for semantic item/user embeddings and retrieval (all-MiniLM-L6-v2 by
default, from its PyPI package). Mean pooling over tokens, then L2 normalisation, as the
sentence-transformers recipe for this model does."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import ConfigError
from engine.models.llm import ModelError, pick_device, resolve


@dataclass(frozen=True)
class EncoderConfig:
    model: str = "minilm-l6"  # a packaged alias, a local folder, or a hub id in your cache
    batch_size: int = 64
    max_length: int = 256
    threads: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_length < 8:
            raise ConfigError(f"bad encoder sizes: batch_size={self.batch_size}, "
                              f"max_length={self.max_length}")


class Encoder:
    def __init__(self, config: EncoderConfig = EncoderConfig()) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        torch.set_num_threads(config.threads if config.threads > 0 else (os.cpu_count() or 1))
        self.device = pick_device(config.device)
        source = resolve(config.model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source).to(self.device).eval()
        except OSError as exc:
            raise ModelError(f"cannot load encoder {config.model!r} from {source}: {exc}") \
                from exc

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """(N, dim) float32 unit vectors; texts are batched by length to save padding."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        size = self.config.batch_size
        starts = range(0, len(order), size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Encoding item texts", unit="batch", leave=False)
        for start in starts:
            rows = order[start:start + size]
            enc = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                 max_length=self.config.max_length, return_tensors="pt")
            enc = enc.to(self.device)
            tokens = self.model(**enc).last_hidden_state  # (B, T, H)
            mask = enc["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return out
