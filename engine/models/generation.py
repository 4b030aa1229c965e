"""LLM text on demand: answers and chains of thought, in the model's chat template, cached on
disk so a case asked twice (or a second run of a profile) generates nothing.

The cache key is (model, adapter hash, the exact text the model reads, decoding settings):
another adapter, prompt or setting is another entry. Entries are one small JSON file each,
written to a temporary name and renamed, so app sessions and runs can share the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from engine.errors import ConfigError

ANSWER_CUE = "Answer:"
# LLM-CF style: reason about the user first, then answer
REASONING_CUE = ("Think step by step about what this user likes and whether the target item "
                 "fits, then answer yes or no. Reasoning:")


@dataclass(frozen=True)
class Decoding:
    """How text is generated: greedy, up to `max_new_tokens`, in the chat template."""

    style: Literal["answer", "reasoning"] = "answer"
    max_new_tokens: int = 16
    chat: bool = True  # SmolLM2-Instruct ends a bare completion after 2 tokens

    def __post_init__(self) -> None:
        if self.style not in ("answer", "reasoning"):
            raise ConfigError(f"style must be 'answer' or 'reasoning', got {self.style!r}")
        if not 1 <= self.max_new_tokens <= 2048:
            raise ConfigError(f"max_new_tokens must be between 1 and 2048, got "
                              f"{self.max_new_tokens}")


def cache_root() -> Path:
    """$DUET_CACHE_DIR, else <$DUET_DATA_DIR or ./data>/cache (git-ignored)."""
    if os.environ.get("DUET_CACHE_DIR"):
        return Path(os.environ["DUET_CACHE_DIR"])
    return Path(os.environ.get("DUET_DATA_DIR", "data")) / "cache"


class DiskCache:
    """JSON values by key under root/<kind>/, one file per entry, written atomically."""

    def __init__(self, kind: str, root: Path | None = None) -> None:
        self.folder = (root or cache_root()) / kind

    @staticmethod
    def key(*parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()
                              ).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))["value"]
        except (OSError, ValueError, KeyError):
            return None  # absent, or a file another writer is still renaming into place

    def put(self, key: str, value: Any, **meta: Any) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"value": value, **meta}, fh)
        os.replace(tmp, path)


def model_text(llm: Any, prompt: str, decoding: Decoding) -> str:
    """What the model reads: the template-A prompt, its cue swapped for the reasoning cue
    when asked, wrapped in the model's chat template when it has one."""
    text = prompt
    if decoding.style == "reasoning":
        text = prompt.removesuffix(ANSWER_CUE).rstrip() + " " + REASONING_CUE
    if decoding.chat and getattr(llm.tokenizer, "chat_template", None):
        text = llm.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                 add_generation_prompt=True, tokenize=False)
    return text


def generate_cached(llm: Any, prompts: Sequence[str], decoding: Decoding = Decoding(),
                    cache: DiskCache | None = None, batch_size: int = 8) -> list[str]:
    """Greedy generations for `prompts`, each read from the cache when present."""
    cache = cache or DiskCache("generations")
    texts = [model_text(llm, p, decoding) for p in prompts]
    settings = asdict(decoding)
    keys = [cache.key(llm.config.model, llm.adapter_hash(), t, settings) for t in texts]
    out = [cache.get(k) for k in keys]
    todo = [i for i, value in enumerate(out) if value is None]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        for i, text in zip(chunk, llm.generate([texts[i] for i in chunk],
                                               max_new_tokens=decoding.max_new_tokens)):
            cache.put(keys[i], text, model=llm.config.model, decoding=settings)
            out[i] = text
    return out
