"""The source registry: a dataset name -> its loader, so the CLI and pipeline stay generic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.data.dataset import Dataset
from engine.errors import ConfigError, DataError

SOURCES = ("ml-100k", "ml-1m", "amazon", "table")


def load_dataset(name: str, path: str | Path | None = None, side_path: str | Path | None = None,
                 options: dict[str, Any] | None = None) -> Dataset:
    """Load `name` from `path` (and `side_path`: Amazon metadata or the table's items file).

    options go to the loader as keyword arguments (e.g. category, click_rating, columns).
    """
    options = dict(options or {})
    if name == "ml-100k":
        from engine.data.movielens import load_ml100k

        return load_ml100k(path, **options)
    if path is None:
        raise DataError(f"dataset {name!r} needs --path (only ml-100k is fetched by itself)")
    if name == "ml-1m":
        from engine.data.movielens import load_ml1m

        return load_ml1m(path, **options)
    if name == "amazon":
        from engine.data.amazon import load_amazon

        return load_amazon(path, side_path, **options)
    if name == "table":
        from engine.data.tabular import TableColumns, load_table_pair

        columns = options.pop("columns", None)
        if isinstance(columns, dict):
            columns = TableColumns(**{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in columns.items()})
        return load_table_pair(path, side_path, columns=columns or TableColumns(), **options)
    raise ConfigError(f"unknown dataset {name!r}; valid: {', '.join(SOURCES)}")
