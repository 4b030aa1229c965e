"""The benchmark runner's plumbing: table parsing and the growth-law fit."""

from __future__ import annotations

import pytest

from bench.growth import fit_power
from bench.run_all import ALL, commands, markdown_tables


def test_markdown_tables_become_rows():
    text = ("intro line\n| model | AUC |\n|---|---:|\n| dcnv2 | 0.75 |\n| din | 0.76 |\n\n"
            "between\n| a |\n|:-:|\n| 1 |\nend\n| not | a table |\n")
    assert markdown_tables(text) == [[{"model": "dcnv2", "AUC": "0.75"},
                                      {"model": "din", "AUC": "0.76"}], [{"a": "1"}]]
    assert markdown_tables("| just | a row |\n") == []


def test_growth_fit_recovers_a_power_law():
    sizes = [1e4, 3e4, 1e5, 3e5]
    a, b = fit_power(sizes, [2e-4 * s ** 1.2 for s in sizes])
    assert b == pytest.approx(1.2, abs=1e-9) and a == pytest.approx(2e-4, rel=1e-6)


def test_every_benchmark_has_a_command_and_quick_is_smaller():
    full, quick = commands(quick=False, seeds=3), commands(quick=True, seeds=3)
    assert set(full) == set(quick) == set(ALL)
    peers = full["peers"][0]
    assert peers[peers.index("--seeds") + 1] == "3" and "ml-100k,ml-1m" in peers
    assert quick["peers"][0][quick["peers"][0].index("--seeds") + 1] == "1"
