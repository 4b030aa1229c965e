"""Command line: `python -m engine run|demo|list|options|show`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

import pandas as pd

from engine.data.sources import SOURCES
from engine.errors import ConfigError, DuetError
from engine.formatting import metrics_report, stage_table
from engine.options import split_pairs
from engine.profiles import PROFILES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train every method of a profile and store the run")
    run.add_argument("--dataset", default="ml-100k", choices=SOURCES)
    run.add_argument("--path", help="source directory/file (default: fetch ML-100k)")
    run.add_argument("--side", help="Amazon metadata or the table source's items file")
    run.add_argument("--profile", default="demo", choices=list(PROFILES))
    run.add_argument("--out", default="runs", help="run store directory (default: runs)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--seeds", help="comma-separated seeds: one run per seed (ids <run-id>-"
                     "seed<N>), linked as a group whose tables show mean ± std, e.g. 0,1,2")
    run.add_argument("--run-id", help="name of the run (default: dataset-profile-time)")
    run.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                     help="loader option, e.g. category=Books or click_rating=4")
    run.add_argument("--task", action="append", default=[], metavar="KEY=VALUE",
                     help="task option, e.g. history_len=20 or max_users=500")
    run.add_argument("--methods", help="comma-separated subset of the profile's methods, "
                     "e.g. dcnv2,corella")
    run.add_argument("--no-maps", action="store_true",
                     help="skip the embedding maps (UMAP of item spaces)")
    run.add_argument("--no-llm-map", action="store_true",
                     help="maps without the LLM item space (it costs one LLM pass per item)")
    run.add_argument("--if-missing", action="store_true",
                     help="do nothing when a run of this dataset and profile exists")
    demo = sub.add_parser("demo", help="a quick run first (pages have content in minutes), "
                          "then the demo run: each only when the folder has none of its kind")
    demo.add_argument("--out", default="runs")
    demo.add_argument("--path", help="ML-100k directory (default: fetch it from PyPI)")
    demo.add_argument("--first", default="smoke", choices=list(PROFILES))
    demo.add_argument("--then", default="demo", choices=list(PROFILES))
    demo.add_argument("--methods", help="a subset of both profiles' methods")
    demo.add_argument("--no-maps", action="store_true", help="skip the embedding maps")
    lst = sub.add_parser("list", help="list the runs in a store directory")
    lst.add_argument("--out", default="runs")
    opts = sub.add_parser("options", help="list every --option of each source and every "
                          "--task key, with types and defaults")
    opts.add_argument("--dataset", choices=SOURCES, help="only this source")
    show = sub.add_parser("show", help="print one run's headline table")
    show.add_argument("run_id")
    show.add_argument("--out", default="runs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "list":
            return _list(args)
        if args.command == "options":
            return _options(args)
        if args.command == "demo":
            return _demo(args)
        return _show(args)
    except DuetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from engine.pipeline import RunRequest
    from engine.store import list_runs

    if args.if_missing:
        runs = list_runs(args.out)
        mine = runs[(runs["dataset"] == args.dataset) & (runs["profile"] == args.profile)]
        if len(mine):
            print(f"run {mine['run_id'].iloc[0]} exists; nothing to do")
            return 0
    seeds = parse_seeds(args.seeds) if args.seeds else [args.seed]
    request = RunRequest(dataset=args.dataset, path=args.path, side_path=args.side,
                         dataset_options=split_pairs(args.option, "--option"),
                         profile=args.profile, out=args.out, seed=args.seed,
                         run_id=args.run_id, task_options=split_pairs(args.task, "--task"),
                         methods=tuple(args.methods.split(",")) if args.methods else None,
                         maps=not args.no_maps, llm_map=not args.no_llm_map)
    from engine import distributed

    ranks = distributed.start()  # under torchrun: every rank runs this, rank 0 reports
    try:
        return _run_requests(args, request, seeds, ranks.main)
    finally:
        distributed.stop()


def _run_requests(args: argparse.Namespace, request, seeds: list[int], main: bool) -> int:
    from engine import distributed
    from engine.pipeline import run
    from engine.store import new_run_id, open_run

    if args.seeds:
        group = distributed.broadcast(args.run_id or new_run_id(args.dataset, args.profile))
        requests = [replace(request, seed=seed, run_id=f"{group}-seed{seed}", group=group)
                    for seed in seeds]
    else:
        requests = [request]
    for one in requests:
        outcome = run(one)
        if not main:
            continue
        print(f"\nrun {outcome.run_id} -> {outcome.path}")
        print(format_stages(outcome.stages))
        with open_run(args.out, outcome.run_id) as reader:
            print(same_sample_report(reader))
    if args.seeds and main:
        with open_run(args.out, requests[0].run_id) as reader:
            print(seed_report(args.out, reader))
    return 0


def _demo(args: argparse.Namespace) -> int:
    """The app's first-start chain: `[phase k/2]` lines mark each run for the progress bar."""
    for phase, profile in enumerate((args.first, args.then), start=1):
        print(f"[phase {phase}/2] {profile} run", flush=True)
        argv = ["run", "--dataset", "ml-100k", "--profile", profile, "--out", args.out,
                "--if-missing"]
        argv += ["--path", args.path] if args.path else []
        argv += ["--methods", args.methods] if args.methods else []
        argv += ["--no-maps"] if args.no_maps else []
        code = main(argv)
        if code:
            return code
    return 0


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; a bad or repeated seed is a one-line error (exit 2)."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def seed_report(out: str, reader) -> str:
    """Mean ± std over a group's runs of each method's test metrics on the same samples."""
    from engine.compare import group_runs, seed_spread, spread_text

    runs = group_runs(out, reader)
    if len(runs) < 2:
        return ""
    table = spread_text(seed_spread(out, runs, "test"))
    return (f"\nover {len(runs)} seeds ({', '.join(runs)}): mean ± std of test metrics on the "
            f"samples every method scored\n{table.to_string()}")


