"""Fault injection: kill a smoke run (SIGKILL) at each stage and check the runs folder after.

    .venv/bin/python bench/fault_injection.py [--work DIR] [--json FILE]

Writes small synthetic ML-100k data (tests/synthetic.py), makes one complete run (`earlier`),
then per probe starts `python -m engine run --profile smoke --no-maps` and kills it:
- load: DUET_FAULT=load (the run id is claimed, no data read yet);
- CRM: 0.5 s after the log's first `[method 1/N]` line (DCNv2 training);
- LLM: when CoReLLa's LLM training shows in the log;
- store: DUET_FAULT=store (the store write half done);
- renames: DUET_FAULT=renames (weights folder renamed into place, database not yet).
After each kill it checks: the process died by SIGKILL (no cleanup ran); no partial run is
visible (list_runs, without sweeping, lists only `earlier`); `earlier` reads in full and
its stored test AUCs equal the AUCs recomputed from its stored predictions; what debris the
kill left; that the next run's start (claim_run of another id) sweeps all of it; and that
the killed id can be claimed again. Prints a markdown table and how many probes passed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.errors import StoreError  # noqa: E402
from engine.metrics import auc  # noqa: E402
from engine.store import claim_run, list_runs, open_run  # noqa: E402
from tests.synthetic import write_ml100k  # noqa: E402

EARLIER = "earlier"
# stage, how it is reached: ("env", DUET_FAULT point) or ("log", regex, seconds to wait after
# the log matches, what the match means)
PROBES = [("load", ("env", "load")),
          ("CRM training", ("log", r"\[method 1/\d+\] ", 0.5, "DCNv2 started")),
          ("LLM stage", ("log", r"CoReLLa (independent|stage)", 0.0, "CoReLLa's LLM training")),
          ("store write", ("env", "store")),
          ("between the renames", ("env", "renames"))]


@dataclass
class Probe:
    number: int
    stage: str
    killed: str  # when, as the probe saw it
    exit: int | None
    visible: str  # the runs list_runs shows right after the kill
    earlier_ok: bool
    debris: str  # what the kill left in the folder
    after_next_start: str  # what is left once the next run has started
    id_reusable: bool
    seconds: float

    @property
    def passed(self) -> bool:
        return (self.exit == -signal.SIGKILL and self.visible == EARLIER and self.earlier_ok
                and self.after_next_start == "nothing" and self.id_reusable)


def engine_command(data: Path, out: Path, run_id: str) -> list[str]:
    return [sys.executable, "-m", "engine", "run", "--path", str(data), "--profile", "smoke",
            "--no-maps", "--out", str(out), "--run-id", run_id]


def run_and_kill(command: list[str], how: tuple, log_path: Path) -> tuple[int | None, str]:
    """Start the engine; kill it as `how` says. Returns (exit code, when it was killed)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if how[0] == "env":
        env["DUET_FAULT"] = how[1]
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    if how[0] == "env":
        return proc.wait(timeout=900), f"DUET_FAULT={how[1]}"
    pattern, delay, what = re.compile(how[1]), how[2], how[3]
    start = time.monotonic()
    while proc.poll() is None:
        if pattern.search(log_path.read_text(errors="replace")):
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    code = proc.wait(timeout=60)
    when = f"{what} (+{delay:g} s; {time.monotonic() - start:.1f} s in)"
    return code, when if code == -signal.SIGKILL else "finished before the trigger"


def debris_of(out: Path, keep: set[str]) -> str:
    kinds = []
    for path in sorted(out.iterdir()):
        if path.name in keep or path.name.startswith(".demo-run"):
            continue
        name = path.name
        if name.endswith(".claim"):
            kinds.append("claim")
        elif name.endswith(".duckdb.tmp"):
            kinds.append("temp db")
        elif name.endswith(".duckdb.tmp.wal"):
            kinds.append("temp WAL")
        elif name.endswith(".weights.tmp"):
            kinds.append("temp weights")
        elif path.is_dir() and not (out / f"{name}.duckdb").exists():
            kinds.append("weights folder without its db")
        else:
            kinds.append(name)
    return ", ".join(kinds) or "nothing"


def earlier_reads(out: Path) -> bool:
    """`earlier` reads in full and every stored test AUC equals the recomputed one."""
    try:
        with open_run(out, EARLIER, verify=True) as reader:
            wide = reader.predictions("test")
            stored = reader.metrics("test", "all")
    except StoreError:
        return False
    stored = stored[stored["metric"] == "auc"].set_index("method")["value"]
    for method, value in stored.items():
        rows = wide[method].notna()
        again = auc(wide.loc[rows, "label"].to_numpy(), wide.loc[rows, method].to_numpy())
        if not np.isclose(again, value, rtol=0, atol=1e-12, equal_nan=True):
            return False
    return len(stored) > 0


def probe(number: int, stage: str, how: tuple, data: Path, out: Path, logs: Path) -> Probe:
    t0 = time.perf_counter()
    run_id = f"killed-{number}"
    keep = {p.name for p in out.iterdir()}
    code, when = run_and_kill(engine_command(data, out, run_id), how, logs / f"{run_id}.log")
    debris = debris_of(out, keep)
    visible = ",".join(list_runs(out, sweep=False)["run_id"])
    ok = earlier_reads(out)
    claim_run(out, f"next-{number}").release()  # the next run's start sweeps
    after = debris_of(out, keep)
    try:
        claim_run(out, run_id).release()
        reusable = True
    except StoreError:
        reusable = False
    return Probe(number, stage, when, code, visible, ok, debris, after, reusable,
                 time.perf_counter() - t0)


def table(probes: list[Probe]) -> str:
    lines = ["| # | stage | killed | exit | runs listed after the kill | earlier run reads, "
             "AUCs match | debris the kill left | left after the next run starts | id "
             "reusable | s | result |", "|" + "---|" * 11]
    for p in probes:
        lines.append(f"| {p.number} | {p.stage} | {p.killed} | {p.exit} | {p.visible} | "
                     f"{'yes' if p.earlier_ok else 'NO'} | {p.debris} | {p.after_next_start} | "
                     f"{'yes' if p.id_reusable else 'NO'} | {p.seconds:.0f} | "
                     f"{'pass' if p.passed else 'FAIL'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the probes as JSON here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="duet-faults-"))
    data, out, logs = work / "ml100k", work / "runs", work / "logs"
    for folder in (out, logs):
        folder.mkdir(parents=True, exist_ok=True)
    write_ml100k(data)
    t0 = time.perf_counter()
    subprocess.run(engine_command(data, out, EARLIER), cwd=ROOT, check=True,
                   stdout=(logs / "earlier.log").open("w"), stderr=subprocess.STDOUT)
    print(f"complete run `{EARLIER}`: {time.perf_counter() - t0:.0f} s; work folder {work}\n")
    probes = []
    for number, (stage, how) in enumerate(PROBES, start=1):
        probes.append(probe(number, stage, how, data, out, logs))
        print(f"probe {number} ({stage}): {'pass' if probes[-1].passed else 'FAIL'}",
              file=sys.stderr)
    print(table(probes))
    passed = sum(p.passed for p in probes)
    print(f"\n{passed} of {len(probes)} probes passed; {time.perf_counter() - t0:.0f} s in all "
          "(the complete run included).")
    if args.json:
        args.json.write_text(json.dumps([asdict(p) for p in probes], indent=1))
    return 0 if passed == len(probes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
