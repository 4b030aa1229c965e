"""One demo run at a time per runs folder (issue 10): a second browser session follows the
first session's run instead of starting another; a lock whose owner died is free."""

from __future__ import annotations

import json
import sys
import time

from tests.app.pages import open_page
from ui.demo_run import LOCK_NAME, LOG_NAME, running_demo, start_demo

# Stands in for the engine: the log lines the panel reads, then a long "training".
FAKE_ENGINE = [sys.executable, "-c", "import time; print('[load] 0.1s'); print('[task] 0.2s');"
               " print('[method 1/3] dcnv2', flush=True); time.sleep(120)"]


def wait_for(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_second_session_follows_the_running_demo(monkeypatch, tmp_path):
    out = tmp_path / "runs"
    proc = start_demo(out, FAKE_ENGINE)  # the first session's button
    try:
        assert proc is not None
        wait_for(lambda: "[method 1/3]" in (out / LOG_NAME).read_text())
        owner = running_demo(out)
        assert owner["pid"] == proc.pid and owner["log"] == str(out / LOG_NAME)
        assert start_demo(out, FAKE_ENGINE) is None  # one run at a time

        at = open_page(monkeypatch, out, "app.py")  # a second session (or a reload)
        assert not [b for b in at.button if b.key == "home_start_demo"]
        assert f"pid {proc.pid}" in at.info[1].value and "another session" in at.info[1].value
        assert "[method 1/3] dcnv2" in at.code[0].value
    finally:
        proc.kill()
        proc.wait()
    assert running_demo(out) is None  # the lock went with its owner
    at = open_page(monkeypatch, out, "app.py")
    assert at.button(key="home_start_demo").label.startswith("Start the demo run")


def test_a_lock_left_by_a_dead_owner_is_free(monkeypatch, tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 999_999_999, "log": "x"}))
    assert running_demo(out) is None
    at = open_page(monkeypatch, out, "app.py")
    assert at.button(key="home_start_demo").label.startswith("Start the demo run")


def test_make_app_starts_the_chain_once_and_the_home_page_follows_it(monkeypatch, tmp_path,
                                                                      smoke_store):
    """`make app` (python -m ui.demo_run runs): starts the quick-then-demo chain in the
    background once; beside a stored run the home page shows the chain's progress."""
    import shutil

    import ui.demo_run as demo_run

    out = tmp_path / "runs"
    out.mkdir()
    shutil.copy(smoke_store / "smoke-run.duckdb", out / "smoke-run.duckdb")
    shutil.copytree(smoke_store / "smoke-run", out / "smoke-run")
    chain = [sys.executable, "-c", "import time; print('[phase 1/2] smoke run');"
             " print('run smoke-run -> x'); print('[phase 2/2] demo run'); print('[load] 1s');"
             " print('[task] 1s'); print('[method 2/5] deepfm', flush=True); time.sleep(120)"]
    monkeypatch.setattr(demo_run, "demo_command", lambda _: chain)
    said = demo_run.start_if_missing(out)
    owner = running_demo(out)
    try:
        assert said.startswith("making a quick run, then the demo run") and owner
        assert demo_run.start_if_missing(out).startswith("a demo run is being made already")
        wait_for(lambda: "[method 2/5]" in (out / LOG_NAME).read_text())
        at = open_page(monkeypatch, out, "app.py")
        assert any("switches to it when it lands" in i.value for i in at.info)
        assert at.session_state["duet_run_id"] == "smoke-run"  # the landed quick run
    finally:
        import os
        import signal

        os.kill(owner["pid"], signal.SIGKILL)
