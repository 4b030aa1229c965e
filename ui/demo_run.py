"""Start the demo run from the app: the engine runs in its own process (the app never
trains); the page follows its log and shows progress.

One demo run at a time per runs folder: `.demo-run.lock` is flock-ed by the session that
starts the run and handed to the engine process, which holds it until it exits (the kernel
drops it then, whatever happened to the app). The lock file names the owner's pid and log, so
another browser session, or the same one after a reload, follows that run's progress instead
of starting a second one. A lock whose owner is gone is simply free.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import streamlit as st

from engine.eta import estimate, planned_stages
from engine.formatting import duration
from ui.common import RUN_KEY, plain

PROC_KEY = "home_demo_process"
LANDED_KEY = "home_demo_landed"  # the last run of the demo chain this session switched to
LOCK_NAME = ".demo-run.lock"
LOG_NAME = ".demo-run.log"
METHOD_LINE = re.compile(r"\[method (\d+)/(\d+)\] (\S+)")
ETA_LINE = re.compile(r"\[eta\] about (.+?) left")
ROOT = Path(__file__).resolve().parent.parent


PHASE_LINE = re.compile(r"\[phase (\d)/2\] (\S+) run")
STORED_LINE = re.compile(r"^run (\S+) -> ", re.MULTILINE)
# the quick run's share of the chain's time (smoke ~3 min of ~1 h on 2 cores)
QUICK_SHARE = 0.05


def demo_command(out: Path) -> list[str]:
    """`engine demo`: a quick smoke run, then the demo run, each only when missing."""
    return [sys.executable, "-m", "engine", "demo", "--out", str(out)]


def stored_runs(log: str) -> list[str]:
    """The ids of the runs the chain has stored so far, in order."""
    return STORED_LINE.findall(log)


def progress_of(log: str) -> tuple[float, str]:
    """(fraction done, what is happening) from the engine's log lines, with the engine's
    latest time estimate ("about 9 min left") when it logged one. An `engine demo` log holds
    two runs (phase lines): the quick one counts for QUICK_SHARE of the bar."""
    phases = list(PHASE_LINE.finditer(log))
    if not phases:
        return _run_progress(log)
    last = phases[-1]
    fraction, what = _run_progress(log[last.end():])
    if last.group(1) == "1":
        if fraction >= 1.0:
            return QUICK_SHARE, f"quick {last.group(2)} run stored"
        return QUICK_SHARE * fraction, f"quick {last.group(2)} run: {what}"
    if fraction >= 1.0:
        return 1.0, "stored"
    return QUICK_SHARE + (1 - QUICK_SHARE) * fraction, f"{last.group(2)} run: {what}"


def _run_progress(log: str) -> tuple[float, str]:
    if "\nrun " in log or log.startswith("run ") or "exists; nothing to do" in log:
        return 1.0, "stored"
    left = ETA_LINE.findall(log)
    eta = f" · about {left[-1]} left" if left else ""
    matches = METHOD_LINE.findall(log)
    if matches:
        done, total, name = matches[-1]
        # load + task count as one step, each method as one, the store as the last
        return (int(done)) / (int(total) + 2), f"training {name} ({done}/{total}){eta}"
    if "[task]" in log:
        return 0.5 / 3, f"task built{eta}"
    return 0.02, "loading data"


def expected_duration(out: Path) -> str:
    """How long the demo run takes on this machine, and from what that is known."""
    from engine.profiles import PROFILES  # imports the methods (torch): only when no run exists

    demo = PROFILES["demo"]
    guess = estimate(out, "ml-100k", demo.name, demo.typical())
    total = guess.total(planned_stages([m.name for m in demo.methods], maps=True))
    return f"about {duration(total)} ({guess.source})" if total else "a while"


def _lock(path: Path) -> int | None:
    """The lock's descriptor, locked by us; None while a demo run holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def running_demo(out: Path) -> dict[str, Any] | None:
    """The demo run in progress in `out` ({pid, log, started}; {} while it starts), or None."""
    path = out / LOCK_NAME
    if not path.exists():
        return None
    fd = _lock(path)
    if fd is not None:  # free: no demo run (what a dead owner wrote there is stale)
        os.close(fd)
        return None
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        owner = {}
    return owner if isinstance(owner, dict) else {}


