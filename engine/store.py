"""The run store: one DuckDB file per run under runs/, plus safetensors weights beside it.

This module owns the schema and every SQL string. Values are bound as parameters; table
names only ever come from the fixed lists below.

Write protocol (one writer per run id; readers never see half a run):
1. claim: `.<id>.claim` is created and flock-ed before any data is read (`claim_run`), so a
   second writer of the same id fails at once, naming the owner. The kernel drops the lock
   when its owner dies, so a claim left by a killed writer is recognisably stale.
2. write into temporaries named per writer (`.<id>.<pid>-<token>.duckdb.tmp`, `.<id>.<pid>-
   <token>.weights.tmp/`), counting the rows of every table.
3. seal and verify: the counts go into a `manifest` table; the closed file is reopened and
   checked against them, the run row must have its total time, every weight file must open.
4. publish: rename the weights folder, then the database (last: the run appears complete or
   not at all), then drop the claim. Any failure removes every temporary.
What killed writers leave (temporaries and claims without a live owner, a weights folder
published without its database) is swept at the start of every run and by `list_runs`.
Readers open files read-only and check them against the manifest: a run that fails is listed
and shown as "this run is damaged: <reason>".
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine import faults
from engine.errors import StoreError, one_line

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
                  weights_file VARCHAR, description VARCHAR""",
    "predictions": "sample_id BIGINT, method VARCHAR, prob DOUBLE",
    # value NULL: undefined (e.g. AUC with one label class); n_pos: positives among the n
    "metrics": "method VARCHAR, split VARCHAR, segment VARCHAR, metric VARCHAR, value DOUBLE, "
               "n BIGINT, n_pos BIGINT",
    "training_log": "method VARCHAR, stage VARCHAR, epoch INTEGER, metric VARCHAR, value DOUBLE",
    # what a user should know about the run's data (duplicates, missing text, one-class splits)
    "notes": "stage VARCHAR, message VARCHAR",
}
# Frames written as they come (their columns are the dataset's); must be present in a run.
FRAME_TABLES = ("users", "items", "samples", "interactions", "prompts", "embeddings",
                "map_agreement")
# Per-method diagnostics the methods may return (CoReLLa routing, S-LLMR gates, ...).
DIAGNOSTIC_TABLES = ("routing", "gates", "pairs", "prompt_usage", "prompt_pool",
                     "prompt_users", "cot", "neighbours", "deltas")
KNOWN_TABLES = (*SCHEMA, *FRAME_TABLES, *DIAGNOSTIC_TABLES)
# Written last by the writer: rows per table, what a reader checks the file against.
MANIFEST = "manifest"
# Runs written before the manifest existed all came from the pipeline, which wrote these.
LEGACY_TABLES = ("run", "stages", "summary", "methods", "predictions", "metrics", "training_log",
                 "users", "items", "samples", "interactions", "prompts")

# A writer's temporaries (`.<id>.<pid>-<token>...`; without the token: before per-writer names)
# and claims. DuckDB spills to `<db>.tmp/` and logs to `<db>.wal` next to the temp database.
# A torchrun group's Parquet parts of the per-sample outputs: `.<id>.parts.tmp/`.
TEMP_PATTERN = re.compile(r"^\.(?P<id>[A-Za-z0-9][A-Za-z0-9._-]*?)(?:\.\d+-[0-9a-f]{8})?"
                          r"\.(?:duckdb\.tmp(?:\.wal|\.tmp)?|weights\.tmp|parts\.tmp|tmp)$")
PART_ROW = "__row"  # a part's column: each row's place in the whole frame
CLAIM_PATTERN = re.compile(r"^\.(?P<id>[A-Za-z0-9][A-Za-z0-9._-]*)\.claim$")
CLAIM_WAIT_S = 0.3  # a sweeper holds a dead writer's claim for a moment before removing it
FRESH_CLAIM_S = 60.0  # an empty claim younger than this is a writer between open and lock
DISK_FULL = re.compile(r"no space left|disk (?:is )?full|could not write|not enough space",
                       re.IGNORECASE)


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
        raise StoreError(f"invalid run id {run_id!r}: letters, digits, '.', '_', '-' only")
    return run_id


