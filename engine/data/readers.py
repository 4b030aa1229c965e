"""Reading delimited text files with errors that point at the file, line and field.

pandas' C parser does the reading (fast); when it or a conversion fails we go back to the
raw lines to say exactly where, so a user can open the file at that line.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from engine.errors import ConfigError, DataError, quote

# Python's csv module refuses fields over 128 KiB; item descriptions can be longer
csv.field_size_limit(2**31 - 1)


def check_encoding(encoding: str) -> None:
    """An option's encoding must name a codec Python knows (checked before any reading)."""
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise ConfigError(f"encoding: unknown encoding {quote(encoding)} (e.g. utf-8, "
                          "latin-1)") from exc


def require_file(path: str | Path, what: str) -> Path:
    """Return the path if it is a readable file, else a DataError naming it."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} not found", file=p)
    if not p.is_file():
        raise DataError(f"{what} is not a file", file=p)
    return p


GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
PARQUET_MAGIC = b"PAR1"
SNIFF_BYTES = 4096


def file_kind(path: Path) -> str:
    """What the first bytes say a file is: "zip", "gzip", "parquet" or "text"."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head == ZIP_MAGIC:
        return "zip"
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head == PARQUET_MAGIC:
        return "parquet"
    return "text"


@contextmanager
def open_binary(path: Path) -> Iterator[IO[bytes]]:
    """The file's bytes as a stream, through gzip or a single-file zip archive when the
    content (not the name) says it is one."""
    kind = file_kind(path)
    if path.suffix.lower() == ".gz" and kind != "gzip":
        raise DataError("cannot read file: its name ends in .gz but it is not gzip data",
                        file=path)
    if kind == "zip":
        with _zip_member(path) as member:
            yield member
    elif kind == "gzip":
        with gzip.open(path, "rb") as fh:
            yield fh
    else:
        with path.open("rb") as fh:
            yield fh


