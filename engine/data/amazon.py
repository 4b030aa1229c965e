"""Amazon product reviews (McAuley et al. 2014/2018 dumps): one JSON object per line.

Reviews lines carry reviewerID, asin, overall (1-5) and unixReviewTime; metadata lines carry
asin, title, description, categories (2014: list of category paths) or category (2018: one
path), and optionally brand. Files may be gzipped. The 2014 dumps write Python literals
(single quotes) instead of JSON, so a line that is not JSON is read with ast.literal_eval.

Files are streamed line by line: the full dumps run to gigabytes, and reading line by line
lets every error name the exact line.
"""

from __future__ import annotations

import ast
import codecs
import gzip
import json
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.data.dataset import Dataset, finish_frames
from engine.data.readers import require_file
from engine.errors import DataError

REVIEW_FIELDS = ("reviewerID", "asin", "overall", "unixReviewTime")
_PLAIN_NUMBERS = (float, int)  # exact types: bool is an int subclass but not a rating


def load_amazon(
    reviews_path: str | Path,
    meta_path: str | Path | None = None,
    *,
    category: str = "",
    click_rating: float = 5.0,
    encoding: str = "utf-8",
) -> Dataset:
    """Load an Amazon reviews file (and optionally its metadata) into a Dataset.

    Interactions: user=reviewerID, item=asin, rating=overall, timestamp=unixReviewTime.
    Items: title, text (title + description + category paths), tags (leaf categories) and a
    `brand` attribute when the metadata has brands. Only items that appear in the reviews are
    kept; items reviewed but absent from the metadata get an id-only row.
    A rating >= click_rating counts as a click (5 by default: Amazon ratings skew high).
    """
    reviews = require_file(reviews_path, "Amazon reviews file")
    interactions = read_reviews(reviews, encoding)
    items = None
    if meta_path is not None:
        meta = require_file(meta_path, "Amazon metadata file")
        items = read_metadata(meta, encoding, keep=set(interactions["item"]))
    name = f"amazon-{category}" if category else "amazon"
    return finish_frames(
        name, interactions, None, items, source=reviews, click_threshold=click_rating
    )


def read_reviews(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Reviews file -> interactions frame (user, item, rating, timestamp)."""
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    times: list[int] = []
    for line, rec in iter_records(path, encoding):
        user = rec.get("reviewerID")
        item = rec.get("asin")
        rating = rec.get("overall")
        stamp = rec.get("unixReviewTime")
        if not user or not item or rating is None or stamp is None:
            _raise_missing(rec, path, line)
        # fast path for the usual types; anything else goes through the checked conversion
        if type(rating) not in _PLAIN_NUMBERS or not math.isfinite(rating):
            rating = _number(rating, path, line, "overall")
        if type(stamp) is not int:
            stamp = int(_number(stamp, path, line, "unixReviewTime"))
        users.append(user if type(user) is str else str(user))
        items.append(item if type(item) is str else str(item))
        ratings.append(rating)
        times.append(stamp)
    if not users:
        raise DataError("file is empty (no review lines)", file=path)
    return pd.DataFrame(
        {
            "user": users,
            "item": items,
            "rating": np.asarray(ratings, dtype="float32"),
            "timestamp": np.asarray(times, dtype="int64"),
        }
    )


def read_metadata(path: Path, encoding: str = "utf-8", keep: set[str] | None = None
                  ) -> pd.DataFrame:
    """Metadata file -> items frame (item, title, text, tags[, brand]).

    With `keep`, other items are skipped: a category's metadata lists far more products than
    a (e.g. 5-core) reviews file uses.
    """
    rows: list[dict[str, Any]] = []
    has_brand = False
    seen_any = False
    for line, rec in iter_records(path, encoding):
        seen_any = True
        asin = rec.get("asin")
        if not asin:
            raise DataError("missing required field", file=path, line=line, field="asin")
        asin = str(asin)
        if keep is not None and asin not in keep:
            continue
        rows.append(_item_row(asin, rec))
        has_brand = has_brand or bool(rows[-1]["brand"])
    if not seen_any:
        raise DataError("file is empty (no metadata lines)", file=path)
    columns = ["item", "title", "text", "tags"] + (["brand"] if has_brand else [])
    frame = pd.DataFrame(rows, columns=["item", "title", "text", "tags", "brand"])
    return frame[columns]


def iter_records(path: Path, encoding: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based line number, record) for every non-blank line of a JSON-lines file."""
    for line, text in _iter_lines(path, encoding):
        if not text or text.isspace():
            continue
        try:
            rec = json.loads(text)
        except ValueError:
            rec = _literal(text, path, line)
        if not isinstance(rec, dict):
            raise DataError(
                f"expected an object {{...}}, found {type(rec).__name__}: {_snippet(text)}",
                file=path, line=line,
            )
        yield line, rec


def _iter_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Decoded lines of a plain or gzipped file; read errors name the file (and line)."""
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise DataError(f"unknown encoding '{encoding}'", file=path) from exc
    opener = gzip.open if path.suffix == ".gz" else open
    line = 0
    try:
        with opener(path, "rb") as fh:
            for line, raw in enumerate(fh, start=1):
                try:
                    text = raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"cannot decode byte {raw[exc.start]:#x} as {encoding} "
                        "(pass the file's real encoding, e.g. latin-1)",
                        file=path, line=line,
                    ) from exc
                if line == 1:
                    text = text.lstrip("\ufeff")  # a BOM would make line 1 invalid JSON
                yield line, text
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read file after line {line} ({exc})", file=path) from exc


def _literal(text: str, path: Path, line: int) -> Any:
    """The 2014 dumps' Python-literal lines; anything else is a format error."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise DataError(
            f"line is neither JSON nor a Python literal: {_snippet(text)}",
            file=path, line=line,
        ) from exc


