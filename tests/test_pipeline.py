"""A real smoke run end to end (load -> task -> CRMs -> store), read back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.cli import main
from engine.metrics import auc
from engine.store import list_runs, open_run


@pytest.fixture(scope="module")
def reader(smoke_store):
    with open_run(smoke_store, "smoke-run") as r:
        yield r


def test_store_holds_every_table(reader):
    tables = set(reader.tables())
    assert {"run", "stages", "summary", "users", "items", "samples", "interactions",
            "prompts", "methods", "predictions", "metrics", "training_log", "routing",
            "embeddings", "map_agreement", "gates", "pairs", "cot", "neighbours",
            "deltas", "prompt_usage", "prompt_pool", "prompt_users", "notes"} <= tables
    info = reader.run_info()
    assert info["profile"] == "smoke" and info["dataset"] == "ml-100k"
    assert info["versions"]["torch"].startswith("2.13")
    stages = reader.stages()["stage"].tolist()
    assert [s for s in stages if "/" not in s] == [
        "load", "task", "method:dcnv2", "method:deepfm", "method:corella", "method:sllmr",
        "method:llmcf", "method:cora", "method:coco", "maps", "metrics", "store"]
    # CoReLLa's sub-stages sit under its stage: training stages, scoring per model and split
    subs = [s.split("/", 1)[1] for s in stages if s.startswith("method:corella/")]
    assert {"stage 1: CRM", "stage 2: joint CRM + LLM with alignment", "stage 3: LLM alone",
            "scoring: CRM"} <= set(subs)
    assert any(s.startswith("scoring: joint LLM on") and s.endswith(" test") for s in subs)


CORELLA = ["corella", "corella_budget20", "corella_crm", "corella_llm",
           "corella_llm_independent", "corella_no_align"]
SLLMR = ["sllmr", "sllmr_none", "sllmr_global", "sllmr_pointwise", "sllmr_kd", "sllmr_joint"]
LLMCF = ["llmcf", "llmcf_none", "llmcf_no_cot", "llmcf_mean_pool", "llmcf_random", "llmcf_kd"]
CORA = ["cora", "cora_base", "cora_zero_pair", "cora_shuffled_user", "cora_crm", "cora_mf"]
COCO = ["coco", "coco_shared_only", "coco_mean_pool", "coco_no_elimination", "coco_crm"]


def test_predictions_cover_valid_and_test_for_every_method(reader):
    samples = reader.samples()
    n_eval = int((samples["split"] != "train").sum())
    methods = reader.methods()["method"].tolist()
    assert methods == sorted(["dcnv2", "deepfm", *CORELLA, *SLLMR, *LLMCF, *CORA, *COCO])
    counts = reader.query("SELECT method, count(*) AS n FROM predictions GROUP BY method")
    counts = counts.set_index("method")["n"].to_dict()
    assert counts["dcnv2"] == counts["deepfm"] == n_eval
    # no LLM at inference: every sample
    assert {counts[m] for m in SLLMR + LLMCF + ["cora_mf"]} == {n_eval}
    # the LLM methods analyse the smoke profile's 16 valid + 32 test samples
    assert {counts[m] for m in CORELLA + CORA[:-1] + COCO} == {48}


def test_stored_metrics_match_stored_predictions(reader):
    wide = reader.predictions("test")
    stored = reader.metrics("test", "all").set_index(["method", "metric"])["value"]
    for method in ["dcnv2", "deepfm", *CORELLA, *SLLMR, *LLMCF, *CORA, *COCO]:
        scored = wide[wide[method].notna()]
        assert stored[(method, "auc")] == pytest.approx(auc(scored["label"], scored[method]))
    assert stored[("dcnv2", "auc")] > 0.6  # the synthetic data has a learnable signal


def test_routing_replays_the_stored_prediction(reader):
    routing = reader.frame("routing")
    assert set(routing["method"]) == {"corella", "corella_no_align"}
    main = routing[(routing["method"] == "corella") & (routing["split"] == "test")]
    assert len(main) == 32
    config = reader.methods().set_index("method").loc["corella", "config"]
    threshold = json.loads(config)["threshold"]  # chosen on valid, kept in the config
    mixed = np.where(main["entropy"] > threshold, main["p_llm"], main["p_crm"])
    stored = reader.predictions("test").set_index("sample_id")["corella"]
    np.testing.assert_allclose(stored.loc[main["sample_id"]].to_numpy(), mixed)
    assert main["answer"].notna().sum() == 2
    assert ((main["p_llm"] > 0) & (main["p_llm"] < 1)).all()


def test_training_log_and_weights(reader):
    log = reader.training_log("dcnv2")
    assert set(log["metric"]) >= {"train_loss", "valid_auc", "valid_logloss", "seconds"}
    assert log["epoch"].max() >= 1
    weights = reader.load_weights("dcnv2")
    assert any(k.startswith("embedding.tables.") for k in weights)


def test_prompts_are_stored_for_test_samples(reader):
    prompts = reader.frame("prompts")
    test_ids = reader.samples("test")["sample_id"]
    assert sorted(prompts["sample_id"]) == sorted(test_ids)
    assert prompts["prompt"].str.endswith("Answer:").all()


def test_summary_counts(reader):
    summary = reader.summary()
    samples = reader.samples()
    assert summary["samples"] == len(samples)
    assert summary["test_samples"] == int((samples["split"] == "test").sum())
    assert 0 < summary["click_rate"] < 1


def test_cli_run_list_show(tmp_path, ml100k_dir, capsys):
    out = tmp_path / "runs"
    code = main(["run", "--path", str(ml100k_dir), "--profile", "smoke", "--out", str(out),
                 "--run-id", "cli-run", "--seed", "1", "--task", "min_history=4",
                 "--methods", "dcnv2,deepfm", "--no-maps"])
    text = capsys.readouterr().out
    assert code == 0
    assert "test metrics" in text and "dcnv2" in text and "deepfm" in text
    runs = list_runs(out)
    assert runs["run_id"].tolist() == ["cli-run"]
    with open_run(out, "cli-run") as r:
        assert not r.has_table("embeddings")  # --no-maps
        config = r.run_info()["config"]
        assert config["profile"]["task"]["min_history"] == 4
        assert config["profile"]["train"]["seed"] == 1
    assert main(["list", "--out", str(out)]) == 0
    assert "cli-run" in capsys.readouterr().out
    assert main(["show", "cli-run", "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "AUC" in shown and "dcnv2" in shown
    with open_run(out, "cli-run") as r:
        n_test = int((r.samples()["split"] == "test").sum())
    assert f"on the {n_test:,} test samples every method scored" in shown
    # --if-missing sees the run of this dataset and profile and does nothing
    assert main(["run", "--path", str(ml100k_dir), "--profile", "smoke", "--out", str(out),
                 "--if-missing"]) == 0
    assert "exists; nothing to do" in capsys.readouterr().out
    assert len(list_runs(out)) == 1


def test_cli_reports_bad_input_without_a_trace(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["run", "--path", str(tmp_path / "missing"), "--profile", "smoke",
                 "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err
    assert not out.exists() or not any(out.iterdir())
    assert main(["run", "--profile", "smoke", "--task", "history_len"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["run", "--profile", "smoke", "--methods", "dcn3"]) == 2
    assert "valid: dcnv2, deepfm, corella" in capsys.readouterr().err


def test_same_seed_same_run(tmp_path, ml100k_dir):
    from engine.pipeline import RunRequest, run

    probs = []
    for i in range(2):
        outcome = run(RunRequest(path=str(ml100k_dir), profile="smoke", out=str(tmp_path),
                                 run_id=f"s{i}", seed=7, methods=("dcnv2",), maps=False),
                      log=lambda _: None)
        probs.append(outcome.results[0].probs["test"])
    np.testing.assert_allclose(probs[0], probs[1])


def test_cli_maps_without_the_llm_space(tmp_path, ml100k_dir):
    out = tmp_path / "runs"
    assert main(["run", "--path", str(ml100k_dir), "--profile", "smoke", "--out", str(out),
                 "--run-id", "no-llm-map", "--methods", "dcnv2", "--no-llm-map"]) == 0
    with open_run(out, "no-llm-map") as r:
        assert set(r.frame("embeddings")["space"]) == {"semantic", "behavioural"}
        assert r.run_info()["config"]["request"]["llm_map"] is False
