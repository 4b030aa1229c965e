"""Small MovieLens-shaped data the tests write themselves (never the licensed copies)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENRES = 19


def write_ml100k(root: Path, n_users: int = 60, n_items: int = 80, per_user: tuple[int, int] = (
        18, 40), seed: int = 0) -> Path:
    """u.data/u.item/u.user with a latent-factor taste signal, so models can learn something.

    Most users rate across the whole 100-day period; every tenth user arrives on day 91
    (cold-start in the test period). Ratings are 1-5 from an item bias plus the dot product
    of 4-d user and item factors plus noise.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    users = rng.normal(size=(n_users, 4)) * 0.6
    items = rng.normal(size=(n_items, 4)) * 0.6
    item_bias = rng.normal(size=n_items) * 1.2
    lines = []
    for u in range(n_users):
        count = int(rng.integers(*per_user))
        chosen = rng.choice(n_items, size=min(count, n_items), replace=False)
        for k, i in enumerate(chosen):
            score = item_bias[i] + users[u] @ items[i] + rng.normal(scale=0.5)
            rating = int(np.clip(np.round(3.3 + score), 1, 5))
            start, span = (91.0, 8.0) if u % 10 == 9 else (0.0, 99.0)
            day = start + span * k / count
            ts = 880_000_000 + int(86_400 * day) + u
            lines.append(f"{u + 1}\t{i + 1}\t{rating}\t{ts}")
    (root / "u.data").write_text("\n".join(lines) + "\n")
    item_lines = []
    for i in range(n_items):
        flags = ["0"] * GENRES
        flags[1 + i % (GENRES - 1)] = "1"
        flags[1 + (i * 7) % (GENRES - 1)] = "1"
        year = 1970 + i % 30
        item_lines.append("|".join([str(i + 1), f"Movie {i + 1} ({year})", f"01-Jan-{year}", "",
                                    "http://example.org", *flags]))
    (root / "u.item").write_text("\n".join(item_lines) + "\n", encoding="latin-1")
    occupations = ["student", "engineer", "artist", "other"]
    user_lines = [f"{u + 1}|{18 + u % 50}|{'MF'[u % 2]}|{occupations[u % 4]}|{10000 + u}"
                  for u in range(n_users)]
    (root / "u.user").write_text("\n".join(user_lines) + "\n")
    return root


def make_test_split_one_class(root: Path, rating: int = 5, share: float = 0.85) -> Path:
    """Rewrite u.data so every rating after the `share` time quantile is `rating`: the test
    split (and the end of valid) then holds one label class, as Amazon's 5-star skew does."""
    path = root / "u.data"
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    cut = np.quantile([int(r[3]) for r in rows], share)
    for r in rows:
        if int(r[3]) > cut:
            r[2] = str(rating)
    path.write_text("\n".join("\t".join(r) for r in rows) + "\n")
    return root