def _raise_missing(rec: dict[str, Any], path: Path, line: int) -> None:
    for field in REVIEW_FIELDS:
        value = rec.get(field)
        if value is None or value == "":
            raise DataError(
                f"missing required field (the line has: {', '.join(map(str, rec)) or 'nothing'})",
                file=path, line=line, field=field,
            )


def _number(value: Any, path: Path, line: int, field: str) -> float:
    """A finite number from an int/float/numeric string, else a DataError at the line."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise DataError(f"not a number: {value!r}", file=path, line=line, field=field)
    return number


def _item_row(asin: str, rec: dict[str, Any]) -> dict[str, Any]:
    title = _as_text(rec.get("title")) or asin
    description = _as_text(rec.get("description"))
    paths = _category_paths(rec)
    parts = [title, description, "; ".join(" > ".join(p) for p in paths)]
    tags = list(dict.fromkeys(p[-1] for p in paths))  # leaves, first-seen order, no repeats
    return {
        "item": asin,
        "title": title,
        "text": _join_sentences(parts),
        "tags": tags,
        "brand": _as_text(rec.get("brand")),
    }


def _join_sentences(parts: list[str]) -> str:
    """Join non-blank parts with '. ', without doubling a stop: 'A. B', not 'A.. B'."""
    kept = [p for p in parts if p]
    heads = [p if p.endswith((".", "!", "?")) else p + "." for p in kept[:-1]]
    return " ".join([*heads, *kept[-1:]])


def _category_paths(rec: dict[str, Any]) -> list[list[str]]:
    """2014 `categories` (list of paths) or 2018 `category` (one path) -> non-empty paths."""
    raw = rec.get("categories")
    if raw is None:
        raw = [rec.get("category") or []]
    if isinstance(raw, str):
        raw = [[raw]]
    paths = []
    for path in raw if isinstance(raw, list) else []:
        steps = [path] if isinstance(path, str) else path if isinstance(path, list) else []
        clean = [s.strip() for s in map(_as_text, steps) if s.strip()]
        if clean:
            paths.append(clean)
    return paths


def _as_text(value: Any) -> str:
    """Metadata strings come as str, list of str (descriptions) or missing."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(s for s in map(_as_text, value) if s)
    return str(value).strip()


def _snippet(text: str, width: int = 80) -> str:
    text = text.strip()
    return repr(text if len(text) <= width else text[:width] + "...")
