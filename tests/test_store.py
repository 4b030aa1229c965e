"""The run store: atomic commit, abort, read-only reader, safe ids, weights round trip; the
write protocol (claims, verification, sweeping) and damaged or renamed files."""

from __future__ import annotations

import json
import os
import shutil
import socket

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from engine.errors import StoreError
from engine.store import SCHEMA, RunReader, RunWriter, check_run_id, claim_run, list_runs, open_run


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
    writer = RunWriter(tmp_path, "other")
    with pytest.raises(StoreError, match="unknown table"):
        writer.write_frame("secrets", pd.DataFrame({"a": [1]}))
    writer.abort()


def test_store_file_is_plain_duckdb(tmp_path):
    path = write_small_run(tmp_path)
    con = duckdb.connect(str(path), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables")
              .fetchall()}
    con.close()
    assert {"run", "samples", "predictions", "metrics", "methods", "training_log",
            "stages", "summary"} <= tables


# The write protocol (issue 10): claims, per-writer temporaries, verification before
# publishing, sweeping what killed writers left, damaged and renamed files.

def names(directory):
    return sorted(p.name for p in directory.iterdir())


def test_a_claimed_id_cannot_be_written_twice(tmp_path):
    with claim_run(tmp_path, "x"):
        with pytest.raises(StoreError, match=rf"^run id x is being written by pid "
                                             rf"{os.getpid()} \(started "):
            claim_run(tmp_path, "x")
        with pytest.raises(StoreError, match="being written"):
            RunWriter(tmp_path, "x")
    write_small_run(tmp_path, "x")  # released: the id is free again
    assert names(tmp_path) == ["x", "x.duckdb"]


def test_temporaries_are_named_per_writer(tmp_path):
    a, b = RunWriter(tmp_path, "a"), RunWriter(tmp_path, "b")
    assert a.paths.token != b.paths.token
    for writer in (a, b):
        assert writer.paths.token.startswith(f"{os.getpid()}-")
        assert writer.paths.tmp_db.is_file() and writer.paths.tmp_weights.is_dir()
        assert writer.paths.token in writer.paths.tmp_db.name
    a.abort()
    b.abort()
    assert names(tmp_path) == []


def test_claim_checks_what_the_run_will_need(tmp_path, monkeypatch):
    write_small_run(tmp_path, "taken")
    with pytest.raises(StoreError, match="invalid run id"):
        claim_run(tmp_path, "../x")
    with pytest.raises(StoreError, match="run taken already exists"):
        claim_run(tmp_path, "taken")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(StoreError, match="is a file, not a run store directory"):
        claim_run(a_file, "x")
    with pytest.raises(StoreError, match="cannot create the run store directory"):
        claim_run(a_file / "below", "x")
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # root ignores chmod
    with pytest.raises(StoreError, match="cannot write to the run store directory"):
        claim_run(tmp_path / "read-only", "x")
    assert names(tmp_path) == ["a-file", "read-only", "taken", "taken.duckdb"]


def fill(writer, predictions=(0.2, 0.9)):
    """write_small_run's content, finished but not committed."""
    writer.write_run(dataset="toy", profile="smoke", source="memory", seed=0, config={},
                     versions={})
    writer.write_frame("samples", pd.DataFrame({"sample_id": [1, 2], "split": "test",
                                                "label": [0.0, 1.0]}))
    name = writer.save_weights("m", {"w": torch.ones(2)})
    writer.append("methods", pd.DataFrame([{"method": "m", "kind": "crm", "weights_file": name}]))
    writer.append("predictions", pd.DataFrame({"sample_id": [1, 2], "method": "m",
                                               "prob": list(predictions)}))
    writer.finish(1.0)
    return writer


def test_an_unfinished_run_is_never_published(tmp_path):
    writer = RunWriter(tmp_path, "half")
    writer.write_run(dataset="toy", profile="smoke", source="memory", seed=0, config={},
                     versions={})
    with pytest.raises(StoreError, match="half not published: the run was never finished"):
        writer.commit()
    assert names(tmp_path) == []


