"""Every benchmark in one command: prints each one's markdown tables and writes one JSON file.

    .venv/bin/pip install --no-deps -r bench/requirements.txt      # once (the peers)
    .venv/bin/python bench/run_all.py [--only crm,peers,llm,router,growth,maps,pages]
                                      [--quick] [--seeds 3] [--out bench/results/all.json]

Runs the scripts one after another (never side by side: they time the same 2 cores), each
as its own process, and collects: the command, its wall seconds, exit code, its printed
markdown tables parsed into rows, and the script's own JSON where it writes one (peers,
growth). `pages` makes the demo run into bench/results/runs first when none is there.
`--quick` is a smoke pass: 1 seed, ML-100k only, fewer prompts and rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
ALL = ("crm", "peers", "llm", "router", "growth", "maps", "pages")


def commands(quick: bool, seeds: int) -> dict[str, list[list[str]]]:
    datasets = "ml-100k" if quick else "ml-100k,ml-1m"
    runs = str(RESULTS / "runs")
    return {
        "crm": [[PY, "bench/crm_quality.py"]],
        "peers": [[PY, "bench/peers.py", "--datasets", datasets, "--seeds",
                   str(1 if quick else seeds), "--probe-rounds", "2" if quick else "5",
                   "--out", str(RESULTS / "peers.json")]],
        "llm": [[PY, "bench/llm_speed.py", "--prompts", "16" if quick else "64"]],
        "router": [[PY, "bench/router_lab.py"]],
        "growth": [[PY, "bench/growth.py", "--no-maps", "--json", str(RESULTS / "growth.json")]
                   + (["--users", "300,600"] if quick else [])],
        "maps": [[PY, "bench/maps_speed.py", "--no-llm"]],
        "pages": [[PY, "-m", "engine", "run", "--profile", "smoke" if quick else "demo",
                   "--out", runs, "--if-missing"],
                  [PY, "bench/page_render.py", "--runs", runs],
                  [PY, "bench/interaction_latency.py", "--runs", runs, "--synthetic",
                   "100000" if quick else "1000000", "--repeats", "5" if quick else "9",
                   "--json", str(RESULTS / "interaction_latency.json")]],
    }


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table in `text` as a list of row dicts (header -> cell)."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if len(block) >= 2 and all(re.fullmatch(r":?-+:?", c) for c in block[1]):
            tables.append([dict(zip(block[0], row)) for row in block[2:]])
        block = []
    return tables


def run_one(name: str, argv: list[str]) -> dict:
    print(f"\n## {name}: {' '.join(Path(a).name if a == PY else a for a in argv)}", flush=True)
    t0 = time.perf_counter()
    # stdout (the tables) is echoed as it comes and kept; stderr (progress) goes straight out
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    returncode = proc.wait()
    seconds = time.perf_counter() - t0
    if returncode:
        print(f"FAILED with exit code {returncode} after {seconds:.0f}s", flush=True)
    stdout = "".join(lines)
    return {"command": argv[1:], "seconds": seconds, "returncode": returncode,
            "tables": markdown_tables(stdout), "stdout": stdout}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(ALL))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "all.json"))
    args = parser.parse_args()
    chosen = args.only.split(",")
    unknown = sorted(set(chosen) - set(ALL))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; valid: {', '.join(ALL)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    plan = commands(args.quick, args.seeds)
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version()},
              "quick": args.quick, "benchmarks": {}}
    failed = 0
    for name in chosen:
        steps = [run_one(name, argv) for argv in plan[name]]
        own = {"peers": RESULTS / "peers.json", "growth": RESULTS / "growth.json"}.get(name)
        entry = {"steps": steps}
        if own is not None and own.exists() and not any(s["returncode"] for s in steps):
            entry["results"] = json.loads(own.read_text())
        report["benchmarks"][name] = entry
        failed += any(s["returncode"] for s in steps)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.out}; {failed} benchmark(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
