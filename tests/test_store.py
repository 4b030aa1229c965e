"""The run store: atomic commit, abort, read-only reader, safe ids, weights round trip."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest
import torch

from engine.errors import StoreError
from engine.store import RunReader, RunWriter, check_run_id, list_runs, open_run


def write_small_run(out, run_id="r1", fail=False):
    with RunWriter(out, run_id) as writer:
        writer.write_run(dataset="toy", profile="smoke", source="memory", seed=0,
                         config={"a": 1}, versions={"duet": "test"})
        writer.append("summary", pd.DataFrame({"key": ["samples"], "value": [3.0]}))
        writer.write_frame("samples", pd.DataFrame({
            "sample_id": [0, 1, 2], "split": ["train", "test", "test"],
            "user": ["u", "u", "v"], "label": [1.0, 0.0, 1.0]}))
        name = writer.save_weights("m", {"w": torch.arange(6.0).reshape(2, 3)})
        writer.append("methods", pd.DataFrame([{
            "method": "m", "kind": "crm", "config": "{}", "train_seconds": 1.5,
            "infer_ms_per_1k": 2.0, "llm_calls_per_1k": 0.0, "cost": "{}",
            "weights_file": name}]))
        writer.append("predictions", pd.DataFrame(
            {"sample_id": [1, 2], "method": "m", "prob": [0.2, 0.9]}))
        writer.append("metrics", pd.DataFrame([
            {"method": "m", "split": "test", "segment": "all", "metric": "auc",
             "value": 1.0, "n": 2}]))
        if fail:
            raise RuntimeError("crash mid-run")
        writer.finish(12.5)
    return out / f"{run_id}.duckdb"


def test_commit_then_read_back(tmp_path):
    path = write_small_run(tmp_path)
    assert path.is_file() and (tmp_path / "r1" / "m.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1", "r1.duckdb"]
    with open_run(tmp_path, "r1") as reader:
        info = reader.run_info()
        assert info["dataset"] == "toy" and info["config"] == {"a": 1}
        assert info["total_seconds"] == 12.5
        assert reader.summary() == {"samples": 3.0}
        wide = reader.predictions("test")
        assert wide["sample_id"].tolist() == [1, 2] and wide["m"].tolist() == [0.2, 0.9]
        assert wide["label"].tolist() == [0.0, 1.0]
        table = reader.metrics_table()
        assert table.loc[0, "auc"] == 1.0 and table.loc[0, "train_seconds"] == 1.5
        weights = reader.load_weights("m")
        assert torch.equal(weights["w"], torch.arange(6.0).reshape(2, 3))


def test_crash_leaves_no_trace_and_earlier_runs_readable(tmp_path):
    write_small_run(tmp_path, "good")
    with pytest.raises(RuntimeError, match="crash"):
        write_small_run(tmp_path, "bad", fail=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good", "good.duckdb"]
    runs = list_runs(tmp_path)
    assert runs["run_id"].tolist() == ["good"] and runs["error"].tolist() == [""]


def test_half_written_file_is_not_listed(tmp_path):
    write_small_run(tmp_path, "good")
    writer = RunWriter(tmp_path, "pending")  # not committed yet
    assert list_runs(tmp_path)["run_id"].tolist() == ["good"]
    writer.abort()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_corrupt_file_is_listed_with_its_error(tmp_path):
    write_small_run(tmp_path, "good")
    (tmp_path / "broken.duckdb").write_bytes(b"not a database")
    runs = list_runs(tmp_path).set_index("run_id")
    assert runs.loc["good", "error"] == ""
    assert "broken.duckdb" in runs.loc["broken", "error"]


def test_reader_is_read_only(tmp_path):
    path = write_small_run(tmp_path)
    reader = RunReader(path)
    with pytest.raises(StoreError):
        reader.query("DELETE FROM predictions")
    assert len(reader.predictions()) == 2
    reader.close()


def test_existing_run_is_not_overwritten(tmp_path):
    write_small_run(tmp_path)
    with pytest.raises(StoreError, match="already exists"):
        RunWriter(tmp_path, "r1")


@pytest.mark.parametrize("bad", ["../etc", "a b", "x;DROP", "", ".hidden", "a/b"])
def test_unsafe_run_ids_are_refused(bad, tmp_path):
    with pytest.raises(StoreError, match="invalid run id"):
        check_run_id(bad)
    with pytest.raises(StoreError):
        open_run(tmp_path, bad)


def test_queries_bind_parameters(tmp_path):
    path = write_small_run(tmp_path)
    with RunReader(path) as reader:
        # a value that would break a string-built query is just a value that matches nothing
        assert reader.metrics("test' OR '1'='1").empty
        assert reader.training_log("m'; DROP TABLE run; --").empty
        assert reader.run_info()["run_id"] == "r1"


def test_unknown_tables_are_refused(tmp_path):
    path = write_small_run(tmp_path)
    with RunReader(path) as reader, pytest.raises(StoreError, match="unknown table"):
        reader.frame("run; DROP TABLE run")
    with RunWriter(tmp_path, "other") as writer, pytest.raises(StoreError):
        writer.write_frame("secrets", pd.DataFrame({"a": [1]}))


def test_store_file_is_plain_duckdb(tmp_path):
    path = write_small_run(tmp_path)
    con = duckdb.connect(str(path), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables")
              .fetchall()}
    con.close()
    assert {"run", "samples", "predictions", "metrics", "methods", "training_log",
            "stages", "summary"} <= tables