def test_a_lost_row_or_a_bad_weight_file_blocks_publishing(tmp_path):
    writer = fill(RunWriter(tmp_path, "lost"))
    writer.rows["predictions"] += 1  # as if a write had silently gone missing
    with pytest.raises(StoreError, match="table predictions has 2 rows, 3 were written"):
        writer.commit()
    writer = fill(RunWriter(tmp_path, "ghost"))
    writer.append("methods", pd.DataFrame([{"method": "n", "weights_file": "n.safetensors"}]))
    with pytest.raises(StoreError, match="weight file 'n.safetensors' does not open"):
        writer.commit()
    writer = fill(RunWriter(tmp_path, "torn"))
    (writer.paths.tmp_weights / "m.safetensors").write_bytes(b"\x10\x00\x00")  # cut short
    with pytest.raises(StoreError, match="weight file 'm.safetensors' does not open"):
        writer.commit()
    assert names(tmp_path) == []


def fake_dead_writer(directory, run_id, *, between_renames=False):
    """What a SIGKILLed writer leaves: its claim file (nobody holds its lock any more), its
    temporaries, and after the first rename its published weights folder."""
    token = "4242-deadbeef"
    (directory / f".{run_id}.claim").write_text(json.dumps(
        {"pid": 4242, "host": socket.gethostname(), "token": token, "started": "earlier"}))
    (directory / f".{run_id}.{token}.duckdb.tmp").write_bytes(b"half a database")
    (directory / f".{run_id}.{token}.duckdb.tmp.wal").write_bytes(b"log")
    weights = directory / (run_id if between_renames else f".{run_id}.{token}.weights.tmp")
    weights.mkdir()
    (weights / "m.safetensors").write_bytes(b"x")


def test_stale_debris_is_swept_and_a_live_writer_is_left_alone(tmp_path):
    write_small_run(tmp_path, "good")
    fake_dead_writer(tmp_path, "killed-in-store")
    fake_dead_writer(tmp_path, "killed-between-renames", between_renames=True)
    (tmp_path / ".old.duckdb.tmp").write_bytes(b"x")  # names from before per-writer tokens
    (tmp_path / ".old.tmp").mkdir()
    live = RunWriter(tmp_path, "live")
    assert list_runs(tmp_path)["run_id"].tolist() == ["good"]  # sweeps
    left = set(names(tmp_path)) - {"good", "good.duckdb"}
    assert left and all(name.startswith(".live.") for name in left)
    assert ".live.claim" in left and live.paths.tmp_db.name in left
    live.abort()
    assert names(tmp_path) == ["good", "good.duckdb"]
    with open_run(tmp_path, "good", verify=True) as reader:
        assert reader.predictions()["m"].tolist() == [0.2, 0.9]


def test_the_next_run_sweeps_and_can_take_a_dead_writers_id(tmp_path):
    fake_dead_writer(tmp_path, "a", between_renames=True)
    fake_dead_writer(tmp_path, "b")
    claim_run(tmp_path, "c").release()  # every run's start sweeps the folder
    assert names(tmp_path) == []
    fake_dead_writer(tmp_path, "a", between_renames=True)
    write_small_run(tmp_path, "a")  # the dead writer's claim, temporaries and folder go
    assert names(tmp_path) == ["a", "a.duckdb"]
    with open_run(tmp_path, "a") as reader:
        assert torch.equal(reader.load_weights("m")["w"], torch.arange(6.0).reshape(2, 3))


