"""Faults in the store step (issue 10): a full disk, a writer killed mid-write or between its
two renames, two writers of one id at once, bad --run-id/--out. After each: no partial run is
visible, earlier runs still read, the debris goes at the next run's start, errors are one
line."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from engine import store
from engine.cli import main
from engine.errors import StoreError
from engine.metrics import auc
from engine.store import claim_run, list_runs, open_run
from tests.test_store import names, write_small_run

ROOT = Path(__file__).resolve().parents[1]

# A small writer as its own process: waits for `go`, writes one run under id `same`,
# holding the id for a while so that a second writer meets it.
WRITER = """
import sys, time
from pathlib import Path
import pandas as pd, torch
from engine.errors import StoreError
from engine.store import RunWriter

out, go, tag = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
(out.parent / f"ready-{tag}").touch()
while not go.exists():
    time.sleep(0.002)
t0 = time.perf_counter()
try:
    with RunWriter(out, "same") as w:
        w.write_run(dataset="toy", profile="smoke", source=tag, seed=0, config={}, versions={})
        w.write_frame("samples", pd.DataFrame({"sample_id": range(1000), "split": "test",
                                               "label": [float(i % 2) for i in range(1000)]}))
        w.append("predictions", pd.DataFrame({"sample_id": range(1000), "method": "m",
                                              "prob": [(i % 7) / 7 for i in range(1000)]}))
        name = w.save_weights("m", {"w": torch.ones(100, 10)})
        w.append("methods", pd.DataFrame([{"method": "m", "kind": "crm",
                                           "weights_file": name}]))
        time.sleep(float(sys.argv[4]))
        w.finish(1.0)
except StoreError as exc:
    print(f"error: {exc}", file=sys.stderr)
    print(f"{time.perf_counter() - t0:.3f}")
    sys.exit(2)
