"""Errors a user can cause. Each names where the problem is so it can be fixed at the source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

QUOTE_CHARS = 200  # an error quotes at most this much of a bad value (a line can be 20 MB)
MESSAGE_CHARS = 600  # and is never longer than this in all


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """repr() of a value for an error message, cut to about `limit` characters."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def one_line(message: str, limit: int = MESSAGE_CHARS) -> str:
    """An error message as one line of bounded length (newlines folded, the middle cut)."""
    text = " ".join(str(message).split())
    if len(text) <= limit:
        return text
    return f"{text[: limit - 80]} ... {text[-60:]}"


class DuetError(Exception):
    """Base class for every error Duet raises on purpose."""


class DataError(DuetError, ValueError):
    """Bad input data: names the file, the line (1-based, when known) and the field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        where = []
        if self.file:
            where.append(f"file {self.file}")
        if line is not None:
            where.append(f"line {line}")
        if field:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(one_line(f"{prefix}: {message}" if prefix else message))


class ConfigError(DuetError, ValueError):
    """A configuration value is invalid (quotes the value)."""


class StoreError(DuetError):
    """The run store could not be read or written."""
