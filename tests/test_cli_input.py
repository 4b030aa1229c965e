"""Every input mistake on the command line: exit code 2, one line naming the option, the
expected value and the valid choices, no traceback, nothing left in --out. And what a run
prints about its data before training."""

from __future__ import annotations

import typing
from dataclasses import fields
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest

from engine.cli import main
from engine.data.sources import SOURCES, source
from engine.data.task import TaskConfig
from tests.synthetic import write_ml100k

# Options whose every string is a valid value: nothing to get wrong but the key.
FREE_TEXT = {("amazon", "category")}
BAD_TEXT = {"encoding": "klingon", "sep": "", "name": "../evil"}


def bad_value(tp, name: str) -> str:
    """A value of the wrong shape for an option of type `tp`."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is not None and type(None) in args:  # X | None
        return bad_value(next(a for a in args if a is not type(None)), name)
    if origin is Literal:
        return "sideways"
    if origin is tuple:
        return "1,x"
    return {bool: "maybe", int: "lots", float: "abc"}.get(tp, BAD_TEXT.get(name, "{not json"))


def option_cases():
    for name in SOURCES:
        hints = typing.get_type_hints(source(name).options)
        for f in fields(source(name).options):
            if (name, f.name) not in FREE_TEXT:
                yield name, f.name, bad_value(hints[f.name], f.name)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    table = root / "r.csv"
    table.write_text("user,item,rating,timestamp\nu1,i1,5,1\nu1,i2,1,2\n")
    amazon = root / "r.json"
    amazon.write_text('{"reviewerID": "U", "asin": "A", "overall": 5, "unixReviewTime": 1}\n')
    ml = write_ml100k(root / "ml100k")
    return {"ml-100k": ml, "ml-1m": root, "amazon": amazon, "table": table}


def run_cli(capsys, out: Path, *args: str) -> tuple[int, str, str]:
    code = main(["run", "--profile", "smoke", "--out", str(out), "--no-maps", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_failure(code: int, err: str, out: Path, *needles: str) -> None:
    assert code == 2
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


@pytest.mark.parametrize(("name", "key", "value"), list(option_cases()))
def test_every_option_of_every_source_rejects_a_bad_value(capsys, tmp_path, files, name, key,
                                                          value):
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, out, "--dataset", name, "--path", str(files[name]),
                           "--option", f"{key}={value}")
    assert_clean_failure(code, err, out, f"--option {key}")


@pytest.mark.parametrize("name", SOURCES)
def test_unknown_option_key_lists_the_valid_ones(capsys, tmp_path, files, name):
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, out, "--dataset", name, "--path", str(files[name]),
                           "--option", "clik_threshold=4")
    valid = ", ".join(f.name for f in fields(source(name).options))
    assert_clean_failure(code, err, out, "unknown key 'clik_threshold'",
                         "did you mean 'click_threshold'?", f"valid keys: {valid}")


@pytest.mark.parametrize(("pair", "needle"), [
    ("history_len=abc", "--task history_len: expected a whole number, got 'abc'"),
    ("max_users=lots", "--task max_users: expected a whole number, got 'lots'"),
    ("click_threshold=abc", "--task click_threshold: expected a finite number, got 'abc'"),
    ("history_len=1000000000", "--task history_len must be between 1 and 200"),
    ("max_users=1", "--task max_users must be >= 2"),
    ("split=0.5,0.5", "--task split: expected 3 comma-separated values"),
    ("split=0.5,0.4,0.4", "--task split must be three shares summing to 1"),
    ("prompt_template=Say {history} about {target} for {user}",
     "--task prompt_template may only use {history} and {target}"),
    ("long_tail_share=2", "--task long_tail_share must be between 0.01 and 0.99"),
    ("histroy_len=5", "did you mean 'history_len'?"),
    ("history_len", "--task expects key=value, got 'history_len'"),
])
def test_bad_task_values(capsys, tmp_path, files, pair, needle):
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, out, "--path", str(files["ml-100k"]), "--task", pair)
    assert_clean_failure(code, err, out, needle)


def test_task_options_are_typed_from_the_config():
    assert {f.name for f in fields(TaskConfig)} >= {"history_len", "max_users", "split"}


@pytest.mark.parametrize(("args", "needle"), [
    (["--dataset", "amazon"], "needs --path"),
    (["--dataset", "ml-100k", "--side", "x.csv"], "--side is for the amazon and table"),
    (["--dataset", "table", "--path", "/nonexistent/r.csv"], "interactions file not found"),
])
def test_missing_or_misplaced_paths(capsys, tmp_path, files, args, needle):
    out = tmp_path / "runs"
    if "--path" not in args and args[1] == "ml-100k":
        args = [*args, "--path", str(files["ml-100k"])]
    code, _, err = run_cli(capsys, out, *args)
    assert_clean_failure(code, err, out, needle)


def test_a_bad_data_line_fails_cleanly(capsys, tmp_path):
    rows = [f"u{i % 9},i{i % 13},{1 + i % 5},{i}" for i in range(300)]
    rows[2] = "u1,i2,99,2"  # a stray value among 1-5 stars
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating,timestamp\n" + "\n".join(rows) + "\n")
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, out, "--dataset", "table", "--path", str(path))
    assert_clean_failure(code, err, out, "line 4", "field 'rating'", "'99'",
                         "outside the rating scale 1 to 5")


def test_run_prints_its_data_before_training(capsys, tmp_path, files):
    out = tmp_path / "runs"
    code, stdout, _ = run_cli(capsys, out, "--path", str(files["ml-100k"]), "--methods",
                              "dcnv2", "--run-id", "printed")
    assert code == 0
    data = stdout.index("[data] 60 users · 80 items (100% with text)")
    splits = stdout.index("[splits] ")
    rule = stdout.index("[click rule] rating >= 4 (the ml-100k source's default); click rate "
                        "train ")
    assert data < splits < rule < stdout.index("[method 1/1] dcnv2")
    assert "[eta] this run should take about" in stdout and "left (" in stdout
    assert "test AUC per segment" in stdout


def _zip_two(path: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.csv", "user,item,rating,timestamp\n")
        zf.writestr("b.csv", "user,item,rating,timestamp\n")
    return path


REVIEW = '{"reviewerID": "U%d", "asin": "A%d", "overall": %d, "unixReviewTime": %d}'


def _reviews(path: Path, extra: str = "") -> Path:
    lines = [REVIEW % (u, k, 1 + (u + k) % 5, 1000 * u + k) for u in range(5) for k in range(5)]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.mark.parametrize("case", ["zip", "binary", "side_none", "nested", "header_data",
                                  "amazon_rating"])
def test_data_mistakes_exit_2_in_one_line(capsys, tmp_path, case):
    out = tmp_path / "runs"
    if case == "zip":
        args, needle = ["--dataset", "table", "--path", str(_zip_two(tmp_path / "r.zip"))], (
            "zip archive with 2 files")
    elif case == "binary":
        (tmp_path / "r.csv").write_bytes(b"\x00\x01binary\x00" * 50)
        args, needle = ["--dataset", "table", "--path", str(tmp_path / "r.csv")], "binary file"
    elif case == "side_none":
        meta = tmp_path / "m.json"
        meta.write_text('{"asin": "ZZZ", "title": "Other"}\n')
        args = ["--dataset", "amazon", "--path", str(_reviews(tmp_path / "r.json")),
                "--side", str(meta)]
        needle = "matches none of the 5 reviewed items"
    elif case == "nested":
        path = _reviews(tmp_path / "r.json", "[" * 100_000 + "]" * 100_000 + "\n")
        args, needle = ["--dataset", "amazon", "--path", str(path)], "line 26"
    elif case == "header_data":
        (tmp_path / "r.csv").write_text("1,10,5,100\n1,11,2,200\n2,10,4,300\n")
        args, needle = ["--dataset", "table", "--path", str(tmp_path / "r.csv")], "header=none"
    else:
        path = _reviews(tmp_path / "r.json", REVIEW % (9, 9, 99, 5) + "\n")
        args, needle = ["--dataset", "amazon", "--path", str(path)], "99 is outside the rating"
    code, _, err = run_cli(capsys, out, *args)
    assert_clean_failure(code, err, out, needle)


def test_options_command_lists_keys_types_ranges_and_defaults(capsys):
    assert main(["options"]) == 0
    out = capsys.readouterr().out
    for name in SOURCES:
        assert f"--dataset {name}: --option key=value" in out
    assert "history_len" in out and "whole number, between 1 and 200" in out
    assert "click_threshold" in out and "header" in out and "first | none" in out
