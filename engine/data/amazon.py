"""Amazon product reviews (McAuley et al. 2014, 2018 and 2023 dumps): JSON objects.

Reviews: 2014/2018 lines carry reviewerID, asin, overall (1-5), unixReviewTime (seconds),
reviewText and summary; 2023 lines carry user_id, parent_asin (and asin), rating, timestamp
(milliseconds), title and text. Metadata: asin (2023: parent_asin), title, description,
categories (2014: list of category paths; 2023: one path as a flat list) or category (2018:
one path), brand (2023: store). Files may be gzipped or a single-file zip, hold one object per
line or one JSON array, and the 2014 dumps write Python literals (single quotes) instead of
JSON, so a line that is not JSON is read with ast.literal_eval.

Line files are streamed: the full dumps run to gigabytes, and reading line by line lets
every error name the exact line.
"""

from __future__ import annotations

import ast
import json
import math
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.data.dataset import Dataset, finish_frames
from engine.data.readers import check_encoding, decode, open_binary, require_file
from engine.data.text import choose_title, clean_text
from engine.errors import DataError, quote
from engine.options import build

RATING_SCALE = (1.0, 5.0)
MS_SCHEMA_KEYS = ("user_id", "parent_asin")  # the 2023 dump: times in milliseconds
_PLAIN_NUMBERS = (float, int)  # exact types: bool is an int subclass but not a rating


@dataclass(frozen=True)
class AmazonOptions:
    """`--option` keys of the amazon source."""

    category: str = ""  # names the dataset amazon-<category>
    click_threshold: float = 5.0  # a rating >= this is a click (Amazon ratings skew high)
    encoding: str = "utf-8"
    review_text: bool = True  # keep review text and summary for the case browser

    def __post_init__(self) -> None:
        check_encoding(self.encoding)


@dataclass(frozen=True)
class _Schema:
    """Field names of one dump's reviews."""

    user: str
    item: str
    rating: str
    time: str
    time_unit: int  # divide the time field by this for unix seconds
    summary: str
    review: str


SCHEMA_2014 = _Schema("reviewerID", "asin", "overall", "unixReviewTime", 1, "summary",
                      "reviewText")
SCHEMA_2023 = _Schema("user_id", "parent_asin", "rating", "timestamp", 1000, "title", "text")


def load_amazon(reviews_path: str | Path, meta_path: str | Path | None = None,
                **options: Any) -> Dataset:
    """Load an Amazon reviews file (and optionally its metadata) into a Dataset.

    Interactions: user, item, rating, timestamp (seconds), and the review's summary and text.
    Items: title (a markup-free title, or the description's first sentence, the brand or the
    category when the title is junk), text (title + description + category paths), tags (leaf
    categories) and a `brand` attribute when the metadata has brands. Only items that appear
    in the reviews are kept; items reviewed but absent from the metadata get an id-only row.
    `options`: the fields of AmazonOptions.
    """
    opts = build(AmazonOptions, options, "--option", "the amazon source")
    reviews = require_file(reviews_path, "Amazon reviews file")
    interactions = read_reviews(reviews, opts.encoding, keep_text=opts.review_text)
    items = None
    meta = None
    if meta_path is not None:
        meta = require_file(meta_path, "Amazon metadata file")
        items = read_metadata(meta, opts.encoding, keep=set(interactions["item"]))
    name = f"amazon-{opts.category}" if opts.category else "amazon"
    return finish_frames(name, interactions, None, items, source=reviews,
                         click_threshold=opts.click_threshold, items_source=meta)