def start_demo(out: Path, command: list[str]) -> subprocess.Popen | None:
    """Start the demo run, or return None when one is running in `out` already."""
    out.mkdir(parents=True, exist_ok=True)
    fd = _lock(out / LOCK_NAME)
    if fd is None:
        return None
    try:
        log = out / LOG_NAME
        with log.open("w") as handle:  # only the lock holder writes the log
            # the engine inherits the locked descriptor: the lock lives as long as the run
            proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                    pass_fds=(fd,))
        owner = {"pid": proc.pid, "log": str(log),
                 "started": datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
    finally:
        os.close(fd)  # ours only; the engine's copy keeps the lock
    return proc


def _show_progress(log_path: Path, bar, tail) -> None:
    try:
        log = log_path.read_text(errors="replace")
    except OSError:
        log = ""
    lines = [ln for ln in log.replace("\r", "\n").splitlines() if "batch/s" not in ln]
    fraction, what = progress_of(log)
    bar.progress(min(fraction, 1.0), text=plain(what))
    tail.code("\n".join(lines[-12:]) or "...")


def _newly_stored(out: Path) -> str | None:
    """The latest run the demo chain stored, the first time this session sees it."""
    try:
        stored = stored_runs((out / LOG_NAME).read_text(errors="replace"))
    except OSError:
        return None
    if stored and stored[-1] != st.session_state.get(LANDED_KEY):
        st.session_state[LANDED_KEY] = stored[-1]
        return stored[-1]
    return None


def _switch_to(run_id: str | None) -> None:
    """Show a run that just landed (or, with None, whatever the folder holds now)."""
    st.cache_data.clear()
    if run_id is not None:
        st.session_state[RUN_KEY] = run_id
        st.session_state["sidebar_run"] = run_id
    st.rerun(scope="app")


@st.fragment(run_every=2.0)
def demo_progress_banner(out: Path) -> None:
    """While the demo chain (`make app`, or the button) runs beside stored runs: its
    progress; the app switches to each run as it lands."""
    owner = running_demo(out)
    landed = _newly_stored(out)
    if landed is not None or owner is None:  # a run landed, or the chain ended
        _switch_to(landed)
    st.info("The demo run is being made in its own process; the app switches to it when it "
            "lands. Until then the quick run shows every page's content.",
            icon=":material/hourglass_top:")
    _show_progress(out / LOG_NAME, st.progress(0.0, text="starting"), st.expander(
        "Its log").empty())


@st.fragment(run_every=1.0)
def _follow_other(out: Path) -> None:
    """Another session's demo run: its progress, refreshed every second until it ends or
    stores a run (the quick one first)."""
    owner = running_demo(out)
    landed = _newly_stored(out)
    if owner is None or landed is not None:  # show what it stored (or the empty store)
        _switch_to(landed)
    st.info(f"A demo run started from another session is in progress (pid "
            f"{plain(owner.get('pid', '?'))}, started {plain(owner.get('started', 'just now'))})"
            "; following its log.")
    _show_progress(out / LOG_NAME, st.progress(0.0, text="starting"), st.empty())


def demo_run_panel(out: Path) -> None:
    running: tuple[subprocess.Popen, Path] | None = st.session_state.get(PROC_KEY)
    if running is None:
        if running_demo(out) is not None:
            _follow_other(out)
            return
        st.caption(f"The demo run trains every method of the demo profile on ML-100k in its "
                   f"own process: {plain(expected_duration(out))}. Its progress shows here.")
        if st.button("Start the demo run (ML-100k)", type="primary", key="home_start_demo"):
            proc = start_demo(out, demo_command(out))
            if proc is not None:  # else another session was faster: follow its run
                st.session_state[PROC_KEY] = (proc, out / LOG_NAME)
            st.rerun()
        return
    proc, log_path = running
    bar = st.progress(0.0, text="starting")
    tail = st.empty()
    while True:
        _show_progress(log_path, bar, tail)
        if proc.poll() is not None:
            break
        landed = _newly_stored(out)
        if landed is not None:  # the quick run: show it while the chain goes on
            _switch_to(landed)
        time.sleep(1.0)
    del st.session_state[PROC_KEY]
    if proc.returncode == 0:
        st.success("The demo run is stored. Reloading...")
        st.cache_data.clear()
        time.sleep(1.0)
        st.rerun()
    else:
        st.error(f"The demo run failed (exit {proc.returncode}); its log is above.")


def start_if_missing(out: Path) -> str:
    """For `make app`: start the demo chain in the background unless the folder has a demo
    run or one is being made; say which."""
    from engine.store import list_runs

    if running_demo(out) is not None:
        return "a demo run is being made already; the app shows its progress"
    if out.is_dir():
        runs = list_runs(out)
        if ((runs["profile"] == "demo") & (runs["dataset"] == "ml-100k")).any():
            return "the demo run exists"
    proc = start_demo(out, demo_command(out))
    if proc is None:
        return "a demo run is being made already; the app shows its progress"
    return (f"making a quick run, then the demo run, in the background (pid {proc.pid}, log "
            f"{out / LOG_NAME}); the app shows their progress")


if __name__ == "__main__":
    print(start_if_missing(Path(sys.argv[1] if len(sys.argv) > 1 else "runs")))
