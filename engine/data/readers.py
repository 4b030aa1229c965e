"""Reading delimited text files with errors that point at the file, line and field.

pandas' C parser does the reading (fast); when it or a conversion fails we go back to the
raw lines to say exactly where, so a user can open the file at that line.
"""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import pandas as pd

from engine.errors import DataError


def require_file(path: str | Path, what: str) -> Path:
    """Return the path if it is a readable file, else a DataError naming it."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} not found", file=p)
    if not p.is_file():
        raise DataError(f"{what} is not a file", file=p)
    return p


def read_text(path: Path, encoding: str) -> str:
    """Decode a (possibly gzipped) file; a decoding error names the line and byte."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except OSError as exc:
            raise DataError(f"not a valid gzip file ({exc})", file=path) from exc
    try:
        return raw.decode(encoding)
    except LookupError as exc:
        raise DataError(f"unknown encoding '{encoding}'", file=path) from exc
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"cannot decode byte {raw[exc.start]:#x} as {encoding} "
            "(pass the file's real encoding, e.g. latin-1)",
            file=path,
            line=line,
        ) from exc


def read_delimited(
    path: str | Path,
    *,
    sep: str,
    columns: list[str],
    numeric: tuple[str, ...] = (),
    encoding: str = "utf-8",
    header: bool = False,
    what: str = "data file",
) -> pd.DataFrame:
    """Read a headerless (or headed) delimited file into string columns.

    Columns named in `numeric` are converted to numbers; a value that is not a number raises
    a DataError with its 1-based line number and field name. A file whose lines do not split
    into len(columns) fields raises a DataError that suggests checking the separator.
    """
    p = require_file(path, what)
    text = read_text(p, encoding)
    if not text.strip():
        raise DataError("file is empty", file=p)
    first_line = 2 if header else 1
    if len(sep) > 1:  # the C parser takes one character; '::' files have no tabs
        text = text.replace(sep, "\t")
        sep = "\t"
    # split where pandas does (\r\n, \r, \n); str.splitlines also breaks at \x85, \x0c, ...
    lines = re.split(r"\r\n|\r|\n", text)
    data_lines = lines[1:] if header else lines
    n_fields = len(data_lines[0].split(sep)) if data_lines else 0
    if data_lines and n_fields < len(columns):
        raise DataError(
            f"expected {len(columns)} fields ({', '.join(columns)}) separated by {sep!r}, "
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
            f"expected {len(columns)} fields separated by {sep!r}, found {frame.shape[1]}",
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
                    f"expected {len(columns)} fields separated by {sep!r}, found {found}",
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
        bad = values.isna()
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise DataError(
                f"not a number: {frame[col].iloc[row]!r}",
                file=p,
                line=line_of_row(row),
                field=col,
            )
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
