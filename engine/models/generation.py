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
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engine import distributed
from engine.errors import ConfigError

ANSWER_CUE = "Answer:"
ONLY_ANSWER = re.compile(r"\s*You should ONLY answer[^.]*\.\s*$", re.IGNORECASE)
# LLM-CF's label-conditioned chain of thought (its four points, for one known decision)
EXPLANATION_CUE = ("In fact the user {decision} the target item. Think step by step and explain "
                   "this decision: summarise the user's taste from the history, describe the "
                   "target item, say how the two match, and whether the user may want "
                   "variety. Explanation:")
# LLM-CF style: reason about the user first, then answer
REASONING_CUE = ("Think step by step about what this user likes and whether the target item "
                 "fits, then answer yes or no. Reasoning:")


STYLES = ("answer", "reasoning", "explanation")


def explanation_prompt(prompt: str, liked: bool) -> str:
    """A template-A prompt turned into LLM-CF's request: explain the known decision."""
    text = ONLY_ANSWER.sub("", prompt.rstrip().removesuffix(ANSWER_CUE).rstrip())
    return f"{text} {EXPLANATION_CUE.format(decision='liked' if liked else 'did not like')}"


@dataclass(frozen=True)
class Decoding:
    """How text is generated: greedy, up to `max_new_tokens`, in the chat template."""

    # "explanation": the prompt is already the full request (explanation_prompt)
    style: Literal["answer", "reasoning", "explanation"] = "answer"
    max_new_tokens: int = 16
    chat: bool = True  # SmolLM2-Instruct ends a bare completion after 2 tokens

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ConfigError(f"style must be one of {', '.join(STYLES)}, got {self.style!r}")
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
        entry = self.entry(key)
        return None if entry is None else entry["value"]

    def entry(self, key: str) -> dict[str, Any] | None:
        """The stored value with what was written beside it (put's **meta)."""
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # absent, or a file another writer is still renaming into place
        return entry if isinstance(entry, dict) and "value" in entry else None

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


@dataclass
class Generated:
    """Texts with what producing them cost: seconds per text (its batch's time shared
    equally; 0 when read from the cache) and new tokens per text."""

    texts: list[str]
    seconds: list[float]
    tokens: list[int]
    cached: list[bool]


def generate_cached(llm: Any, prompts: Sequence[str], decoding: Decoding = Decoding(),
                    cache: DiskCache | None = None, batch_size: int = 8) -> list[str]:
    """Greedy generations for `prompts`, each read from the cache when present."""
    return generate_with_stats(llm, prompts, decoding, cache, batch_size).texts


def generate_with_stats(llm: Any, prompts: Sequence[str], decoding: Decoding = Decoding(),
                        cache: DiskCache | None = None, batch_size: int = 8,
                        progress: str | None = None) -> Generated:
    """generate_cached with its costs; `progress` names a progress bar over the batches.
    Under torchrun rank 0's cache decides what is missing, each rank generates its share of
    that (and caches it), and every rank ends with every text."""
    cache = cache or DiskCache("generations")
    texts = [model_text(llm, p, decoding) for p in prompts]
    settings = asdict(decoding)
    keys = [cache.key(llm.config.model, llm.adapter_hash(), t, settings) for t in texts]
    # rank 0's view of the cache for every rank (a rank may have written entries the others
    # have not read yet, or sit on another node with its own cache folder); only it reads
    entries = [cache.entry(k) for k in keys] if distributed.current().main else []
    out, tokens = distributed.broadcast(
        ([None if e is None else e["value"] for e in entries],
         [0 if e is None else int(e.get("tokens", -1)) for e in entries]))
    cached = [value is not None for value in out]
    seconds = [0.0] * len(prompts)
    mine = distributed.share(np.array([i for i, v in enumerate(out) if v is None], np.int64))
    starts = range(0, len(mine), batch_size)
    if progress and len(mine):
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=progress, unit="batch", leave=False)
    made: list[tuple[int, str, float, int]] = []
    for start in starts:
        chunk = mine[start:start + batch_size]
        t0 = time.perf_counter()
        fresh, counts = llm.generate([texts[i] for i in chunk],
                                     max_new_tokens=decoding.max_new_tokens, return_counts=True)
        share = (time.perf_counter() - t0) / len(chunk)
        for i, text, count in zip(chunk, fresh, counts):
            cache.put(keys[i], text, model=llm.config.model, decoding=settings, tokens=count)
            made.append((i, text, share, count))
    for _, part in distributed.gather(mine, made):
        for i, text, share, count in part:
            out[i], seconds[i], tokens[i] = text, share, count
    # entries written before counts were kept: count the text again
    tokens = [n if n >= 0 else len(llm.tokenizer(t, add_special_tokens=False).input_ids)
              for n, t in zip(tokens, out)]
    return Generated(out, seconds, tokens, cached)


def score_cached(llm: Any, prompts: Sequence[str], cache: DiskCache | None = None,
                 progress: bool = False) -> np.ndarray:
    """P(yes) per prompt, each read from the score cache when present (keyed like the
    generations: model, adapter hash, the prompt)."""
    cache = cache or DiskCache("scores")
    adapter = llm.adapter_hash()
    keys = [cache.key(llm.config.model, adapter, p) for p in prompts]
    out = np.array([np.nan if (v := cache.get(k)) is None else v for k in keys], dtype=float)
    todo = np.flatnonzero(np.isnan(out))
    if len(todo):
        fresh = llm.score([prompts[i] for i in todo], progress=progress)
        for i, p in zip(todo, fresh):
            cache.put(keys[i], float(p))
            out[i] = float(p)
    return out