@contextmanager
def _zip_member(path: Path) -> Iterator[IO[bytes]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"this is a damaged zip archive ({exc})", file=path) from exc
    with archive:
        members = [i for i in archive.infolist()
                   if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
        if len(members) != 1:
            names = ", ".join(m.filename for m in members[:3])
            more = f" and {len(members) - 3} more" if len(members) > 3 else ""
            raise DataError(
                f"this is a zip archive with {len(members)} files ({names}{more}); unzip it "
                "and pass the file inside", file=path)
        with archive.open(members[0]) as member:
            yield member


def zip_member_name(path: Path) -> str:
    """The name of the one file inside a zip archive (errors as open_binary's)."""
    with _zip_member(path) as member:
        return member.name


def read_text(path: Path, encoding: str) -> str:
    """Decode a plain, gzipped or single-file-zipped text file; a decoding error names the
    line and byte, and a binary file is called one (no encoding would help)."""
    try:
        with open_binary(path) as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read file ({exc})", file=path) from exc
    return decode(raw, encoding, path)


def decode(raw: bytes, encoding: str, path: Path, first_line: int = 1) -> str:
    """Bytes -> text; byte-order marks win over `encoding` (Excel writes UTF-16 text)."""
    for bom, codec in ((codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
                       (codecs.BOM_UTF8, "utf-8-sig")):
        if first_line == 1 and raw.startswith(bom):
            encoding = codec
            break
    else:
        check_not_binary(raw[:SNIFF_BYTES], path)
    try:
        return raw.decode(encoding)
    except LookupError as exc:
        raise DataError(f"unknown encoding {quote(encoding)}", file=path) from exc
    except UnicodeDecodeError as exc:
        line = first_line + raw.count(b"\n", 0, exc.start)
        raise DataError(
            f"cannot decode byte {raw[exc.start]:#x} as {encoding} "
            "(pass the file's real encoding, e.g. --option encoding=latin-1)",
            file=path,
            line=line,
        ) from exc


def check_not_binary(head: bytes, path: Path) -> None:
    """Text files hold no NUL bytes; say what a binary file is instead of failing to decode."""
    if head.startswith(PARQUET_MAGIC):
        raise DataError("this is a Parquet file, not text: pass a file named .parquet "
                        "(the table source reads it)", file=path)
    if b"\x00" in head:
        raise DataError(f"this is a binary file, not text (it starts with {quote(head[:16])})",
                        file=path)


def read_delimited(
    path: str | Path,
    *,
    sep: str,
    columns: list[str],
    numeric: tuple[str, ...] = (),
    encoding: str = "utf-8",
    header: bool = False,
    what: str = "data file",
    bounds: dict[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """Read a headerless (or headed) delimited file into string columns.

    Columns named in `numeric` are converted to numbers; a value that is not a number raises
    a DataError with its 1-based line number and field name. A file whose lines do not split
    into len(columns) fields raises a DataError that suggests checking the separator. A
    numeric value outside its `bounds` (inclusive; e.g. the source's rating scale) or not
    finite names its line too.
    """
    p = require_file(path, what)
    text = read_text(p, encoding)
    if not text.strip():
        raise DataError("file is empty", file=p)
    first_line = 2 if header else 1
    shown = sep  # messages name the file's own separator, not the one we parse with
    if len(sep) > 1:  # the C parser takes one character; '::' files have no tabs
        text = text.replace(sep, "\t")
        sep = "\t"
    # split where pandas does (\r\n, \r, \n); str.splitlines also breaks at \x85, \x0c, ...
    lines = re.split(r"\r\n|\r|\n", text)
    data_lines = lines[1:] if header else lines
    n_fields = len(data_lines[0].split(sep)) if data_lines else 0
    if data_lines and n_fields < len(columns):
        raise DataError(
            f"expected {len(columns)} fields ({', '.join(columns)}) separated by {shown!r}, "
            f"found {n_fields}; is the separator right?",
            file=p,
            line=first_line,
        )
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=0 if header else None,
            names=None if header else list(range(n_fields)),
            dtype=str,
            keep_default_na=False,
            quoting=3,  # QUOTE_NONE: titles contain quotes
            engine="c",
            skip_blank_lines=True,
        )
    except pd.errors.ParserError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise DataError(
            f"wrong number of fields: {exc}".strip(), file=p, line=line
        ) from exc
    if frame.shape[1] < len(columns):
        raise DataError(
            f"expected {len(columns)} fields separated by {shown!r}, found {frame.shape[1]}",
            file=p,
            line=first_line,
        )
    frame = frame.iloc[:, : len(columns)]
    frame.columns = columns
    if len(frame) == 0:
        raise DataError("file has no data rows", file=p)
    def line_of_row(row: int) -> int:
        return _line_number(data_lines, first_line, row)

    # pandas fills the fields a short line lacks with "", like an empty field: recount those
    maybe_short = (frame == "").any(axis=1).to_numpy()
    if maybe_short.any():
        row_lines = [first_line + i for i, line in enumerate(data_lines) if line.strip()]
        for row in maybe_short.nonzero()[0]:
            if row >= len(row_lines):
                break
            line = row_lines[row]
            found = data_lines[line - first_line].count(sep) + 1
            if found < len(columns):
                raise DataError(
                    f"expected {len(columns)} fields separated by {shown!r}, found {found}",
                    file=p,
                    line=line,
                    field=columns[found],
                )
    for col in columns:
        empty = frame[col].str.len() == 0
        if col in numeric and empty.any():
            row = int(empty.to_numpy().argmax())
            raise DataError("missing value", file=p, line=line_of_row(row), field=col)
    for col in numeric:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise DataError(f"not a finite number: {quote(frame[col].iloc[row])}", file=p,
                            line=line_of_row(row), field=col)
        low, high = (bounds or {}).get(col, (-np.inf, np.inf))
        outside = (values < low) | (values > high)
        if outside.any():
            row = int(outside.to_numpy().argmax())
            raise DataError(f"{frame[col].iloc[row]} is outside the scale {low:g} to {high:g}",
                            file=p, line=line_of_row(row), field=col)
        frame[col] = values
    return frame


def _line_number(data_lines: list[str], first_line: int, row: int) -> int:
    """1-based file line of data row `row`, counting the blank lines pandas skipped."""
    seen = -1
    for i, line in enumerate(data_lines):
        if line.strip():
            seen += 1
            if seen == row:
                return first_line + i
    return first_line + row