def test_a_renamed_run_file_is_found_by_its_file_name(tmp_path):
    write_small_run(tmp_path, "orig")
    (tmp_path / "orig.duckdb").rename(tmp_path / "renamed.duckdb")
    runs = list_runs(tmp_path)
    assert runs["run_id"].tolist() == ["renamed"] and runs["error"].tolist() == [""]
    assert runs["note"].tolist() == ["renamed on disk; written as run orig"]
    assert (tmp_path / "orig").is_dir()  # its weights folder is no debris
    with open_run(tmp_path, "renamed") as reader:
        info = reader.run_info()
        assert info["run_id"] == "renamed" and info["stored_run_id"] == "orig"
        assert torch.equal(reader.load_weights("m")["w"], torch.arange(6.0).reshape(2, 3))
    with pytest.raises(StoreError, match=r"no run 'orig' in .* \(file renamed.duckdb was "
                                         r"written as run orig\)"):
        open_run(tmp_path, "orig")
    with pytest.raises(StoreError, match="exists without its run file"):
        claim_run(tmp_path, "orig")  # never over a renamed run's weights


def test_damaged_files_are_listed_as_damaged(tmp_path):
    good = write_small_run(tmp_path, "good")
    for name, sql in [("dropped", "DROP TABLE samples"),
                      ("short", "DELETE FROM predictions WHERE sample_id = 1"),
                      ("unfinished", "UPDATE run SET total_seconds = NULL")]:
        shutil.copy(good, tmp_path / f"{name}.duckdb")
        with duckdb.connect(str(tmp_path / f"{name}.duckdb")) as con:
            con.execute(sql)
    errors = list_runs(tmp_path).set_index("run_id")["error"]
    assert errors["good"] == ""
    assert errors["dropped"] == "this run is damaged: dropped.duckdb: table samples is missing"
    assert errors["short"] == ("this run is damaged: short.duckdb: table predictions has 1 "
                               "rows, 2 were written")
    assert errors["unfinished"] == ("this run is damaged: unfinished.duckdb: the run was never "
                                    "finished (no total time)")
    with pytest.raises(StoreError, match="^this run is damaged: dropped.duckdb"):
        open_run(tmp_path, "dropped")


def test_listing_rereads_a_file_only_when_it_changed(tmp_path, monkeypatch):
    good = write_small_run(tmp_path, "good")
    assert list_runs(tmp_path)["error"].tolist() == [""]
    opened = []
    real = RunReader.__init__
    monkeypatch.setattr(RunReader, "__init__",
                        lambda self, path, *a, **k: opened.append(path) or real(self, path,
                                                                                  *a, **k))
    assert list_runs(tmp_path)["error"].tolist() == [""] and opened == []  # unchanged
    with duckdb.connect(str(good)) as con:  # damaged in place: same name, new contents
        con.execute("DROP TABLE samples")
    assert list_runs(tmp_path)["error"].tolist() == [
        "this run is damaged: good.duckdb: table samples is missing"]
    assert len(opened) == 1


def test_a_half_written_run_of_the_old_writer_is_damaged(tmp_path):
    """Before the manifest: every table there but empty and no total time (issue 10's run)."""
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    for table, columns in SCHEMA.items():
        con.execute(f"CREATE TABLE {table} ({columns})")
    for table in ("users", "items", "samples", "interactions", "prompts"):
        con.execute(f"CREATE TABLE {table} (a INTEGER)")
    con.execute("INSERT INTO run (run_id) VALUES ('old')")
    con.close()
    assert list_runs(tmp_path)["error"].tolist() == [
        "this run is damaged: old.duckdb: the run was never finished (no total time)"]