def new_run_id(dataset: str, profile: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dataset}-{profile}")
    return f"{safe}-{stamp}-{os.getpid() % 10000:04d}"


def _store_error(exc: BaseException, directory: Path, what: str) -> StoreError:
    """One line for a failed write; a full disk says so (ENOSPC, or DuckDB's words for it)."""
    text = one_line(str(exc))
    if (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
            or DISK_FULL.search(text)):
        return StoreError(f"no space left in {directory} ({what}: {text})")
    return StoreError(f"cannot {what}: {text}")


def _damaged(path: Path, reason: str) -> StoreError:
    return StoreError(f"this run is damaged: {path.name}: {reason}")


@dataclass(frozen=True)
class RunPaths:
    runs_dir: Path
    run_id: str
    token: str = ""  # the writer's "<pid>-<random>": two writers' temporaries never collide

    @property
    def db(self) -> Path:
        return self.runs_dir / f"{self.run_id}{SUFFIX}"

    @property
    def weights(self) -> Path:
        return self.runs_dir / self.run_id

    @property
    def claim(self) -> Path:
        return self.runs_dir / f".{self.run_id}.claim"

    @property
    def tmp_db(self) -> Path:
        return self.runs_dir / f".{self.run_id}.{self.token}{SUFFIX}.tmp"

    @property
    def tmp_weights(self) -> Path:
        return self.runs_dir / f".{self.run_id}.{self.token}.weights.tmp"

    @property
    def parts(self) -> Path:
        """Where the ranks of a torchrun group put their shares of the per-sample outputs
        (no writer token: every rank names it from the run id alone)."""
        return self.runs_dir / f".{self.run_id}.parts.tmp"

    def temporaries(self) -> list[Path]:
        db = str(self.tmp_db)
        return [self.tmp_db, Path(db + ".wal"), Path(db + ".tmp"), self.tmp_weights,
                self.parts]


PART_KEY = re.compile(r"^\d{1,6}-[a-z_]+$")


def write_part(runs_dir: str | Path, run_id: str, key: str, frame: pd.DataFrame, rank: int,
               world: int) -> Path:
    """One rank's share (every world-th row, from its rank) of a per-sample frame, as a
    Parquet part under the run's parts folder; RunWriter.merge_parts reads them back."""
    if not PART_KEY.match(key) or not 0 <= rank < world:
        raise StoreError(f"bad part {key!r} of rank {rank} of {world}")
    folder = RunPaths(Path(runs_dir), check_run_id(run_id)).parts / key
    share = frame.iloc[rank::world].assign(**{PART_ROW: np.arange(rank, len(frame), world)})
    path = folder / f"rank-{rank}.parquet"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        share.to_parquet(path, index=False)
    except OSError as exc:
        raise _store_error(exc, Path(runs_dir), f"write the Parquet part {key}") from exc
    return path


def discard_parts(runs_dir: str | Path, run_id: str) -> None:
    """Remove a run's Parquet parts (rank 0, once the run is published or has failed)."""
    _remove(RunPaths(Path(runs_dir), check_run_id(run_id)).parts)


def _remove(path: Path) -> bool:
    """Best effort (cleanup must not mask the error being handled); True when removed."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    except OSError:
        return False


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (a released claim is unlinked)."""
    try:
        now = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _read_owner(fd: int) -> dict[str, Any]:
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict[str, Any]) -> str:
    if not owner:
        return "another writer that is starting"
    host = owner.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"pid {owner.get('pid')}{where} (started {owner.get('started')})"


