"""Bring your own data: an interactions table and an optional items table.

Formats follow the extension: .csv / .tsv / .txt (delimited with a header row, optionally
.gz) and .parquet. Columns are mapped by name through TableColumns. Errors name the file,
the 1-based line (the header is line 1; for parquet, the 1-based row) and the column.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from engine.data.dataset import Dataset, finish_frames
from engine.data.readers import (
    check_encoding,
    file_kind,
    read_text,
    require_file,
    zip_member_name,
)
from engine.errors import ConfigError, DataError, one_line, quote
from engine.options import build, parse_mapping

DELIMITED = (".csv", ".tsv", ".txt")
RESERVED = ("item", "title", "text", "tags", "has_text", "user")  # Dataset's own columns
EPOCH = pd.Timestamp(0, tz="UTC")
# usual rating scales, smallest first; an undeclared scale is the first that holds almost all
# ratings, so a stray 99 among 1-5 stars is reported instead of widening the scale
USUAL_SCALES = ((0.0, 1.0), (1.0, 5.0), (0.0, 5.0), (1.0, 10.0), (0.0, 10.0), (0.0, 100.0))
SCALE_SHARE = 0.99
INTERACTION_ROLES = ("user", "item", "rating", "label", "timestamp", "review", "summary")


@dataclass
class Table:
    """A read file: its frame (string columns for delimited files) and where rows came from."""

    path: Path
    frame: pd.DataFrame
    locate: Callable[[int], int]  # 0-based data row -> 1-based file line (parquet: row)
    sep: str | None = None  # None for parquet
    header_line: int = 1
    # a folder of parts: the part file a data row came from (locate is then its row there)
    part_of: Callable[[int], Path] | None = None


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
    review: str | None = None  # review text, kept for the case browser (never in prompts)
    summary: str | None = None  # review title/summary, likewise

    def __post_init__(self) -> None:
        if self.rating is None and self.label is None:
            raise ConfigError(
                "TableColumns needs a rating column or a label column; got rating=None, "
                "label=None"
            )
        if isinstance(self.text, str):  # text="plot" is an easy slip for text=("plot",)
            object.__setattr__(self, "text", (self.text,))

    @classmethod
    def from_option(cls, raw: Any, name: str) -> TableColumns:
        """`columns=` as a mapping of roles to column names ({"user": "uid", ...}, JSON or
        Python quotes) or, for a file without a header row, roles by position: a mapping to
        0-based positions or the roles in column order ("user,item,rating,timestamp"; "_"
        skips a column)."""
        text = raw.strip() if isinstance(raw, str) else raw
        if isinstance(text, str) and not text.startswith("{"):
            roles = [r.strip() for r in text.split(",")]
            values: Any = {r: str(i) for i, r in enumerate(roles) if r not in ("", "_")}
        else:
            values = parse_mapping(text, name) if isinstance(text, str) else text
        if not isinstance(values, Mapping):
            raise ConfigError(f"{name}: expected a mapping of roles to columns, got "
                              f"{quote(raw)}")
        valid = [f.name for f in fields(cls)]
        unknown = [k for k in values if k not in valid]
        if unknown:
            raise ConfigError(f"{name}: unknown role {quote(unknown[0])}; valid roles: "
                              f"{', '.join(valid)}")
        positional = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v
                      for k, v in values.items()}
        return build(cls, positional, name)


@dataclass(frozen=True)
class TableOptions:
    """`--option` keys of the table source."""

    columns: TableColumns = TableColumns()  # which column holds what (see TableColumns)
    sep: str = ","  # field separator (.tsv files: tab)
    encoding: str = "utf-8"
    click_threshold: float | None = None  # default: 4 for ratings, 1 for a label column
    header: Literal["first", "none"] = "first"  # "none": the interactions file has no header
    rating_scale: tuple[float, float] | None = None  # default: inferred from the ratings
    name: str | None = None  # the dataset's name (default: the interactions file's stem)

    def __post_init__(self) -> None:
        check_encoding(self.encoding)
        if not self.sep or "\n" in self.sep or "\r" in self.sep:
            raise ConfigError(f"sep must be one or more characters, not a line break; got "
                              f"{quote(self.sep)}")
        if self.rating_scale is not None and not self.rating_scale[0] < self.rating_scale[1]:
            raise ConfigError(f"rating_scale must be low,high with low < high; got "
                              f"{self.rating_scale}")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
                                                       self.name):
            raise ConfigError(f"name must be letters, digits, '.', '_' or '-'; got "
                              f"{quote(self.name)}")


DEFAULT_COLUMNS = TableColumns()


def load_table_pair(interactions_path: str | Path, items_path: str | Path | None = None,
                    **options: Any) -> Dataset:
    """Load user-supplied interactions (+ items) files into a Dataset.

    Interactions need the user, item, timestamp and rating (or label) columns (review and
    summary are optional); other columns are ignored. The items file needs item_key; title
    and text columns are used when present (a non-default name must exist); every other items
    column becomes a categorical item attribute. A .tsv file is read tab-separated unless
    another sep than ',' is given. `options`: the fields of TableOptions.
    """
    opts = build(TableOptions, options, "--option", "the table source")
    columns = opts.columns
    if opts.header == "none" and columns == TableColumns():
        columns = TableColumns.from_option("user,item,rating,timestamp", "--option columns")
    if Path(interactions_path).is_dir():  # a folder of Parquet parts (one table, many files)
        inter_file = Path(interactions_path)
        table = read_parquet_parts(inter_file, _interaction_columns(columns))
    else:
        inter_file = require_file(interactions_path, "interactions file")
        table = read_table(inter_file, sep=opts.sep, encoding=opts.encoding,
                           header=opts.header == "first")
    interactions = _interactions(table, columns, opts.rating_scale)
    click_threshold = opts.click_threshold
    if columns.label is not None:
        if click_threshold is not None:
            raise ConfigError("--option click_threshold does not apply to a label column "
                              "(a label of 1 is the click)")
        click_threshold = 1.0
    items = None
    if items_path is not None:
        items_file = require_file(items_path, "items file")
        items = _items(read_table(items_file, sep=opts.sep, encoding=opts.encoding), columns)
    return finish_frames(
        opts.name or _stem(inter_file), interactions, None, items,
        source=inter_file, click_threshold=4.0 if click_threshold is None else click_threshold,
        items_source=items_path and Path(items_path),
    )


def read_table(path: Path, *, sep: str = ",", encoding: str = "utf-8",
               header: bool = True) -> Table:
    """Read a delimited or parquet file, keeping what is needed to locate a bad row.
    Without a header row, columns are named by 0-based position ("0", "1", ...)."""
    content = file_kind(path)
    if content == "parquet":  # the content decides, whatever the name says
        return Table(path, _read_parquet(path), lambda row: row + 1)
    # a zip archive is typed by the file inside it ("ratings.zip" holding ratings.csv)
    kind = _kind(Path(zip_member_name(path)) if content == "zip" else path)
    if kind == ".tsv" and sep == ",":
        sep = "\t"
    return _read_delimited(path, sep, encoding, header)


def _kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".zip"):  # read_text opens both
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if kind not in (*DELIMITED, ".parquet") or kind == ".parquet":
        raise DataError(
            f"unknown file type '{''.join(path.suffixes) or path.name}'; use .csv, .tsv, "
            ".txt (optionally .gz or a single-file .zip) or .parquet",
            file=path,
        )
    return kind


def _interaction_columns(cols: TableColumns) -> list[str]:
    return [c for c in (cols.user, cols.item, cols.timestamp, cols.label, cols.rating,
                        cols.summary, cols.review) if c is not None]


def read_parquet_parts(folder: Path, columns: list[str]) -> Table:
    """The `columns` of every *.parquet file in `folder` (parts of one table, as Spark,
    DuckDB or a sharded export write them), through DuckDB: only those columns are read
    (the rest of a wide file never reaches memory) and the parts are concatenated in file
    name order; a bad row is named by its part file and 1-based row there."""
    import duckdb

    parts = sorted(folder.glob("*.parquet"))
    if not parts:
        raise DataError("no *.parquet files in this folder (a folder is read as the Parquet "
                        "parts of one table)", file=folder)
    selected = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    with duckdb.connect() as con:
        try:
            names = [r[0] for r in con.execute(
                "SELECT name FROM parquet_schema(?) WHERE name <> 'schema'",
                [[str(p) for p in parts]]).fetchall()]
            missing = [c for c in columns if c not in names]
            if missing:
                raise DataError(f"no column {quote(missing[0])} in the Parquet parts "
                                f"(columns: {', '.join(dict.fromkeys(names))})", file=folder)
            frame = con.execute(
                f"SELECT {selected}, filename AS __part, file_row_number AS __row FROM "
                "read_parquet(?, union_by_name = true, filename = true, file_row_number = "
                "true) ORDER BY __part, __row", [[str(p) for p in parts]]).df()
        except duckdb.Error as exc:
            raise DataError(f"cannot read the Parquet parts ({one_line(str(exc))})",
                            file=folder) from exc
    if frame.empty:
        raise DataError("the Parquet parts hold no rows", file=folder)
    part, row_in_part = frame.pop("__part").to_numpy(), frame.pop("__row").to_numpy()
    frame.columns = [str(c) for c in frame.columns]
    return Table(folder, frame, lambda row: int(row_in_part[row]) + 1,
                 part_of=lambda row: Path(str(part[row])))


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"cannot read parquet file ({exc})", file=path) from exc
    if len(frame) == 0:
        raise DataError("file is empty (no rows)", file=path)
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True)


def _read_delimited(path: Path, sep: str, encoding: str, header: bool = True) -> Table:
    text = read_text(path, encoding)
    if not text.strip():
        raise DataError("file is empty", file=path)
    lines = _RowLines(text, sep, header)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep if len(sep) == 1 else re.escape(sep),
            engine="c" if len(sep) == 1 else "python",
            header=0 if header else None,
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
    return Table(path, frame, lines.of_row, sep, lines.header() if header else 0)


class _RowLines:
    """1-based file line of each data row, computed only when an error needs one.

    Counts blank lines (which pandas skips) and quoted fields that span lines.
    """

    def __init__(self, text: str, sep: str, has_header: bool = True) -> None:
        self._text = text
        self._sep = sep
        self._skip = 1 if has_header else 0
        self._starts: list[int] | None = None

    def header(self) -> int:
        return self._rows()[0] if self._rows() else 1

    def of_row(self, row: int) -> int:
        starts = self._rows()
        index = row + self._skip
        return starts[index] if index < len(starts) else index + 1

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
    real = ", ".join(quote(c, 40) for c in list(frame.columns)[:20])
    hint = ""
    if table.header_line and all(_is_number(c) for c in frame.columns):
        hint = ("; the first row looks like data, not a header: if the file has none, pass "
                "--option header=none (columns by position, e.g. "
                "columns=user,item,rating,timestamp)")
    elif not table.header_line:
        hint = " (header=none: name columns by 0-based position)"
    raise DataError(
        f"no column {column!r} (TableColumns.{role}); the file's columns are: {real}{hint}",
        file=table.path, field=column,
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _interactions(table: Table, cols: TableColumns,
                  rating_scale: tuple[float, float] | None = None) -> pd.DataFrame:
    value_col = cols.label if cols.label is not None else cols.rating
    assert value_col is not None  # TableColumns guarantees one of the two
    roles = [("user", cols.user), ("item", cols.item), ("timestamp", cols.timestamp),
             ("label" if cols.label is not None else "rating", value_col)]
    optional = [(role, getattr(cols, role)) for role in ("summary", "review")
                if getattr(cols, role) is not None]
    for role, column in roles + optional:
        _require(table, column, role)
    rating = _numbers(table, value_col)
    if cols.label is not None:
        not_binary = ~rating.isin([0.0, 1.0])
        _fail_first(table, not_binary, value_col, "a label must be 0 or 1")
    else:
        low, high = rating_scale or _usual_scale(table, value_col, rating)
        _fail_first(table, (rating < low) | (rating > high), value_col,
                    f"outside the rating scale {low:g} to {high:g} (declare another with "
                    "--option rating_scale=low,high)")
    frame = pd.DataFrame({
        "user": _ids(table, cols.user),
        "item": _ids(table, cols.item),
        "rating": rating,
        "timestamp": _timestamps(table, cols.timestamp),
    })
    for role, column in optional:
        frame[role] = _strings(table.frame[column])
    return frame


def _usual_scale(table: Table, column: str, rating: pd.Series) -> tuple[float, float]:
    """The smallest usual scale holding almost all ratings; values outside it are then
    reported, not silently taken as a wider scale."""
    for low, high in USUAL_SCALES:
        if rating.between(low, high).mean() >= SCALE_SHARE:
            return low, high
    raise DataError(
        f"the ratings span {rating.min():g} to {rating.max():g}, which is no usual scale "
        "(1-5, 0-5, 1-10, 0-10, 0-100): declare it with --option rating_scale=low,high",
        file=table.path, field=column)


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
        values = values.astype("float64")
        _fail_first(table, ~np.isfinite(values), column, "not a finite number")
        return values
    text = _strings(values)
    _fail_first(table, text == "", column, "missing value")
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    _fail_first(table, numbers.isna(), column, "not a number")
    _fail_first(table, ~np.isfinite(numbers), column, "not a finite number")
    return numbers


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
    where = table.part_of(row) if table.part_of is not None else table.path
    raise DataError(f"{message}: {quote(value)}", file=where, line=table.locate(row),
                    field=column)


def _stem(path: Path) -> str:
    """'ratings.csv.gz' -> 'ratings': the default dataset name."""
    name = path.name.removesuffix(".gz").removesuffix(".GZ")
    return Path(name).stem or path.name
