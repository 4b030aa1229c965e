"""How good is a chain of thought? LLM-CF's quality parts (score_cot.py in its public code),
with our sentence encoder: completeness (mean similarity to the four points the prompt asks
for), relevance (to the target item's text), consistency (to a statement of the known
decision), and a repetition score (1 - the share of words that occur more than once). The
public code's TextBlob sentiment-drift coherence is left out: it needs another package and
says little about 64-token texts."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

ASPECTS = ("Summarise the user's taste from their rating history.",
           "Describe the target item and its features.",
           "How well the user's taste matches the features of the target item.",
           "Whether the user may want variety in what they watch.")
DECISIONS = {True: "The user liked the target item.",
             False: "The user did not like the target item."}
PARTS = ("completeness", "relevance", "consistency", "repetition")
MIN_CHARS = 10  # shorter texts score 0, as in the public code


def repetition_score(text: str) -> float:
    words = re.findall(r"[a-z0-9']+", text.lower())
    if not words:
        return 0.0
    repeated = sum(count for count in Counter(words).values() if count > 1)
    return 1.0 - min(repeated / len(words), 1.0)


def quality_parts(encoder, cot_vectors: np.ndarray, cots: Sequence[str],
                  item_texts: Sequence[str], liked: Sequence[bool]) -> pd.DataFrame:
    """One row per CoT: the four parts and `quality`, their mean (0 for empty texts).
    cot_vectors: the CoTs' unit vectors from the same encoder."""
    aspects = encoder.encode(list(ASPECTS))
    decisions = encoder.encode([DECISIONS[True], DECISIONS[False]])
    items = encoder.encode(list(item_texts))
    liked = np.asarray(liked, dtype=bool)
    frame = pd.DataFrame({
        "completeness": (cot_vectors @ aspects.T).mean(axis=1),
        "relevance": np.einsum("nd,nd->n", cot_vectors, items),
        "consistency": np.where(liked, cot_vectors @ decisions[0], cot_vectors @ decisions[1]),
        "repetition": [repetition_score(t) for t in cots]}).astype(float)
    frame["quality"] = frame[list(PARTS)].mean(axis=1)
    short = np.array([len(t.strip()) < MIN_CHARS for t in cots], dtype=bool)
    frame.loc[short, "quality"] = 0.0
    return frame
