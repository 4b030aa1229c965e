"""Run-time estimates: from the newest stored run of the same dataset and profile, else the
profile's typical total; the pipeline logs them."""

from __future__ import annotations

import pytest

from engine.eta import Estimate, estimate, planned_stages
from engine.store import open_run


def test_planned_stages():
    assert planned_stages(["dcnv2", "corella"], maps=True) == [
        "load", "task", "method:dcnv2", "method:corella", "maps", "metrics", "store"]
    assert "maps" not in planned_stages(["dcnv2"], maps=False)


def test_estimate_from_a_stored_run(smoke_store):
    guess = estimate(smoke_store, "ml-100k", "smoke", typical_total=90.0)
    with open_run(smoke_store, "smoke-run") as reader:
        stages = reader.stages()
    top = stages[~stages["stage"].str.contains("/")]
    planned = top["stage"].tolist()
    assert guess.source == "stage times of run smoke-run"
    assert guess.total(planned) == pytest.approx(top["seconds"].sum())
    done = planned[:3]
    assert guess.left(planned, done, elapsed=1.0) == pytest.approx(
        top.loc[~top["stage"].isin(done), "seconds"].sum())
    # a stage the stored run did not have: fall back to the typical total
    assert guess.total([*planned, "method:new"]) == 90.0


def test_estimate_without_a_run(tmp_path):
    guess = estimate(tmp_path, "ml-100k", "demo", typical_total=900.0)
    assert guess.total(["load"]) == 900.0 and guess.left(["load"], [], 100.0) == 800.0
    assert guess.left(["load"], [], 950.0) is None  # slower than typical: no number
    assert Estimate({}, None, "unknown").left(["load"], [], 5.0) is None


def test_the_typical_time_follows_the_cpu(monkeypatch):
    """With no stored run the ETA starts from the profile's typical time for this kind of
    CPU: the demo ran in 13 min 20 s where the LLM scores in native bf16, ~1 h without."""
    from engine import profiles

    demo = profiles.PROFILES["demo"]
    monkeypatch.setattr(profiles, "cpu_has_bf16", lambda: True)
    assert demo.typical() == demo.typical_seconds_bf16 == 800.0
    monkeypatch.setattr(profiles, "cpu_has_bf16", lambda: False)
    assert demo.typical() == demo.typical_seconds == 3600.0
    assert profiles.PROFILES["full"].typical() is None  # not measured
