"""Start the demo run from the app: the engine runs in its own process (the app never
trains); the page follows its log and shows progress."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import streamlit as st

PROC_KEY = "home_demo_process"
METHOD_LINE = re.compile(r"\[method (\d+)/(\d+)\] (\S+)")


def demo_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "engine", "run", "--dataset", "ml-100k", "--profile", "demo",
            "--out", str(out)]


def progress_of(log: str) -> tuple[float, str]:
    """(fraction done, what is happening) from the engine's log lines."""
    if "\nrun " in log or log.startswith("run "):
        return 1.0, "stored"
    matches = METHOD_LINE.findall(log)
    if matches:
        done, total, name = matches[-1]
        # load + task count as one step, each method as one, the store as the last
        return (int(done)) / (int(total) + 2), f"training {name} ({done}/{total})"
    if "[task]" in log:
        return 0.5 / 3, "task built"
    return 0.02, "loading data"


def demo_run_panel(out: Path) -> None:
    running: tuple[subprocess.Popen, Path] | None = st.session_state.get(PROC_KEY)
    if running is None:
        if st.button("Start the demo run (ML-100k)", type="primary", key="home_start_demo"):
            out.mkdir(parents=True, exist_ok=True)
            log_path = out / ".demo-run.log"
            handle = log_path.open("w")
            proc = subprocess.Popen(demo_command(out), stdout=handle, stderr=subprocess.STDOUT,
                                    cwd=Path(__file__).resolve().parent.parent)
            st.session_state[PROC_KEY] = (proc, log_path)
            st.rerun()
        return
    proc, log_path = running
    bar = st.progress(0.0, text="starting")
    tail = st.empty()
    while True:
        log = log_path.read_text(errors="replace")
        lines = [ln for ln in log.replace("\r", "\n").splitlines() if "batch/s" not in ln]
        fraction, what = progress_of(log)
        bar.progress(min(fraction, 1.0), text=what)
        tail.code("\n".join(lines[-12:]) or "...")
        if proc.poll() is not None:
            break
        time.sleep(1.0)
    del st.session_state[PROC_KEY]
    if proc.returncode == 0:
        st.success("The demo run is stored. Reloading...")
        st.cache_data.clear()
        time.sleep(1.0)
        st.rerun()
    else:
        st.error(f"The demo run failed (exit {proc.returncode}); its log is above.")