def read_reviews(path: Path, encoding: str = "utf-8", keep_text: bool = True) -> pd.DataFrame:
    """Reviews file -> interactions frame (user, item, rating, timestamp[, summary, review])."""
    columns: dict[str, list[Any]] = {k: [] for k in ("user", "item", "rating", "timestamp",
                                                    "summary", "review")}
    for line, rec in iter_records(path, encoding):
        schema = SCHEMA_2023 if "user_id" in rec else SCHEMA_2014
        user = rec.get(schema.user)
        item = rec.get(schema.item) or (rec.get("asin") if schema is SCHEMA_2023 else None)
        rating = rec.get(schema.rating)
        stamp = rec.get(schema.time)
        if not user or not item or rating is None or stamp is None:
            _raise_missing(rec, schema, path, line)
        # fast path for the usual types; anything else goes through the checked conversion
        if type(rating) not in _PLAIN_NUMBERS or not math.isfinite(rating):
            rating = _number(rating, path, line, schema.rating)
        if not RATING_SCALE[0] <= rating <= RATING_SCALE[1]:
            raise DataError(f"{rating:g} is outside the rating scale 1 to 5", file=path,
                            line=line, field=schema.rating)
        if type(stamp) is not int:
            stamp = int(_number(stamp, path, line, schema.time))
        columns["user"].append(user if type(user) is str else str(user))
        columns["item"].append(item if type(item) is str else str(item))
        columns["rating"].append(rating)
        columns["timestamp"].append(stamp // schema.time_unit)
        if keep_text:
            columns["summary"].append(_as_text(rec.get(schema.summary)))
            columns["review"].append(_as_text(rec.get(schema.review)))
    if not columns["user"]:
        raise DataError("file is empty (no review lines)", file=path)
    frame = pd.DataFrame({
        "user": columns["user"], "item": columns["item"],
        "rating": np.asarray(columns["rating"], dtype="float32"),
        "timestamp": np.asarray(columns["timestamp"], dtype="int64")})
    if keep_text:
        frame["summary"] = columns["summary"]
        frame["review"] = columns["review"]
    return frame


def read_metadata(path: Path, encoding: str = "utf-8", keep: set[str] | None = None
                  ) -> pd.DataFrame:
    """Metadata file -> items frame (item, title, text, tags, title_fallback[, brand]).

    With `keep`, other items are skipped: a category's metadata lists far more products than
    a (e.g. 5-core) reviews file uses. Keeping none of them is an error (the wrong file).
    """
    rows: list[dict[str, Any]] = []
    has_brand = False
    seen: list[str] = []
    for line, rec in iter_records(path, encoding):
        asin = rec.get("parent_asin") or rec.get("asin")
        if not asin:
            raise DataError("missing required field", file=path, line=line, field="asin")
        asin = str(asin)
        if len(seen) < 3:
            seen.append(asin)
        if keep is not None and asin not in keep:
            continue
        rows.append(_item_row(asin, rec))
        has_brand = has_brand or bool(rows[-1]["brand"])
    if not seen:
        raise DataError("file is empty (no metadata lines)", file=path)
    if keep and not rows:
        raise DataError(
            f"the metadata matches none of the {len(keep):,} reviewed items (its ids look "
            f"like {', '.join(map(repr, seen))}, the reviews' like "
            f"{', '.join(map(repr, sorted(keep)[:3]))}); is it the metadata of the same "
            "category?", file=path)
    columns = ["item", "title", "text", "tags", "title_fallback", "brand"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame if has_brand else frame.drop(columns="brand")


def iter_records(path: Path, encoding: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based line number, record) for every object of a JSON-lines file or of a
    file holding one JSON array of objects."""
    lines = _iter_lines(path, encoding)
    first = True
    for line, text in lines:
        if not text or text.isspace():
            continue
        if first and text.lstrip().startswith("[") and not text.rstrip().endswith("]"):
            # a JSON array spread over lines: read the rest of the file as one document
            rest = "".join([text, *(t for _, t in lines)])
            yield from _array_records(rest, path, line)
            return
        rec = _parse_line(text, path, line)
        if first and isinstance(rec, list) and rec and all(isinstance(r, dict) for r in rec):
            yield from ((line, r) for r in rec)  # the whole array on one line
            return
        first = False
        if not isinstance(rec, dict):
            raise DataError(
                f"expected an object {{...}}, found {type(rec).__name__}: {_snippet(text)}",
                file=path, line=line,
            )
        yield line, rec


def _parse_line(text: str, path: Path, line: int) -> Any:
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise DataError("the line nests objects too deeply to be a record", file=path,
                        line=line) from exc
    except ValueError:
        return _literal(text, path, line)


def _array_records(text: str, path: Path, first_line: int
                   ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Objects of a JSON array, each with the file line it starts on."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    line = first_line
    while True:
        start = pos
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        line += text.count("\n", start, pos)
        if pos >= len(text):
            raise DataError("the JSON array is not closed with ']'", file=path, line=line)
        if text[pos] == "]":
            return
        try:
            rec, end = decoder.raw_decode(text, pos)
        except RecursionError as exc:
            raise DataError("an element nests too deeply to be a record", file=path,
                            line=line) from exc
        except ValueError as exc:
            raise DataError(f"invalid JSON in the array: {exc.args[0].split(':')[0]}",
                            file=path, line=line) from exc
        if not isinstance(rec, dict):
            raise DataError(f"expected an object {{...}} in the array, found "
                            f"{type(rec).__name__}", file=path, line=line)
        yield line, rec
        line += text.count("\n", pos, end)
        pos = end


def _iter_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Decoded lines of a plain, gzipped or zipped file; read errors name the file (and
    line)."""
    line = 0
    try:
        with open_binary(path) as fh:
            for line, raw in enumerate(fh, start=1):
                text = decode(raw, encoding, path, first_line=line)
                if line == 1:
                    text = text.lstrip("\ufeff")  # a BOM would make line 1 invalid JSON
                yield line, text
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
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


def _raise_missing(rec: dict[str, Any], schema: _Schema, path: Path, line: int) -> None:
    for field in (schema.user, schema.item, schema.rating, schema.time):
        value = rec.get(field)
        if value is None or value == "":
            keys = ", ".join(str(k)[:40] for k in list(rec)[:12]) or "nothing"
            raise DataError(f"missing required field (the line has: {keys})",
                            file=path, line=line, field=field)


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
        raise DataError(f"not a number: {quote(value)}", file=path, line=line, field=field)
    return number


def _item_row(asin: str, rec: dict[str, Any]) -> dict[str, Any]:
    description = clean_text(_as_text(rec.get("description")))
    paths = _category_paths(rec)
    brand = clean_text(_as_text(rec.get("brand") or rec.get("store")))
    leaf = paths[0][-1] if paths else ""
    title, fell_back = choose_title(clean_text(_as_text(rec.get("title"))), description,
                                    f"{brand} {leaf}".strip(), leaf)
    parts = [title, description, "; ".join(" > ".join(p) for p in paths)]
    tags = list(dict.fromkeys(p[-1] for p in paths))  # leaves, first-seen order, no repeats
    return {"item": asin, "title": title, "text": _join_sentences(parts), "tags": tags,
            "title_fallback": fell_back, "brand": brand}


def _join_sentences(parts: list[str]) -> str:
    """Join non-blank parts with '. ', without doubling a stop: 'A. B', not 'A.. B'."""
    kept = [p for p in parts if p]
    heads = [p if p.endswith((".", "!", "?")) else p + "." for p in kept[:-1]]
    return " ".join([*heads, *kept[-1:]])


def _category_paths(rec: dict[str, Any]) -> list[list[str]]:
    """2014 `categories` (list of paths), 2023 `categories` (one path as a flat list) or
    2018 `category` (one path), else 2023's `main_category` -> non-empty cleaned paths."""
    raw = rec.get("categories")
    if raw is None or raw == []:
        raw = rec.get("category") or []
        raw = [raw] if raw else []
    if isinstance(raw, str):
        raw = [[raw]]
    elif isinstance(raw, list) and raw and all(isinstance(s, str) for s in raw):
        raw = [raw]  # one path written flat
    if not raw and rec.get("main_category"):
        raw = [[rec["main_category"]]]
    paths = []
    for path in raw if isinstance(raw, list) else []:
        steps = [path] if isinstance(path, str) else path if isinstance(path, list) else []
        clean = [s for s in (clean_text(_as_text(step)) for step in steps) if s]
        if clean:
            paths.append(clean)
    return paths


def _as_text(value: Any) -> str:
    """Metadata strings come as str, list of str (descriptions) or missing."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(s for s in map(_as_text, value) if s)
    if isinstance(value, dict):
        return ""
    return str(value).strip()


def _snippet(text: str, width: int = 80) -> str:
    text = text.strip()
    return repr(text if len(text) <= width else text[:width] + "...")
