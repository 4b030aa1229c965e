"""Bring your own data: an interactions table and an optional items table.

Formats follow the extension: .csv / .tsv / .txt (delimited with a header row, optionally
.gz) and .parquet. Columns are mapped by name through TableColumns. Errors name the file,
the 1-based line (the header is line 1; for parquet, the 1-based row) and the column.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.data.dataset import Dataset, finish_frames
from engine.data.readers import read_text, require_file
from engine.errors import ConfigError, DataError

DELIMITED = (".csv", ".tsv", ".txt")
RESERVED = ("item", "title", "text", "tags", "user")  # Dataset's own item columns
EPOCH = pd.Timestamp(0, tz="UTC")



@dataclass
class Table:
    """A read file: its frame (string columns for delimited files) and where rows came from."""

    path: Path
    frame: pd.DataFrame
    locate: Callable[[int], int]  # 0-based data row -> 1-based file line (parquet: row)
    sep: str | None = None  # None for parquet
    header_line: int = 1


@dataclass(frozen=True)
class TableColumns:
    """Which column of the files holds what.

    rating: a numeric column (click = rating >= threshold), or None when `label` is used.
    label: a 0/1 column used instead of rating (click = 1).
    timestamp: unix seconds or ISO-8601 datetimes (naive ones are read as UTC).
    text: item columns joined with ". " into the item text; tags: a '|'-separated column.
    item_key: the item id column of the items file.
    """

    user: str = "user"
    item: str = "item"
    rating: str | None = "rating"
    label: str | None = None
    timestamp: str = "timestamp"
    title: str = "title"
    text: tuple[str, ...] = ("text",)
    tags: str | None = None
    item_key: str = "item"

    def __post_init__(self) -> None:
        if self.rating is None and self.label is None:
            raise ConfigError(
                "TableColumns needs a rating column or a label column; got rating=None, "
                "label=None"
            )
        if isinstance(self.text, str):  # text="plot" is an easy slip for text=("plot",)
            object.__setattr__(self, "text", (self.text,))


DEFAULT_COLUMNS = TableColumns()


def load_table_pair(
    interactions_path: str | Path,
    items_path: str | Path | None = None,
    *,
    columns: TableColumns = DEFAULT_COLUMNS,
    sep: str = ",",
    encoding: str = "utf-8",
    click_threshold: float = 4.0,
    name: str | None = None,
) -> Dataset:
    """Load user-supplied interactions (+ items) files into a Dataset.

    Interactions need the user, item, timestamp and rating (or label) columns; other
    columns are ignored. The items file needs item_key; title and text columns are used when
    present (a non-default name must exist); every other items column becomes a categorical
    item attribute. A .tsv file is read tab-separated unless another sep than ',' is given.
    """
    inter_file = require_file(interactions_path, "interactions file")
    interactions = _interactions(read_table(inter_file, sep=sep, encoding=encoding), columns)
    if columns.label is not None:
        click_threshold = 1.0
    items = None
    if items_path is not None:
        items_file = require_file(items_path, "items file")
        items = _items(read_table(items_file, sep=sep, encoding=encoding), columns)
    return finish_frames(
        name or _stem(inter_file), interactions, None, items,
        source=inter_file, click_threshold=click_threshold,
    )


def read_table(path: Path, *, sep: str = ",", encoding: str = "utf-8") -> Table:
    """Read a delimited or parquet file, keeping what is needed to locate a bad row."""
    kind = _kind(path)
    if kind == ".parquet":
        return Table(path, _read_parquet(path), lambda row: row + 1)
    if kind == ".tsv" and sep == ",":
        sep = "\t"
    return _read_delimited(path, sep, encoding)


def _kind(path: Path) -> str:
    suffixes = path.suffixes
    if suffixes and suffixes[-1] == ".gz":  # the exact suffix read_text decompresses
        suffixes = suffixes[:-1]
    kind = suffixes[-1].lower() if suffixes else ""
    if kind not in (*DELIMITED, ".parquet") or (kind == ".parquet" and path.suffix == ".gz"):
        raise DataError(
            f"unknown file type '{''.join(path.suffixes) or path.name}'; use .csv, .tsv, "
            ".txt (optionally .gz) or .parquet",
            file=path,
        )
    return kind


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"cannot read parquet file ({exc})", file=path) from exc
    if len(frame) == 0:
        raise DataError("file is empty (no rows)", file=path)
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True)


def _read_delimited(path: Path, sep: str, encoding: str) -> Table:
    text = read_text(path, encoding)
    if not text.strip():
        raise DataError("file is empty", file=path)
    lines = _RowLines(text, sep)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep if len(sep) == 1 else re.escape(sep),
            engine="c" if len(sep) == 1 else "python",
            dtype=str,
            keep_default_na=False,  # blank stays "" so it is reported, not silently NaN
            skipinitialspace=True,
        )
    except pd.errors.ParserError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise DataError(
            f"wrong number of fields ({exc}); is the separator {sep!r} right?",
            file=path, line=int(match.group(1)) if match else None,
        ) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame) == 0:
        raise DataError("file is empty (a header but no data rows)", file=path)
    return Table(path, frame, lines.of_row, sep, lines.header())


class _RowLines:
    """1-based file line of each data row, computed only when an error needs one.

    Counts blank lines (which pandas skips) and quoted fields that span lines.
    """

    def __init__(self, text: str, sep: str) -> None:
        self._text = text
        self._sep = sep
        self._starts: list[int] | None = None

    def header(self) -> int:
        return self._rows()[0] if self._rows() else 1

    def of_row(self, row: int) -> int:
        starts = self._rows()
        return starts[row + 1] if row + 1 < len(starts) else row + 2

    def _rows(self) -> list[int]:
        if self._starts is None:
            self._starts = self._scan()
        return self._starts

    def _scan(self) -> list[int]:
        lines = io.StringIO(self._text)
        if len(self._sep) != 1:  # csv takes one character; no quoting in such files
            return [i for i, s in enumerate(lines, start=1) if s.strip()]
        reader = csv.reader(lines, delimiter=self._sep)
        starts: list[int] = []
        previous = 0
        for record in reader:
            if record and not (len(record) == 1 and not record[0].strip()):
                starts.append(previous + 1)
            previous = reader.line_num
        return starts


def _guess_sep(header: str, sep: str) -> str:
    for candidate in ("\t", ",", ";", "|"):
        if candidate != sep and candidate in header:
            return f" It contains {candidate!r}: pass sep={candidate!r}."
    return ""


def _require(table: Table, column: str, role: str) -> None:
    """A column the caller named must exist; list the real ones so the fix is obvious."""
    frame = table.frame
    if column in frame.columns:
        return
    if table.sep is not None and frame.shape[1] == 1:
        # every line parsed as one field: the separator, not the column name, is wrong
        header = str(frame.columns[0])
        raise DataError(
            f"the header parsed as a single column {header!r} with separator {table.sep!r}, "
            f"so there is no column {column!r}; is the separator right?"
            f"{_guess_sep(header, table.sep)}",
            file=table.path, line=table.header_line, field=column,
        )
    real = ", ".join(repr(c) for c in frame.columns)
    raise DataError(
        f"no column {column!r} (TableColumns.{role}); the file's columns are: {real}",
        file=table.path, field=column,
    )


def _interactions(table: Table, cols: TableColumns) -> pd.DataFrame:
    value_col = cols.label if cols.label is not None else cols.rating
    assert value_col is not None  # TableColumns guarantees one of the two
    roles = [("user", cols.user), ("item", cols.item), ("timestamp", cols.timestamp),
             ("label" if cols.label is not None else "rating", value_col)]
    for role, column in roles:
        _require(table, column, role)
    rating = _numbers(table, value_col)
    if cols.label is not None:
        not_binary = ~rating.isin([0.0, 1.0])
        _fail_first(table, not_binary, value_col, "a label must be 0 or 1")
    return pd.DataFrame({
        "user": _ids(table, cols.user),
        "item": _ids(table, cols.item),
        "rating": rating,
        "timestamp": _timestamps(table, cols.timestamp),
    })


def _items(table: Table, cols: TableColumns) -> pd.DataFrame:
    raw = table.frame
    _require(table, cols.item_key, "item_key")
    # Default names are optional (files without them still load); names the caller chose
    # must exist, or a typo would silently drop the title or text.
    if cols.title != DEFAULT_COLUMNS.title:
        _require(table, cols.title, "title")
    if cols.text != DEFAULT_COLUMNS.text:
        for column in cols.text:
            _require(table, column, "text")
    if cols.tags is not None:
        _require(table, cols.tags, "tags")
    items = pd.DataFrame({"item": _ids(table, cols.item_key)})
    if cols.title in raw.columns:
        items["title"] = _strings(raw[cols.title])
    text_cols = [c for c in cols.text if c in raw.columns]
    if text_cols:
        items["text"] = _join_text(raw, text_cols, items.get("title", items["item"]))
    if cols.tags is not None:
        items["tags"] = _tags(raw[cols.tags])
    used = {cols.item_key, cols.title, cols.tags, *cols.text}
    for column in raw.columns:
        if column not in used and column not in RESERVED:  # the rest: item attributes
            items[column] = _strings(raw[column])
    return items


def _strings(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), "").astype(str).str.strip()


def _join_text(raw: pd.DataFrame, columns: list[str], title: pd.Series) -> pd.Series:
    """Join the text columns with '. ', skipping blanks; an item with no text uses its title."""
    parts = [_strings(raw[c]) for c in columns]
    joined = [_join_sentences(list(row)) for row in zip(*parts, strict=True)]
    text = pd.Series(joined, index=raw.index)
    return text.where(text != "", title)


def _join_sentences(parts: list[str]) -> str:
    """Join non-blank parts with '. ', without doubling a stop: 'A. B', not 'A.. B'."""
    kept = [p for p in parts if p]
    heads = [p if p.endswith((".", "!", "?")) else p + "." for p in kept[:-1]]
    return " ".join([*heads, *kept[-1:]])


def _tags(values: pd.Series) -> list[list[str]]:
    return [[t.strip() for t in v.split("|") if t.strip()] for v in _strings(values)]


def _ids(table: Table, column: str) -> pd.Series:
    ids = _strings(table.frame[column])
    _fail_first(table, ids == "", column, "missing value")
    return ids


def _numbers(table: Table, column: str) -> pd.Series:
    """Numeric column -> float64; a blank or a non-number names its line."""
    values = table.frame[column]
    if pd.api.types.is_bool_dtype(values):
        values = values.astype("float64")
    if pd.api.types.is_numeric_dtype(values):
        _fail_first(table, values.isna(), column, "missing value")
        return values.astype("float64")
    text = _strings(values)
    _fail_first(table, text == "", column, "missing value")
    numbers = pd.to_numeric(text, errors="coerce")
    _fail_first(table, numbers.isna(), column, "not a number")
    return numbers.astype("float64")


def _timestamps(table: Table, column: str) -> pd.Series:
    """Unix seconds or ISO-8601 datetimes (value by value) -> int64 unix seconds."""
    values = table.frame[column]
    if pd.api.types.is_datetime64_any_dtype(values):
        _fail_first(table, values.isna(), column, "missing value")
        return _unix_seconds(values)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        _fail_first(table, values.isna(), column, "missing value")
        return values.astype("int64")
    text = _strings(values)
    _fail_first(table, text == "", column, "missing value")
    seconds = pd.to_numeric(text, errors="coerce").astype("float64")
    dates = seconds.isna()
    if dates.any():
        parsed = pd.to_datetime(text[dates], format="ISO8601", utc=True, errors="coerce")
        bad = pd.Series(False, index=text.index)
        bad[dates] = parsed.isna()
        _fail_first(table, bad, column, "not a unix time or ISO-8601 datetime")
        seconds[dates] = _unix_seconds(parsed).astype("float64")
    return seconds.astype("int64")


def _unix_seconds(stamps: pd.Series) -> pd.Series:
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize("UTC")  # naive datetimes are taken as UTC
    return ((stamps - EPOCH) // pd.Timedelta(seconds=1)).astype("int64")


def _fail_first(table: Table, bad: pd.Series, column: str, message: str) -> None:
    """Raise a DataError for the first True in `bad`, quoting the file's value."""
    if not bad.any():
        return
    row = int(bad.to_numpy().argmax())
    value = table.frame[column].iloc[row]
    raise DataError(f"{message}: {value!r}", file=table.path, line=table.locate(row),
                    field=column)


def _stem(path: Path) -> str:
    """'ratings.csv.gz' -> 'ratings': the default dataset name."""
    name = path.name.removesuffix(".gz").removesuffix(".GZ")
    return Path(name).stem or path.name
