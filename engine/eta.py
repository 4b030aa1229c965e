"""How long a run will take: each stage's seconds from the newest stored run of the same
dataset and profile on this machine, else the profile's typical total (measured here).

The pipeline logs "[eta] ..." after every stage; the app's demo panel says the expected time
before it starts a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.store import StoreError, list_runs, open_run


@dataclass(frozen=True)
class Estimate:
    stage_seconds: dict[str, float]  # top-level stage -> seconds, from an earlier run
    typical_total: float | None  # the profile's measured total, when no run is at hand
    source: str  # where the numbers come from, in words

    def total(self, planned: list[str]) -> float | None:
        if planned and all(s in self.stage_seconds for s in planned):
            return sum(self.stage_seconds[s] for s in planned)
        return self.typical_total

    def left(self, planned: list[str], done: list[str], elapsed: float) -> float | None:
        """Seconds still to go after the `done` stages, `elapsed` seconds into the run."""
        remaining = [s for s in planned if s not in done]
        if all(s in self.stage_seconds for s in remaining):
            return sum(self.stage_seconds[s] for s in remaining)
        if self.typical_total is None or elapsed >= self.typical_total:
            return None  # unknown, or already slower than typical: no made-up number
        return self.typical_total - elapsed


def planned_stages(methods: list[str], maps: bool) -> list[str]:
    """The top-level stages of a run with these methods, in order."""
    return ["load", "task", *[f"method:{m}" for m in methods], *(["maps"] if maps else []),
            "metrics", "store"]


def estimate(runs_dir: str | Path, dataset: str, profile: str,
             typical_total: float | None) -> Estimate:
    """From the newest readable run of (dataset, profile) in runs_dir, else the typical."""
    try:
        runs = list_runs(runs_dir, sweep=False)
    except (StoreError, OSError):
        runs = None
    if runs is not None and len(runs):
        mine = runs[(runs["error"] == "") & (runs["profile"] == profile)
                    & runs["dataset"].astype(str).str.startswith(dataset)]
        for run_id in mine["run_id"]:
            try:
                with open_run(runs_dir, run_id) as reader:
                    stages = reader.stages()
            except StoreError:
                continue
            top = stages[~stages["stage"].str.contains("/")]
            return Estimate(dict(zip(top["stage"], top["seconds"])), typical_total,
                            f"stage times of run {run_id}")
    source = "the profile's typical time on a 2-core CPU" if typical_total else "unknown"
    return Estimate({}, typical_total, source)