def format_stages(stages: list[tuple[str, float, str]]) -> str:
    frame = pd.DataFrame(stages, columns=["stage", "seconds", "detail"])
    return stage_table(frame).to_string(index=False)


def same_sample_report(reader) -> str:
    """Test metrics of every method on the samples all of them scored (the CRMs score every
    test sample, the LLM methods an analysed subset), AUC per segment, and the costs."""
    from engine.compare import run_metrics

    long, n = run_metrics(reader, "test")
    cost = reader.methods().set_index("method")
    return (f"on the {n:,} test samples every method scored (engine.compare; each method's "
            "own rows are in the app's stored metrics)\n" + metrics_report(long, cost, "test"))


def _list(args: argparse.Namespace) -> int:
    from engine.store import list_runs, sweep_stale

    for path in sweep_stale(args.out):  # what killed writers left, with no live owner
        print(f"removed stale {path}", file=sys.stderr)
    runs = list_runs(args.out, sweep=False)
    if runs.empty:
        print(f"no runs in {args.out}; make one with: python -m engine run --profile demo")
    else:
        print(runs.drop(columns=["path"]).to_string(index=False))
    return 0


def _show(args: argparse.Namespace) -> int:
    from engine.store import open_run

    # verify: read every value, so a damaged file says so instead of a half-printed table
    with open_run(args.out, args.run_id, verify=True) as reader:
        print(same_sample_report(reader))
        spread = seed_report(args.out, reader)
        if spread:
            print(spread)
    return 0


def _options(args: argparse.Namespace) -> int:
    from engine.data.sources import source
    from engine.data.tabular import TableColumns
    from engine.data.task import TaskConfig
    from engine.options import describe

    def table(rows: list[tuple[str, str, str]]) -> str:
        return pd.DataFrame(rows, columns=["key", "type", "default"]).to_string(index=False)

    for name in [args.dataset] if args.dataset else SOURCES:
        print(f"--dataset {name}: --option key=value\n{table(describe(source(name).options))}\n")
        if name == "table":
            print("  columns roles (JSON/Python mapping of role -> column, or with header=none "
                  "positions: columns=user,item,rating,timestamp)\n"
                  f"{table(describe(TableColumns))}\n")
    print(f"--task key=value (every source)\n{table(describe(TaskConfig))}")
    return 0