print(f"{time.perf_counter() - t0:.3f}")
"""


def start_writer(tmp_path, out, tag, hold_s=1.5, env=None):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(tmp_path / "go"), tag,
                             str(hold_s)], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(tmp_path, tags, timeout=60):
    deadline = time.monotonic() + timeout
    while not all((tmp_path / f"ready-{t}").exists() for t in tags):
        assert time.monotonic() < deadline, "writers did not start"
        time.sleep(0.01)


def test_two_writers_of_one_id_one_publishes_the_other_fails_fast(tmp_path):
    out = tmp_path / "runs"
    procs = {tag: start_writer(tmp_path, out, tag) for tag in ("a", "b")}
    wait_ready(tmp_path, procs)
    (tmp_path / "go").touch()
    done = {tag: (p.wait(60), *p.communicate()) for tag, p in procs.items()}
    winners = [t for t, (code, _, _) in done.items() if code == 0]
    losers = [t for t, (code, _, _) in done.items() if code != 0]
    assert len(winners) == 1 and len(losers) == 1, done
    code, seconds, err = done[losers[0]]
    assert code == 2
    assert re.fullmatch(rf"error: run id same is being written by pid {procs[winners[0]].pid} "
                        r"\(started [^)]+\)\n", err), err
    assert float(seconds) < 1.0  # at its start, not after the winner's 1.5 s of writing
    assert names(out) == ["same", "same.duckdb"]
    with open_run(out, "same", verify=True) as reader:
        assert reader.run_info()["source"] == winners[0]
        assert len(reader.predictions()) == 1000 and len(reader.methods()) == 1
        assert reader.load_weights("m")["w"].shape == (100, 10)


def test_disk_full_while_saving_weights_leaves_nothing(tmp_path, monkeypatch):
    write_small_run(tmp_path, "earlier")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "save_file", full)
    with pytest.raises(StoreError) as caught:
        write_small_run(tmp_path, "full")
    assert str(caught.value) == (f"no space left in {tmp_path} (save weights m.safetensors: "
                                 "[Errno 28] No space left on device)")
    assert names(tmp_path) == ["earlier", "earlier.duckdb"]
    with open_run(tmp_path, "earlier", verify=True) as reader:
        assert reader.run_info()["total_seconds"] == 12.5


class FullDisk:
    """A DuckDB connection whose checkpoint meets a full disk (as DuckDB words it)."""

    def __init__(self, con):
        self.con = con

    def execute(self, sql, *args):
        if sql == "CHECKPOINT":
            raise duckdb.IOException('Could not write all bytes to file ".x.duckdb.tmp": '
                                     "wanted=262144 wrote=0")
        return self.con.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.con, name)


def test_disk_full_inside_duckdb_leaves_nothing(tmp_path, monkeypatch):
    write_small_run(tmp_path, "earlier")
    connect = duckdb.connect
    monkeypatch.setattr(duckdb, "connect", lambda path, read_only=False: (
        connect(path, read_only=True) if read_only else FullDisk(connect(path))))
    with pytest.raises(StoreError, match=rf"^no space left in {re.escape(str(tmp_path))} "
                                         r"\(store run full: .*Could not write all bytes"):
        write_small_run(tmp_path, "full")
    assert names(tmp_path) == ["earlier", "earlier.duckdb"]


def test_cli_reports_a_full_disk_in_one_line(tmp_path, monkeypatch, ml100k_dir, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "save_file", full)
    out = tmp_path / "runs"
    code = main(["run", "--path", str(ml100k_dir), "--profile", "smoke", "--methods", "dcnv2",
                 "--no-maps", "--out", str(out), "--run-id", "full"])
    err = capsys.readouterr().err
    assert code == 2
    last = err.rsplit("\r", 1)[-1]  # after the progress bars (stderr too)
    assert last.startswith(f"error: no space left in {out} (save weights ") and last.count(
        "\n") == 1, err
    assert "Traceback" not in err and err.count("error:") == 1
    assert names(out) == []


def test_cli_checks_the_run_id_and_out_before_reading_data(tmp_path, monkeypatch, capsys,
                                                           ml100k_dir):
    import engine.pipeline

    monkeypatch.setattr(engine.pipeline, "load_dataset",
                        lambda *args, **kwargs: pytest.fail("data was read"))
    out = tmp_path / "runs"
    write_small_run(out, "taken")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = [(["--run-id", "../up"], "invalid run id '../up'"),
             (["--run-id", "taken"], f"run taken already exists at {out / 'taken.duckdb'}"),
             (["--out", str(a_file)], f"{a_file} is a file, not a run store directory"),
             (["--out", str(a_file / "below")], "cannot create the run store directory")]
    for extra, message in cases:
        code = main(["run", "--path", str(ml100k_dir), "--profile", "smoke", "--out", str(out),
                     *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and message in err, err
        assert err.count("\n") == 1
    with claim_run(out, "busy"):  # another writer holds this id
        t0 = time.perf_counter()
        code = main(["run", "--path", str(ml100k_dir), "--profile", "smoke", "--out", str(out),
                     "--run-id", "busy"])
        assert code == 2 and time.perf_counter() - t0 < 5
        assert capsys.readouterr().err.startswith(
            f"error: run id busy is being written by pid {os.getpid()} (started ")
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    assert main(["run", "--path", str(ml100k_dir), "--profile", "smoke", "--out",
                 str(tmp_path / "locked")]) == 2
    assert "cannot write to the run store directory" in capsys.readouterr().err
    assert names(out) == ["taken", "taken.duckdb"]


def test_a_kill_between_the_renames_is_invisible_and_swept(tmp_path):
    out = tmp_path / "runs"
    write_small_run(out, "earlier")
    proc = start_writer(tmp_path, out, "k", hold_s=0, env={"DUET_FAULT": "renames"})
    (tmp_path / "go").touch()
    assert proc.wait(60) == -9  # SIGKILL: no cleanup ran
    left = set(names(out)) - {"earlier", "earlier.duckdb"}
    assert {"same", ".same.claim"} <= left and any(n.endswith(".duckdb.tmp") for n in left)
    assert list_runs(out, sweep=False)["run_id"].tolist() == ["earlier"]
    check_earlier(out)
    write_small_run(out, "same")  # the id is free again: the dead writer's debris goes
    assert names(out) == ["earlier", "earlier.duckdb", "same", "same.duckdb"]


def check_earlier(out):
    """The earlier run reads in full and its metrics match its predictions."""
    with open_run(out, "earlier", verify=True) as reader:
        wide = reader.predictions("test")
        stored = reader.metrics("test", "all").set_index("metric")["value"]
    assert auc(wide["label"].to_numpy(), wide["m"].to_numpy()) == stored["auc"]


def test_a_run_killed_in_its_store_step_is_invisible_and_swept(tmp_path, ml100k_dir):
    out = tmp_path / "runs"
    write_small_run(out, "earlier")
    proc = subprocess.run([sys.executable, "-m", "engine", "run", "--path", str(ml100k_dir),
                           "--profile", "smoke", "--methods", "dcnv2", "--no-maps", "--out",
                           str(out), "--run-id", "killed"], cwd=ROOT, capture_output=True,
                          env={**os.environ, "DUET_FAULT": "store"}, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    left = set(names(out)) - {"earlier", "earlier.duckdb"}
    assert ".killed.claim" in left and any(n.endswith(".weights.tmp") for n in left)
    assert list_runs(out, sweep=False)["run_id"].tolist() == ["earlier"]
    check_earlier(out)
    claim_run(out, "next").release()  # the next run's start sweeps
    assert names(out) == ["earlier", "earlier.duckdb"]


def test_cli_show_says_a_run_is_damaged(tmp_path, capsys):
    write_small_run(tmp_path, "good")
    with duckdb.connect(str(tmp_path / "broken.duckdb")) as con:
        con.execute("CREATE TABLE x (a INTEGER)")
    assert main(["show", "broken", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: this run is damaged: broken.duckdb: table ")
    assert "table methods is missing" in err and err.count("\n") == 1
    assert main(["list", "--out", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "this run is damaged: broken.duckdb" in listing and "good" in listing
