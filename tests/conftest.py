from __future__ import annotations

from pathlib import Path

import pytest

from tests.synthetic import write_ml100k

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory) -> Path:
    return write_ml100k(tmp_path_factory.mktemp("ml100k"))


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory, ml100k_dir) -> Path:
    """A real smoke run (pipeline end to end) on the synthetic data; returns the runs dir."""
    from engine.pipeline import RunRequest, run

    out = tmp_path_factory.mktemp("runs")
    run(RunRequest(dataset="ml-100k", path=str(ml100k_dir), profile="smoke", out=str(out),
                   run_id="smoke-run", task_options={"max_users": None}), log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    from tests.llm_fixtures import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def pytest_terminal_summary(terminalreporter) -> None:
    """Say loudly when the real-browser tests did not run (no Chromium on this machine)."""
    skipped = terminalreporter.stats.get("skipped", [])
    browser = [r for r in skipped if "chromium" in str(getattr(r, "longrepr", "")).lower()]
    if browser:
        terminalreporter.write_sep("!", f"{len(browser)} BROWSER TESTS DID NOT RUN: no "
                                   "/usr/bin/chromium", red=True, bold=True)
        terminalreporter.write_line(
            "The app, its exports and its charts were not checked in a real browser. Install "
            "Chromium as CI does (Debian: apt-get install -y chromium) and run make test again.",
            red=True)