def test_overwritten_bytes_are_found_by_verify(tmp_path):
    with RunWriter(tmp_path, "big") as writer:
        writer.write_run(dataset="toy", profile="smoke", source="memory", seed=0, config={},
                         versions={})
        n = 300_000
        writer.append("predictions", pd.DataFrame({
            "sample_id": np.arange(n), "method": "m", "prob": np.random.default_rng(0).random(n)}))
        writer.finish(1.0)
    path = tmp_path / "big.duckdb"
    with path.open("r+b") as handle:  # the middle of the file: predictions' data blocks
        handle.seek(path.stat().st_size // 2)
        handle.write(b"\xff" * 8192)
    with pytest.raises(StoreError, match=r"^this run is damaged: big.duckdb: .*[Cc]orrupt"):
        open_run(tmp_path, "big", verify=True).close()


def test_parquet_parts_of_every_rank_merge_into_what_one_writer_writes(tmp_path):
    from engine.store import write_part

    predictions = pd.DataFrame({"sample_id": np.arange(7, dtype=np.int64), "method": "m",
                                "prob": np.linspace(0.1, 0.7, 7)})
    routing = pd.DataFrame({"method": "m", "sample_id": np.arange(5, dtype=np.int64),
                            "split": ["valid", "test", "test", "valid", "test"],
                            "entropy": np.linspace(0, 1, 5).astype(np.float32),
                            "ids": [np.array([1, 2]), np.array([3]), np.array([4, 5]),
                                    np.array([6]), np.array([7, 8])]})
    outs = {}
    for name, world in (("one", 1), ("three", 3)):
        out = tmp_path / name
        with RunWriter(out, "r") as writer:
            writer.write_run(dataset="toy", profile="smoke", source="memory", seed=0,
                             config={}, versions={})
            for key, (table, frame) in enumerate((("predictions", predictions),
                                                  ("routing", routing))):
                if world == 1:
                    writer.put(table, frame)
                    continue
                for rank in range(world):  # each rank writes its every-third row
                    write_part(out, "r", f"{key:04d}-{table}", frame, rank, world)
                assert (out / ".r.parts.tmp" / f"{key:04d}-{table}" / "rank-2.parquet").exists()
                writer.merge_parts(table, f"{key:04d}-{table}", world)
            writer.finish(1.0)
        assert not (out / ".r.parts.tmp").exists()  # merged parts go with the publish
        with open_run(out, "r", verify=True) as reader:
            outs[name] = {t: (reader.query(f"SELECT * FROM {t}"),
                              reader.query(f"DESCRIBE {t}")[["column_name", "column_type"]])
                          for t in ("predictions", "routing")}
    for table in ("predictions", "routing"):
        one, three = outs["one"][table], outs["three"][table]
        pd.testing.assert_frame_equal(three[1], one[1])  # same columns and types
        assert len(three[0]) == len(one[0]) and list(three[0]["sample_id"]) == list(
            one[0]["sample_id"])  # the whole frame's order, not rank by rank
        pd.testing.assert_frame_equal(three[0].drop(columns="ids", errors="ignore"),
                                      one[0].drop(columns="ids", errors="ignore"))
    assert [list(x) for x in outs["three"]["routing"][0]["ids"]] == [[1, 2], [3], [4, 5], [6],
                                                                      [7, 8]]


def test_a_missing_part_names_the_shared_folder_and_publishes_nothing(tmp_path):
    from engine.store import write_part

    frame = pd.DataFrame({"sample_id": np.arange(4, dtype=np.int64), "method": "m",
                          "prob": [0.1, 0.2, 0.3, 0.4]})
    write_part(tmp_path, "r", "0000-predictions", frame, 0, 2)  # rank 1's never arrived
    with pytest.raises(StoreError, match=r"rank-1.parquet of 0000-predictions are not in .*"
                                         r"every node shares"):
        with RunWriter(tmp_path, "r") as writer:
            writer.merge_parts("predictions", "0000-predictions", 2)
    assert list(list_runs(tmp_path)["run_id"]) == []
    assert not (tmp_path / ".r.parts.tmp").exists()  # the writer's abort took the parts
    with pytest.raises(StoreError, match="bad part"):
        write_part(tmp_path, "r", "../x", frame, 0, 2)


def test_a_dead_groups_parts_are_swept(tmp_path):
    from engine.store import sweep_stale, write_part

    write_part(tmp_path, "gone", "0000-predictions", pd.DataFrame({"sample_id": [1]}), 0, 1)
    assert sweep_stale(tmp_path) == [tmp_path / ".gone.parts.tmp"]