class RunClaim:
    """The right to write one run id: `.<id>.claim`, flock-ed for as long as it is held.

    `release()` is idempotent; the writer releases it when it publishes or aborts."""

    def __init__(self, paths: RunPaths, fd: int) -> None:
        self.paths = paths
        self._fd: int | None = fd

    @property
    def run_id(self) -> str:
        return self.paths.run_id

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        # Unlink, then unlock: a writer that opened the old file meanwhile gets the lock on
        # an unlinked file, sees it is no longer the claim's path and tries again.
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.paths.claim):
                self.paths.claim.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> RunClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_run(runs_dir: str | Path, run_id: str) -> RunClaim:
    """Check what storing the run will need and take its id, before any data is read.

    Raises StoreError for an invalid id, an id that exists or is being written, a runs
    directory that is a file or cannot be written, a full disk. Sweeps stale debris first.
    """
    check_run_id(run_id)
    directory = _writable_dir(Path(runs_dir))
    sweep_stale(directory)
    paths = RunPaths(directory, run_id, f"{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd, previous = _lock_claim(paths)
    except OSError as exc:
        raise _store_error(exc, directory, f"claim run id {run_id}") from exc
    claim = RunClaim(paths, fd)
    try:
        _take_over(paths, previous)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "token": paths.token,
                 "started": datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
    except OSError as exc:
        claim.release()
        raise _store_error(exc, directory, f"claim run id {run_id}") from exc
    except BaseException:
        claim.release()
        raise
    return claim


def _writable_dir(directory: Path) -> Path:
    if directory.exists() and not directory.is_dir():
        raise StoreError(f"{directory} is a file, not a run store directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _store_error(exc, directory, f"create the run store directory {directory}") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write to the run store directory {directory} "
                         "(permission denied)")
    return directory


def _lock_claim(paths: RunPaths) -> tuple[int, dict[str, Any]]:
    """The claim's descriptor, locked, and what a dead previous owner wrote in it ({} if none)."""
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        fd = os.open(paths.claim, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise StoreError(f"run id {paths.run_id} is being written by "
                             f"{_describe(owner)}") from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, paths.claim):
            return fd, _read_owner(fd)
        os.close(fd)  # released while we waited for it: take the new file


def _take_over(paths: RunPaths, previous: dict[str, Any]) -> None:
    """We hold the id. What a dead writer of it left goes; a published run stays."""
    if paths.db.exists():
        raise StoreError(f"run {paths.run_id} already exists at {paths.db}")
    for path in _temporaries_of(paths.runs_dir, paths.run_id):
        _remove(path)
    if paths.weights.exists():
        if not previous:  # no dead writer of this id: the folder is not ours to remove
            raise StoreError(f"{paths.weights} exists without its run file (the weights of a "
                             "renamed run?); choose another run id")
        _remove(paths.weights)  # its writer died between the two renames


def _temporaries_of(directory: Path, run_id: str) -> list[Path]:
    return [p for p in directory.iterdir()
            if (m := TEMP_PATTERN.match(p.name)) and m["id"] == run_id]


def sweep_stale(runs_dir: str | Path) -> list[Path]:
    """Remove what killed writers left: temporaries with no live claim, stale claims, and a
    weights folder whose writer died between the two renames. A live writer's files stay.
    Returns what was removed."""
    directory = Path(runs_dir)
    try:
        # one listing, temporaries and claims together: a writer creates its claim before its
        # temporaries, so a listed temporary's claim is listed too while its writer lives
        names = [p.name for p in directory.iterdir()]
    except OSError:
        return []
    removed: list[Path] = []
    live = {m["id"] for name in names if (m := CLAIM_PATTERN.match(name))
            and _claim_is_live(RunPaths(directory, m["id"]), removed)}
    for name in names:
        m = TEMP_PATTERN.match(name)
        if m and m["id"] not in live and _remove(directory / name):
            removed.append(directory / name)
    return removed


def _claim_is_live(paths: RunPaths, removed: list[Path]) -> bool:
    """False (after removing it and its writer's half-published folder) for a dead claim."""
    try:
        fd = os.open(paths.claim, os.O_RDONLY)
    except OSError:
        return False  # released since the listing
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True  # a live writer holds it
        if not _same_file(fd, paths.claim):
            return False
        owner = _read_owner(fd)
        if not owner and time.time() - os.fstat(fd).st_mtime < FRESH_CLAIM_S:
            return True  # a writer between creating and locking its claim
        if owner and paths.weights.is_dir() and not paths.db.exists():
            if _remove(paths.weights):
                removed.append(paths.weights)
        if _remove(paths.claim):
            removed.append(paths.claim)
        return False
    finally:
        os.close(fd)


class RunWriter:
    """Writes one run; `commit()` verifies and publishes it, `abort()` removes every trace.

    Use as a context manager: an exception inside aborts the run. Without a `claim` (from
    `claim_run`), the writer claims the id itself.
    """

    def __init__(self, runs_dir: str | Path, run_id: str, claim: RunClaim | None = None) -> None:
        claim = claim or claim_run(runs_dir, run_id)
        if claim.run_id != run_id or not claim.held:
            raise StoreError(f"run {run_id}: the writer needs a held claim on that id")
        self.claim, self.paths = claim, claim.paths
        self.con: duckdb.DuckDBPyConnection | None = None
        self.rows: dict[str, int] = {}  # rows written per table: what the manifest records
        self.weight_files: list[str] = []
        self._renamed = False
        try:
            with self._writing("create the run store"):
                self.paths.tmp_weights.mkdir()
                self.con = duckdb.connect(str(self.paths.tmp_db))
                for table, columns in SCHEMA.items():
                    self.con.execute(f"CREATE TABLE {table} ({columns})")
                    self.rows[table] = 0
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        try:
            yield
        except (OSError, duckdb.Error) as exc:
            raise _store_error(exc, self.paths.runs_dir, what) from exc

    def _count(self, table: str, rows: int) -> None:
        self.rows[table] = self.rows.get(table, 0) + rows

    def write_run(self, *, dataset: str, profile: str, source: str, seed: int,
                  config: dict[str, Any], versions: dict[str, str]) -> None:
        with self._writing("write the run row"):
            self.con.execute(
                "INSERT INTO run VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                [self.paths.run_id, dataset, profile, source, datetime.now(UTC)
                 .replace(tzinfo=None), seed, json.dumps(config, default=str),
                 json.dumps(versions), SCHEMA_VERSION],
            )
        self._count("run", 1)

    def write_frame(self, table: str, frame: pd.DataFrame) -> None:
        """Create `table` (one of FRAME_TABLES or DIAGNOSTIC_TABLES) from a DataFrame,
        or append to it when it exists (several methods may write `routing`)."""
        if table not in FRAME_TABLES + DIAGNOSTIC_TABLES:
            raise StoreError(f"unknown table {table!r}")
        with self._writing(f"write table {table}"):
            self.con.register("frame_in", frame)
            try:
                if table in self.rows:
                    self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM frame_in")
                else:
                    self.con.execute(f"CREATE TABLE {table} AS SELECT * FROM frame_in")
            finally:
                self.con.unregister("frame_in")
        self._count(table, len(frame))

    def append(self, table: str, frame: pd.DataFrame) -> None:
        """Append rows to a fixed-schema table (columns matched by name)."""
        if table not in SCHEMA:
            raise StoreError(f"unknown table {table!r}")
        with self._writing(f"write table {table}"):
            self.con.register("frame_in", frame)
            try:
                self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM frame_in")
            finally:
                self.con.unregister("frame_in")
        self._count(table, len(frame))

    def put(self, table: str, frame: pd.DataFrame) -> None:
        """`append` for the fixed tables, `write_frame` for the others."""
        (self.append if table in SCHEMA else self.write_frame)(table, frame)

    def merge_parts(self, table: str, key: str, world: int) -> None:
        """Add to `table` the rows every rank wrote for `key` (write_part), in the whole
        frame's order: what `put` of the frame would have written."""
        if table not in KNOWN_TABLES or not PART_KEY.match(key):
            raise StoreError(f"unknown table {table!r} or part {key!r}")
        files = [self.paths.parts / key / f"rank-{r}.parquet" for r in range(world)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise StoreError(f"run {self.paths.run_id}: the Parquet parts {', '.join(missing)} "
                             f"of {key} are not in {self.paths.parts.parent}: under several "
                             "machines --out must be a folder every node shares")
        select = (f"SELECT * EXCLUDE ({PART_ROW}) FROM read_parquet(?) ORDER BY {PART_ROW}")
        with self._writing(f"merge the Parquet parts of table {table}"):
            if table in self.rows:
                rows = self.con.execute(f"INSERT INTO {table} BY NAME {select}",
                                        [[str(f) for f in files]]).fetchall()[0][0]
            else:
                self.con.execute(f"CREATE TABLE {table} AS {select}", [[str(f) for f in files]])
                rows = self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        self._count(table, int(rows))

    def save_weights(self, stem: str, tensors: dict[str, Any],
                     metadata: dict[str, str] | None = None) -> str:
        """Save a state dict as safetensors (no pickle); returns the file name."""
        check_run_id(stem)
        name = f"{stem}.safetensors"
        with self._writing(f"save weights {name}"):
            save_file({k: v.contiguous() for k, v in tensors.items()},
                      self.paths.tmp_weights / name, metadata=metadata)
        self.weight_files.append(name)
        return name

    def finish(self, total_seconds: float) -> None:
        with self._writing("write the run's total time"):
            self.con.execute("UPDATE run SET total_seconds = ?", [total_seconds])

    def commit(self) -> Path:
        """Seal, verify and publish the run; on any failure remove every trace and raise."""
        try:
            with self._writing(f"store run {self.paths.run_id}"):
                self._seal()
                self._verify()
                self.paths.tmp_weights.rename(self.paths.weights)
                self._renamed = True
                faults.point("renames")
                if self.paths.db.exists():  # never replace a run (the claim should prevent it)
                    raise StoreError(f"run {self.paths.run_id} already exists at "
                                     f"{self.paths.db}")
                self.paths.tmp_db.rename(self.paths.db)  # last: the run appears whole or not
        except BaseException:
            self.abort()
            raise
        _remove(self.paths.parts)  # merged: the ranks' Parquet parts are not needed
        self.claim.release()
        return self.paths.db

    def _seal(self) -> None:
        """Record the rows of every table in the manifest, checkpoint, close: the file is final."""
        con, self.con = self.con, None
        try:
            con.execute(f"CREATE TABLE {MANIFEST} (table_name VARCHAR, rows BIGINT)")
            con.executemany(f"INSERT INTO {MANIFEST} VALUES (?, ?)", sorted(self.rows.items()))
            con.execute("CHECKPOINT")
        finally:
            con.close()

    def _verify(self) -> None:
        """Reopen the closed file: every table holds the rows written to it, the run has its
        total time, and every weight file the writer saved or a method lists opens."""
        con = duckdb.connect(str(self.paths.tmp_db), read_only=True)
        try:
            problems = integrity_problems(con)
            listed = {name for (value,) in con.execute("SELECT weights_file FROM methods")
                      .fetchall() if value for name in value.split(",")}
        finally:
            con.close()
        for name in sorted(listed | set(self.weight_files)):
            path = self.paths.tmp_weights / name
            try:
                if Path(name).name != name:
                    raise ValueError("not a plain file name")
                with safe_open(str(path), framework="pt") as handle:
                    handle.keys()
            except Exception as exc:  # safetensors raises its own types for a bad file
                problems.append(f"weight file {name!r} does not open ({one_line(str(exc))})")
        if problems:
            raise StoreError(f"run {self.paths.run_id} not published: {'; '.join(problems)}")

    def abort(self) -> None:
        """Remove every trace of this writer and release the claim; idempotent, never raises."""
        if self.con is not None:
            try:
                self.con.close()
            except duckdb.Error:
                pass
            self.con = None
        for path in self.paths.temporaries():
            _remove(path)
        if self._renamed and not self.paths.db.exists():
            _remove(self.paths.weights)  # published weights whose database never followed
        self.claim.release()


def integrity_problems(con: duckdb.DuckDBPyConnection) -> list[str]:
    """What makes a store file unusable: a table missing, row counts that differ from the
    manifest, no run row or no total time. Cheap: the counts come from DuckDB's metadata."""
    tables = {row[0] for row in con.execute(
        "SELECT table_name FROM information_schema.tables").fetchall()}
    if MANIFEST in tables:
        expected = dict(con.execute(f"SELECT table_name, rows FROM {MANIFEST}").fetchall())
    else:
        expected = dict.fromkeys(LEGACY_TABLES)
    problems = []
    for table, rows in sorted(expected.items()):
        if table not in KNOWN_TABLES:
            problems.append(f"unknown table {table!r} in the manifest")
        elif table not in tables:
            problems.append(f"table {table} is missing")
        elif rows is not None:
            (count,) = con.execute(f"SELECT count(*) FROM {table}").fetchone()
            if count != rows:
                problems.append(f"table {table} has {count} rows, {rows} were written")
    if "run" in tables:
        totals = con.execute("SELECT total_seconds FROM run").fetchall()
        if len(totals) != 1:
            problems.append(f"the run table has {len(totals)} rows")
        elif totals[0][0] is None:
            problems.append("the run was never finished (no total time)")
    return problems


def list_runs(runs_dir: str | Path, *, sweep: bool = True) -> pd.DataFrame:
    """One row per run file (newest first), keyed by the file's name: the id `show` and the app
    use. A damaged file is listed with its error, a file renamed on disk with a note. Sweeps
    stale debris of killed writers first."""
    if sweep:
        sweep_stale(runs_dir)
    rows = []
    for path in sorted(Path(runs_dir).glob(f"*{SUFFIX}")):
        if not RUN_ID_PATTERN.match(path.stem) or not path.is_file():
            continue
        rows.append(_run_row(path))
    frame = pd.DataFrame(rows, columns=["run_id", "dataset", "profile", "created",
                                        "total_seconds", "path", "error", "note"])
    return frame.sort_values("created", ascending=False, na_position="last").reset_index(
        drop=True)


# path -> (file version, its list_runs row): opening a run file costs ~150 ms, and the app
# lists its folder every few seconds, so a file is read again only when it changed
_RUN_ROWS: dict[str, tuple[tuple[int, int, int], dict]] = {}


def _run_row(path: Path) -> dict:
    stat = path.stat()
    version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    known = _RUN_ROWS.get(str(path))
    if known is not None and known[0] == version:
        return dict(known[1])
    try:
        with RunReader(path) as reader:
            info = reader.run_info()
        stored = info["stored_run_id"]
        note = "" if stored == path.stem else f"renamed on disk; written as run {stored}"
        row = {**info, "path": str(path), "error": "", "note": note}
    except StoreError as exc:
        row = {"run_id": path.stem, "path": str(path), "error": str(exc), "note": ""}
    _RUN_ROWS[str(path)] = (version, row)
    return dict(row)


def open_run(runs_dir: str | Path, run_id: str, *, verify: bool = False) -> RunReader:
    """Open a run by its file name, never leaving runs_dir; `verify` reads every value."""
    paths = RunPaths(Path(runs_dir), check_run_id(run_id))
    if not paths.db.is_file():
        runs = list_runs(runs_dir, sweep=False)
        renamed = runs[runs["note"].str.endswith(f"written as run {run_id}")]
        hint = (f" (file {Path(renamed['path'].iloc[0]).name} was written as run {run_id})"
                if len(renamed) else "")
        raise StoreError(f"no run {run_id!r} in {runs_dir}{hint}")
    reader = RunReader(paths.db)
    if verify:
        try:
            reader.verify()
        except StoreError:
            reader.close()
            raise
    return reader


class RunReader:
    """Read-only access to one run; every query is parameterised, a cursor per call."""

    def __init__(self, path: str | Path) -> None:
        """Open read-only and check the file against its manifest (StoreError "this run is
        damaged: ..." when it fails). The run's id is the file's stem, whatever it was
        written as (`stored_run_id`)."""
        self.path = Path(path)
        self.run_id = self.path.stem
        try:
            self.con = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():  # another program holds it open for writing
                raise StoreError(f"cannot open {self.path.name}: {one_line(str(exc))}") from exc
            raise _damaged(self.path, f"not a readable run store ({one_line(str(exc))})") from exc
        try:
            problems = integrity_problems(self.con)
            if not problems:
                self.stored_run_id = str(self.con.execute("SELECT run_id FROM run")
                                         .fetchone()[0])
        except duckdb.Error as exc:
            problems = [one_line(str(exc))]
        if problems:
            self.con.close()
            raise _damaged(self.path, "; ".join(problems))

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

    def verify(self) -> None:
        """Read every value of every table (DuckDB checks each block's checksum as it reads):
        finds the corruption that the cheap check at open cannot see."""
        for table in self.tables():
            if table not in (*KNOWN_TABLES, MANIFEST):
                continue
            cursor = self.con.cursor()
            try:
                cursor.execute(f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {table}").fetchall()
            except duckdb.Error as exc:
                raise _damaged(self.path, f"table {table}: {one_line(str(exc))}") from exc
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
        info["stored_run_id"], info["run_id"] = info["run_id"], self.run_id
        info["config"] = json.loads(info["config"])
        info["versions"] = json.loads(info["versions"])
        return info

    def summary(self) -> dict[str, float]:
        frame = self.query("SELECT key, value FROM summary")
        return dict(zip(frame["key"], frame["value"]))

    def stages(self) -> pd.DataFrame:
        return self.query("SELECT stage, seconds, detail FROM stages")

    def notes(self) -> pd.DataFrame:
        """stage, message: what the run said about its data (empty for runs before 0.3)."""
        if not self.has_table("notes"):
            return pd.DataFrame(columns=["stage", "message"])
        return self.query("SELECT stage, message FROM notes")

    def has_column(self, table: str, column: str) -> bool:
        return not self.query("SELECT 1 FROM information_schema.columns WHERE table_name = ? "
                              "AND column_name = ?", [table, column]).empty

    def methods(self) -> pd.DataFrame:
        return self.query("SELECT * FROM methods ORDER BY method")

    def metrics(self, split: str = "test", segment: str | None = None) -> pd.DataFrame:
        """Long: method, segment, metric, value (NaN where undefined), n, n_pos (NaN in runs
        before 0.3, which did not store it)."""
        n_pos = "n_pos" if self.has_column("metrics", "n_pos") else "NULL::BIGINT AS n_pos"
        sql = f"SELECT method, segment, metric, value, n, {n_pos} FROM metrics WHERE split = ?"
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
        # dropna=False: an AUC that is undefined everywhere (one class) stays a NaN column
        wide = long.pivot_table(index="method", columns="metric", values="value",
                                dropna=False)
        wide["n"] = long.groupby("method")["n"].max()
        wide["n_pos"] = long.groupby("method")["n_pos"].max()
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

    def predictions_of(self, method: str) -> pd.DataFrame:
        """Every sample one method scored: sample_id, method, prob (valid and test)."""
        return self.query("SELECT sample_id, method, prob FROM predictions WHERE method = ? "
                          "ORDER BY sample_id", [method])

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

    @property
    def weights_dir(self) -> Path:
        """`<file stem>/`; for a run file renamed on disk, the folder still named after the id
        it was written under."""
        own = self.path.parent / self.run_id
        written = self.stored_run_id
        if own.is_dir() or written == self.run_id or not RUN_ID_PATTERN.match(written):
            return own
        other = self.path.parent / written
        return other if other.is_dir() else own

    def load_tensors(self, stem: str) -> tuple[dict[str, Any], dict[str, str]]:
        """A safetensors file of this run by stem (no pickle): tensors and metadata."""
        path = self.weights_dir / f"{check_run_id(stem)}.safetensors"
        if not path.is_file():
            raise StoreError(f"{self.path.name}: no stored tensors {stem!r} ({path})")
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        return load_file(path), metadata


def as_float_summary(values: dict[str, Any]) -> pd.DataFrame:
    rows = [(k, float(v)) for k, v in values.items() if isinstance(v, (int, float, np.number))]
    return pd.DataFrame(rows, columns=["key", "value"])
