"""The run store: one DuckDB file per run under runs/, plus safetensors weights beside it.

This module owns the schema and every SQL string. Values are bound as parameters; table
names only ever come from the fixed lists below. A run is written to a hidden temporary file
and renamed into place when complete, so readers never see half a run and a crash leaves
earlier runs intact. Readers open files read-only (DuckDB allows many readers per file).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.errors import StoreError

SCHEMA_VERSION = 1
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SUFFIX = ".duckdb"
FEATURES_STEM = "task-features"  # safetensors of the task's feature tables (engine.scoring)

# Fixed tables; CREATE statements are built from these constants only.
SCHEMA = {
    "run": """run_id VARCHAR, dataset VARCHAR, profile VARCHAR, source VARCHAR,
              created TIMESTAMP, seed INTEGER, config JSON, versions JSON,
              schema_version INTEGER, total_seconds DOUBLE""",
    "stages": "stage VARCHAR, seconds DOUBLE, detail VARCHAR",
    "summary": "key VARCHAR, value DOUBLE",
    "methods": """method VARCHAR, kind VARCHAR, config JSON, train_seconds DOUBLE,
                  infer_ms_per_1k DOUBLE, llm_calls_per_1k DOUBLE, cost JSON,
                  weights_file VARCHAR""",
    "predictions": "sample_id BIGINT, method VARCHAR, prob DOUBLE",
    "metrics": "method VARCHAR, split VARCHAR, segment VARCHAR, metric VARCHAR, value DOUBLE, "
               "n BIGINT",
    "training_log": "method VARCHAR, stage VARCHAR, epoch INTEGER, metric VARCHAR, value DOUBLE",
}
# Frames written as they come (their columns are the dataset's); must be present in a run.
FRAME_TABLES = ("users", "items", "samples", "interactions", "prompts", "embeddings",
                "map_agreement")
# Per-method diagnostics the methods may return (CoReLLa routing, S-LLMR gates, ...).
DIAGNOSTIC_TABLES = ("routing", "gates", "prompt_usage", "cot", "neighbours")


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
        raise StoreError(f"invalid run id {run_id!r}: letters, digits, '.', '_', '-' only")
    return run_id


def new_run_id(dataset: str, profile: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dataset}-{profile}")
    return f"{safe}-{stamp}-{os.getpid() % 10000:04d}"


@dataclass(frozen=True)
class RunPaths:
    runs_dir: Path
    run_id: str

    @property
    def db(self) -> Path:
        return self.runs_dir / f"{self.run_id}{SUFFIX}"

    @property
    def weights(self) -> Path:
        return self.runs_dir / self.run_id

    @property
    def tmp_db(self) -> Path:
        return self.runs_dir / f".{self.run_id}{SUFFIX}.tmp"

    @property
    def tmp_weights(self) -> Path:
        return self.runs_dir / f".{self.run_id}.tmp"


class RunWriter:
    """Writes one run; `commit()` renames it into place, `abort()` removes every trace.

    Use as a context manager: an exception inside aborts the run.
    """

    def __init__(self, runs_dir: str | Path, run_id: str) -> None:
        self.paths = RunPaths(Path(runs_dir), check_run_id(run_id))
        if self.paths.db.exists():
            raise StoreError(f"run {run_id} already exists at {self.paths.db}")
        self.paths.runs_dir.mkdir(parents=True, exist_ok=True)
        self._cleanup()
        self.paths.tmp_weights.mkdir()
        try:
            self.con = duckdb.connect(str(self.paths.tmp_db))
            for table, columns in SCHEMA.items():
                self.con.execute(f"CREATE TABLE {table} ({columns})")
        except duckdb.Error as exc:
            self._cleanup()
            raise StoreError(f"cannot create run store {self.paths.tmp_db}: {exc}") from exc

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def write_run(self, *, dataset: str, profile: str, source: str, seed: int,
                  config: dict[str, Any], versions: dict[str, str]) -> None:
        self.con.execute(
            "INSERT INTO run VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            [self.paths.run_id, dataset, profile, source, datetime.now(UTC)
             .replace(tzinfo=None), seed, json.dumps(config, default=str),
             json.dumps(versions), SCHEMA_VERSION],
        )

    def write_frame(self, table: str, frame: pd.DataFrame) -> None:
        """Create `table` (one of FRAME_TABLES or DIAGNOSTIC_TABLES) from a DataFrame,
        or append to it when it exists (several methods may write `routing`)."""
        if table not in FRAME_TABLES + DIAGNOSTIC_TABLES:
            raise StoreError(f"unknown table {table!r}")
        exists = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchall()[0][0]
        self.con.register("frame_in", frame)
        try:
            if exists:
                self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM frame_in")
            else:
                self.con.execute(f"CREATE TABLE {table} AS SELECT * FROM frame_in")
        finally:
            self.con.unregister("frame_in")

    def append(self, table: str, frame: pd.DataFrame) -> None:
        """Append rows to a fixed-schema table (columns matched by name)."""
        if table not in SCHEMA:
            raise StoreError(f"unknown table {table!r}")
        self.con.register("frame_in", frame)
        try:
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM frame_in")
        finally:
            self.con.unregister("frame_in")

    def save_weights(self, stem: str, tensors: dict[str, Any],
                     metadata: dict[str, str] | None = None) -> str:
        """Save a state dict as safetensors (no pickle); returns the file name."""
        check_run_id(stem)
        name = f"{stem}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, self.paths.tmp_weights / name,
                  metadata=metadata)
        return name

    def finish(self, total_seconds: float) -> None:
        self.con.execute("UPDATE run SET total_seconds = ?", [total_seconds])

    def commit(self) -> Path:
        self.con.execute("CHECKPOINT")
        self.con.close()
        if self.paths.weights.exists():
            shutil.rmtree(self.paths.weights)
        self.paths.tmp_weights.rename(self.paths.weights)
        self.paths.tmp_db.rename(self.paths.db)  # last: the run appears complete or not at all
        return self.paths.db

    def abort(self) -> None:
        try:
            self.con.close()
        except duckdb.Error:
            pass
        self._cleanup()

    def _cleanup(self) -> None:
        for p in (self.paths.tmp_db, Path(str(self.paths.tmp_db) + ".wal")):
            if p.exists():
                p.unlink()
        if self.paths.tmp_weights.exists():
            shutil.rmtree(self.paths.tmp_weights)


def list_runs(runs_dir: str | Path) -> pd.DataFrame:
    """One row per complete run (newest first); unreadable files are listed with an error."""
    rows = []
    for path in sorted(Path(runs_dir).glob(f"*{SUFFIX}")):
        if not RUN_ID_PATTERN.match(path.stem):
            continue
        try:
            with RunReader(path) as reader:
                info = reader.run_info()
            rows.append({**info, "path": str(path), "error": ""})
        except StoreError as exc:
            rows.append({"run_id": path.stem, "path": str(path), "error": str(exc)})
    frame = pd.DataFrame(rows, columns=["run_id", "dataset", "profile", "created",
                                        "total_seconds", "path", "error"])
    return frame.sort_values("created", ascending=False, na_position="last").reset_index(
        drop=True)


def open_run(runs_dir: str | Path, run_id: str) -> RunReader:
    """Open a run by id, never leaving runs_dir."""
    paths = RunPaths(Path(runs_dir), check_run_id(run_id))
    if not paths.db.is_file():
        raise StoreError(f"no run {run_id!r} in {runs_dir}")
    return RunReader(paths.db)


class RunReader:
    """Read-only access to one run; every query is parameterised, a cursor per call."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.run_id = self.path.stem
        try:
            self.con = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as exc:
            raise StoreError(f"cannot open run store {self.path}: {exc}") from exc

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        cursor = self.con.cursor()
        try:
            return cursor.execute(sql, params or []).df()
        except duckdb.Error as exc:
            raise StoreError(f"{self.path.name}: {exc}") from exc
        finally:
            cursor.close()

    def tables(self) -> list[str]:
        return self.query("SELECT table_name FROM information_schema.tables "
                          "ORDER BY table_name")["table_name"].tolist()

    def has_table(self, table: str) -> bool:
        return table in self.tables()

    def run_info(self) -> dict[str, Any]:
        frame = self.query("SELECT * FROM run")
        if frame.empty:
            raise StoreError(f"{self.path.name}: the run table is empty")
        info = frame.iloc[0].to_dict()
        info["config"] = json.loads(info["config"])
        info["versions"] = json.loads(info["versions"])
        return info

    def summary(self) -> dict[str, float]:
        frame = self.query("SELECT key, value FROM summary")
        return dict(zip(frame["key"], frame["value"]))

    def stages(self) -> pd.DataFrame:
        return self.query("SELECT stage, seconds, detail FROM stages")

    def methods(self) -> pd.DataFrame:
        return self.query("SELECT * FROM methods ORDER BY method")

    def metrics(self, split: str = "test", segment: str | None = None) -> pd.DataFrame:
        sql = "SELECT method, segment, metric, value, n FROM metrics WHERE split = ?"
        params: list[Any] = [split]
        if segment is not None:
            sql += " AND segment = ?"
            params.append(segment)
        return self.query(sql + " ORDER BY method, segment, metric", params)

    def metrics_table(self, split: str = "test", segment: str = "all") -> pd.DataFrame:
        """Wide: one row per method, columns auc/logloss/acc/uauc, n, plus cost columns."""
        long = self.metrics(split, segment)
        if long.empty:
            return pd.DataFrame()
        wide = long.pivot_table(index="method", columns="metric", values="value")
        wide["n"] = long.groupby("method")["n"].max()
        cost = self.methods().set_index("method")[
            ["kind", "train_seconds", "infer_ms_per_1k", "llm_calls_per_1k"]]
        return wide.join(cost, how="left").reset_index()

    def training_log(self, method: str | None = None) -> pd.DataFrame:
        if method is None:
            return self.query("SELECT * FROM training_log ORDER BY method, stage, epoch")
        return self.query("SELECT * FROM training_log WHERE method = ? ORDER BY stage, epoch",
                          [method])

    def samples(self, split: str | None = None) -> pd.DataFrame:
        if split is None:
            return self.query("SELECT * FROM samples ORDER BY sample_id")
        return self.query("SELECT * FROM samples WHERE split = ? ORDER BY sample_id", [split])

    def predictions(self, split: str = "test") -> pd.DataFrame:
        """Wide: sample_id, label, and one probability column per method."""
        long = self.query(
            "SELECT p.sample_id, p.method, p.prob FROM predictions p "
            "JOIN samples s USING (sample_id) WHERE s.split = ?", [split])
        if long.empty:
            return long
        wide = long.pivot(index="sample_id", columns="method", values="prob")
        labels = self.query("SELECT sample_id, label FROM samples WHERE split = ?", [split])
        return labels.set_index("sample_id").join(wide, how="inner").reset_index()

    def frame(self, table: str) -> pd.DataFrame:
        """A whole dataset or diagnostic table (names from the fixed lists only)."""
        if table not in FRAME_TABLES + DIAGNOSTIC_TABLES:
            raise StoreError(f"unknown table {table!r}")
        return self.query(f"SELECT * FROM {table}")

    # Case browser reads: a few rows at a time. Only fixed SQL fragments are joined; every
    # value (ids, splits, methods) is a bound parameter. Ids compare as text.
    def samples_for(self, *, user: str | None = None, item: str | None = None,
                    splits: list[str] | None = None,
                    sample_ids: list[int] | None = None) -> pd.DataFrame:
        """Samples of one user and/or item, in some splits and/or with some ids, by time."""
        clauses, params = ["TRUE"], []
        if user is not None:
            clauses.append('CAST("user" AS VARCHAR) = ?')
            params.append(str(user))
        if item is not None:
            clauses.append('CAST("item" AS VARCHAR) = ?')
            params.append(str(item))
        if splits is not None:
            clauses.append("list_contains(?::VARCHAR[], split)")
            params.append([str(s) for s in splits])
        if sample_ids is not None:
            clauses.append("sample_id IN (SELECT UNNEST(?::BIGINT[]))")
            params.append([int(i) for i in sample_ids])
        return self.query("SELECT * FROM samples WHERE " + " AND ".join(clauses)
                          + " ORDER BY timestamp, sample_id", params)

    def history(self, user: str) -> pd.DataFrame:
        """Every rating of one user (the interactions table), oldest first; same-time ratings
        keep the source's order, as the task builder does."""
        frame = self.query('SELECT * FROM interactions WHERE CAST("user" AS VARCHAR) = ?',
                           [str(user)])  # DuckDB scans in insertion (source) order
        return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)

    def predictions_for(self, sample_ids: list[int]) -> pd.DataFrame:
        """Long: sample_id, method, prob for these samples."""
        return self.query("SELECT sample_id, method, prob FROM predictions "
                          "WHERE sample_id IN (SELECT UNNEST(?::BIGINT[])) "
                          "ORDER BY sample_id, method", [[int(i) for i in sample_ids]])

    def routed_methods(self) -> list[str]:
        """Methods with rows in the routing table (none when the run has no such table)."""
        if not self.has_table("routing"):
            return []
        return self.query("SELECT DISTINCT method FROM routing ORDER BY method")[
            "method"].tolist()

    def routing_for(self, method: str, sample_ids: list[int] | None = None) -> pd.DataFrame:
        """One routed method's routing rows (all, or these samples'); empty without routing."""
        if not self.has_table("routing"):
            return pd.DataFrame(columns=["method", "sample_id", "split", "label", "p_crm",
                                         "p_llm", "entropy"])
        sql, params = "SELECT * FROM routing WHERE method = ?", [method]
        if sample_ids is not None:
            sql += " AND sample_id IN (SELECT UNNEST(?::BIGINT[]))"
            params.append([int(i) for i in sample_ids])
        return self.query(sql + " ORDER BY sample_id", params)

    def prompt_for(self, sample_id: int) -> str | None:
        """The stored LLM prompt of one sample (test samples have one), else None."""
        rows = self.query("SELECT prompt FROM prompts WHERE sample_id = ? LIMIT 1",
                          [int(sample_id)])
        return None if rows.empty else rows["prompt"].iloc[0]

    def weight_files(self, method: str) -> list[str]:
        """The safetensors stems a method saved (CoReLLa saves several)."""
        row = self.query("SELECT weights_file FROM methods WHERE method = ?", [method])
        if row.empty or not row.iloc[0, 0]:
            return []
        return [Path(name).stem for name in row.iloc[0, 0].split(",")]

    def load_weights(self, method: str, stem: str | None = None) -> dict[str, Any]:
        """One state dict a method saved: `stem`, or the method's first file."""
        stems = self.weight_files(method)
        if not stems or (stem is not None and stem not in stems):
            what = f"weights {stem!r}" if stem else "weights"
            raise StoreError(f"{self.path.name}: no {what} for method {method!r}")
        return self.load_tensors(stem or stems[0])[0]

    def load_tensors(self, stem: str) -> tuple[dict[str, Any], dict[str, str]]:
        """A safetensors file of this run by stem (no pickle): tensors and metadata."""
        path = self.path.parent / self.run_id / f"{check_run_id(stem)}.safetensors"
        if not path.is_file():
            raise StoreError(f"{self.path.name}: no stored tensors {stem!r} ({path})")
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        return load_file(path), metadata


def as_float_summary(values: dict[str, Any]) -> pd.DataFrame:
    rows = [(k, float(v)) for k, v in values.items() if isinstance(v, (int, float, np.number))]
    return pd.DataFrame(rows, columns=["key", "value"])
