"""One run over several processes (engine.distributed): torchrun's environment is read and
checked; two gloo ranks score the LLM's prompts and generate text in shares and train a CRM
under DDP with the same results as one process; `torchrun -m engine run` on the smoke
profile gives the same metrics as one process and one run file; a rank that dies fails the
run and leaves the earlier runs as they were."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from engine import distributed
from engine.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["User watched Heat (1995). Will the user like Alien (1979)? Answer:",
           "User watched Toy Story (1995), Babe (1995), Fargo (1996). Will the user like "
           "Sabrina (1995)? Answer:", "Short prompt. Answer:", "Is water wet? Answer:",
           "User watched Casino (1995). Will the user like Heat (1995)? Answer:"]


def test_environment_is_read_and_checked():
    assert distributed.from_env({}) == distributed.Ranks()
    ranks = distributed.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                                  "LOCAL_WORLD_SIZE": "2"})
    assert (ranks.rank, ranks.world, ranks.local_rank, ranks.local_world) == (3, 4, 1, 2)
    assert ranks.active and not ranks.main
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        distributed.from_env({"WORLD_SIZE": "two"})
    with pytest.raises(ConfigError, match="RANK=2 and WORLD_SIZE=2"):
        distributed.from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_one_process_is_the_identity():
    positions = np.arange(7)
    assert distributed.current() == distributed.Ranks()
    assert np.array_equal(distributed.share(positions), positions)
    values = np.linspace(0, 1, 7)
    assert np.array_equal(distributed.assemble(7, positions, values), values)
    assert distributed.broadcast("x") == "x"
    assert distributed.all_mean(0.25, 10) == 0.25


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def work(llama_dir: str, data_dir: str, cache_dir: str) -> dict[str, np.ndarray]:
    """What both settings compute: LLM scores and states (whole and from frozen states),
    greedy generations (through a fresh cache, then again from it) and a DCNv2 trained on
    the synthetic task, scored on its test split."""
    from engine.data.movielens import load_ml100k
    from engine.data.task import TaskConfig, build_task
    from engine.models import build_crm, crm_config
    from engine.models.adapter_training import AdapterTraining, train_adapter
    from engine.models.generation import Decoding, DiskCache, generate_with_stats
    from engine.models.trainer import TaskTensors, TrainConfig, fit, predict
    from tests.llm_fixtures import tiny_llm

    llm = tiny_llm(Path(llama_dir))
    p, (state,) = llm.score_with_states(PROMPTS, layers=[1])
    q, _ = llm.score_above(PROMPTS, 1, {})
    # one prompt per batch: no padding, so a prompt's text cannot depend on its batch
    cache = DiskCache("generations", Path(cache_dir))
    generated: list[str] = []  # the prompts this process generated for
    plain = llm.generate
    llm.generate = lambda prompts, **kw: (generated.extend(prompts), plain(prompts, **kw))[1]
    made = generate_with_stats(llm, PROMPTS, Decoding(max_new_tokens=6), cache, batch_size=1)
    again = generate_with_stats(llm, PROMPTS, Decoding(max_new_tokens=6), cache, batch_size=1)
    # adapter training under DDP: each rank half of the batch, LoRA without dropout
    torch.manual_seed(0)
    tuned = tiny_llm(Path(llama_dir))
    tuned.add_lora(dropout=0.0, top_layers=1)
    losses = train_adapter(tuned, tuned.tokenize(PROMPTS), np.array([1, 0, 1, 0, 1]),
                           AdapterTraining(lr=5e-2, batch_size=5, epochs=3, top_layers=1))
    tuned_p = tuned.score(PROMPTS)
    # frozen states everywhere: rank 0 holds the first two, rank 1 the third, none the rest
    rank = distributed.current().rank
    lower = dict(zip(PROMPTS[2:3] if rank else PROMPTS[:2],
                     llm.lower_states(llm.tokenize(PROMPTS[2:3] if rank else PROMPTS[:2]), 1)))
    computed = llm.fill_lower_everywhere(PROMPTS, 1, lower)
    task = build_task(load_ml100k(data_dir), TaskConfig(history_len=6))
    torch.manual_seed(0)
    model = build_crm("dcnv2", task.schema, crm_config("dcnv2", {
        "embed_dim": 4, "deep_layers": (16, 8), "dropout": 0.0}))
    result = fit(model, task, TrainConfig(batch_size=128, max_epochs=3, patience=3),
                 tensors=TaskTensors(task))
    return {"p": p, "state": state, "q": q, "crm": predict(model, TaskTensors(task),
                                                              task.index("test")),
            "epoch": np.array([result.best_epoch]), "texts": np.array(made.texts),
            "tokens": np.array(made.tokens), "fresh": ~np.array(made.cached),
            "again": np.array(again.texts), "again_cached": np.array(again.cached),
            "generated": np.array([len(generated)]), "losses": np.array(losses),
            "tuned": tuned_p, "computed": np.array([computed]),
            "lower": np.concatenate([lower[p].numpy() for p in PROMPTS])}


def rank_main(rank: int, port: int, folder: str, llama_dir: str, data_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ranks = distributed.start()
    try:
        assert ranks.world == 2 and torch.get_num_threads() >= 1
        out = work(llama_dir, data_dir, str(Path(folder) / "cache-two"))
        np.savez(Path(folder) / f"rank{rank}.npz", **out)
    finally:
        distributed.stop()


def test_two_ranks_score_generate_and_train_as_one_process(tmp_path, tiny_llama_dir, ml100k_dir):
    # spawn re-imports the parent's __main__ in each child: the test runner's, not a page
    # script an AppTest left behind (tests/app/conftest.py puts it back)
    one = work(str(tiny_llama_dir), str(ml100k_dir), str(tmp_path / "cache-one"))
    torch.multiprocessing.start_processes(
        rank_main, args=(free_port(), str(tmp_path), str(tiny_llama_dir), str(ml100k_dir)),
        nprocs=2, start_method="spawn")
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in (0, 1)]
    for two in ranks:  # every rank holds every prompt's score, its own share or not
        np.testing.assert_allclose(two["p"], one["p"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(two["q"], one["q"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(two["state"], one["state"], rtol=0, atol=1e-5)
        # generation: each rank made its share, every rank holds every text, in place
        assert two["texts"].tolist() == one["texts"].tolist()
        assert two["tokens"].tolist() == one["tokens"].tolist() and two["fresh"].all()
        assert two["again"].tolist() == one["texts"].tolist() and two["again_cached"].all()
    assert [r["generated"][0] for r in ranks] == [3, 2]  # shares of 5; the rerun: none
    assert one["generated"][0] == len(PROMPTS)
    cached = list((tmp_path / "cache-two" / "generations").rglob("*.json"))
    assert len(cached) == len(PROMPTS)
    # LoRA under DDP, each rank on its share (3/2) of the batch, the loss weighted by it:
    # the same adapter on both ranks, and the one process's up to float rounding
    for two in ranks:
        np.testing.assert_allclose(two["losses"], one["losses"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(two["tuned"], one["tuned"], rtol=0, atol=1e-5)
        # every rank holds every prompt's frozen states; only the two nobody held were run
        np.testing.assert_allclose(two["lower"], one["lower"], rtol=0, atol=1e-5)
        assert two["computed"][0] == 2
    assert one["computed"][0] == 3
    assert abs(one["tuned"] - one["p"]).max() > 1e-3  # training moved the scores
    # DDP: each rank trained on half of every batch, gradients averaged: the same model on
    # both ranks, and the one process's up to float rounding
    np.testing.assert_array_equal(ranks[0]["crm"], ranks[1]["crm"])
    assert ranks[0]["epoch"][0] == one["epoch"][0]
    np.testing.assert_allclose(ranks[0]["crm"], one["crm"], rtol=0, atol=2e-3)


def torchrun(args: list[str], env: dict[str, str] | None = None, timeout: int = 900
             ) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), "-m", "engine", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_torchrun_smoke_run_equals_one_process(tmp_path, smoke_store, ml100k_dir):
    from engine.compare import run_metrics
    from engine.store import list_runs, open_run

    out = tmp_path / "runs"
    done = torchrun(["run", "--profile", "smoke", "--path", str(ml100k_dir), "--out", str(out),
                     "--run-id", "two", "--no-maps", "--task", "max_users=None"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run two ->") == 1  # rank 0 alone reports
    assert list(list_runs(out)["run_id"]) == ["two"]
    assert not list(out.glob(".*")), list(out.glob(".*"))  # the ranks' Parquet parts: merged
    with open_run(out, "two", verify=True) as two, open_run(smoke_store, "smoke-run") as one:
        metrics = {name: run_metrics(reader, "test")[0] for name, reader in
                   (("two", two), ("one", one))}
        assert set(two.methods()["method"]) == set(one.methods()["method"])
        # every per-sample table, merged from both ranks' parts: the same columns, types and
        # rows (by sample and method) as the one process wrote
        assert set(two.tables()) == set(one.tables()) - {"embeddings", "map_agreement"}  # no maps
        per_sample = [t for t in one.tables()
                      if one.has_column(t, "sample_id") and one.has_column(t, "method")]
        assert {"predictions", "routing", "gates", "cot", "deltas"} <= set(per_sample)
        for table in per_sample:
            kinds = [r.query(f"DESCRIBE {table}")[["column_name", "column_type"]]
                     for r in (two, one)]
            pd.testing.assert_frame_equal(*kinds)
            keys = [r.query(f"SELECT sample_id, method FROM {table} ORDER BY ALL")
                    for r in (two, one)]
            pd.testing.assert_frame_equal(*keys)
    frames = [m[(m["segment"] == "all") & (m["metric"] == "auc")].set_index("method")["value"]
              for m in metrics.values()]
    both = frames[0].to_frame("two").join(frames[1].to_frame("one"))
    assert len(both) >= 30  # every method and variant of the profile
    gap = (both["two"] - both["one"]).abs()
    # MF trains under DDP too, without dropout: it and everything built on it alone (CoRA's
    # generator, itself trained under DDP on shares of each batch, and its ablations) and the
    # LLM's LoRA trained alone under DDP match the one process (float rounding aside).
    # corella_llm is not here: it continues from CoReLLa's joint stage, whose CRM dropout
    # falls on other samples when each rank holds half of every batch
    exact = ["cora_mf", "cora", "cora_zero_pair", "cora_shuffled_user", "cora_base",
             "corella_llm_independent"]
    assert gap[exact].max() < 1e-6, gap[exact]
    # dropout draws other masks per rank, so the CRMs (and the hybrids routing on them)
    # differ like another seed: on these 32 samples seeds 0-2 gave DCNv2 0.855-0.945 and
    # CoReLLa 0.755-0.932 (measured 2026-11-26)
    assert gap.max() < 0.15, gap.sort_values().tail()
    assert gap.median() < 0.02


def test_a_rank_that_dies_fails_the_run_and_keeps_earlier_runs(tmp_path, ml100k_dir):
    from engine.store import list_runs, open_run

    out = tmp_path / "runs"
    args = ["run", "--profile", "smoke", "--path", str(ml100k_dir), "--out", str(out),
            "--methods", "dcnv2", "--no-maps", "--task", "max_users=None"]
    assert torchrun([*args, "--run-id", "first"]).returncode == 0
    died = torchrun([*args, "--run-id", "second"], env={"DUET_FAULT": "method@1"})
    assert died.returncode != 0
    assert list(list_runs(out)["run_id"]) == ["first"]
    with open_run(out, "first", verify=True) as reader:
        assert "dcnv2" in set(reader.methods()["method"])
    # a rank that dies after writing its Parquet parts: nothing published, the parts go
    died = torchrun([*args, "--run-id", "second"], env={"DUET_FAULT": "parts@1"})
    assert died.returncode != 0
    assert list(list_runs(out)["run_id"]) == ["first"]  # listing sweeps the dead group's debris
    assert not list(out.glob(".second*")), list(out.glob(".second*"))
    # the id was not left taken: the run can be made again
    assert torchrun([*args, "--run-id", "second"]).returncode == 0
    assert sorted(list_runs(out)["run_id"]) == ["first", "second"]
