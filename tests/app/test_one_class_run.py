"""A run whose test split holds one label class (common with Amazon's 5-star skew on small
5-cores): every page opens without an exception and says why AUC is missing; so does
`engine show`."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main
from engine.store import open_run
from tests.app.pages import PAGES, open_page
from tests.synthetic import make_test_split_one_class, write_ml100k


@pytest.fixture(scope="module")
def one_class_store(tmp_path_factory) -> Path:
    from engine.pipeline import RunRequest, run

    data = make_test_split_one_class(write_ml100k(tmp_path_factory.mktemp("one-class")))
    out = tmp_path_factory.mktemp("runs")
    run(RunRequest(dataset="ml-100k", path=str(data), profile="smoke", out=str(out),
                   run_id="one-class", task_options={"max_users": None}, llm_map=False,
                   methods=("dcnv2", "corella")),
        log=lambda _: None)
    return out


def test_the_store_keeps_auc_missing_and_says_why(one_class_store):
    with open_run(one_class_store, "one-class") as reader:
        test = reader.metrics("test", "all").set_index(["method", "metric"])
        notes = reader.notes()["message"].tolist()
    assert test.loc[("dcnv2", "auc"), "value"] != test.loc[("dcnv2", "auc"), "value"]  # NaN
    assert test.loc[("dcnv2", "logloss"), "value"] > 0  # the rest is still computed
    assert test.loc[("dcnv2", "auc"), "n_pos"] == test.loc[("dcnv2", "auc"), "n"]
    assert any(n.startswith("the test split has one label class") for n in notes)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens(monkeypatch, one_class_store, page):
    at = open_page(monkeypatch, one_class_store, page)
    if page == "app.py":
        table = at.dataframe[0].value.set_index("Method")
        assert set(table["AUC"]) == {"n/a (one class in test)"}
        assert table.loc["dcnv2", "LogLoss"] != "n/a"
        assert any("one label class" in w.value for w in at.warning)


def test_router_lab_names_the_reason(monkeypatch, one_class_store):
    at = open_page(monkeypatch, one_class_store, "pages/2_Router_lab.py")
    values = {m.label: m.value for m in at.metric}
    assert values["Routed AUC"] == "n/a (one class in test)"


def test_engine_show_prints_n_a(capsys, one_class_store):
    assert main(["show", "one-class", "--out", str(one_class_store)]) == 0
    out = capsys.readouterr().out
    assert "n/a (one class in test)" in out and "AUC" in out


def test_runs_from_before_class_counts_still_show(monkeypatch, capsys, tmp_path, smoke_store):
    """Runs made before 0.3 have no metrics.n_pos: tables and `show` still read them."""
    import shutil

    import duckdb

    old = tmp_path / "runs"
    old.mkdir()
    shutil.copy(smoke_store / "smoke-run.duckdb", old / "smoke-run.duckdb")
    shutil.copytree(smoke_store / "smoke-run", old / "smoke-run")
    with duckdb.connect(str(old / "smoke-run.duckdb")) as con:
        con.execute("ALTER TABLE metrics DROP COLUMN n_pos")
    assert main(["show", "smoke-run", "--out", str(old)]) == 0
    assert "dcnv2" in capsys.readouterr().out
    at = open_page(monkeypatch, old, "app.py")
    table = at.dataframe[0].value.set_index("Method")
    # a number (with the low-n mark: the home table is on the 32 analysed samples now)
    assert table.loc["dcnv2", "AUC"].split()[0].replace(".", "").isdigit()
