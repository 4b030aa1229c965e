"""One run end to end: load -> task -> methods -> metrics -> run store."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from engine import __version__, distributed, faults
from engine.data.dataset import Dataset
from engine.data.sources import check_source, load_dataset
from engine.data.task import SPLITS, CTRTask, build_task
from engine.errors import ConfigError, DuetError, StoreError
from engine.eta import estimate, planned_stages
from engine.formatting import duration
from engine.maps import MapConfig, behavioural_vectors, build_maps, map_items
from engine.methods import Method, MethodResult, method_class
from engine.methods.base import EVAL_SPLITS
from engine.metrics import segment_metrics
from engine.profiles import Profile, get_profile
from engine.store import (
    FEATURES_STEM,
    RunClaim,
    RunWriter,
    as_float_summary,
    claim_run,
    discard_parts,
    new_run_id,
    write_part,
)

MIN_MAP_ITEMS = 8  # fewer points than this make no meaningful UMAP


@dataclass(frozen=True)
class RunRequest:
    dataset: str = "ml-100k"
    path: str | None = None  # source directory or file; None fetches ML-100k
    side_path: str | None = None  # items/metadata file for amazon and table sources
    dataset_options: dict[str, Any] = field(default_factory=dict)
    profile: str = "demo"
    out: str = "runs"
    seed: int = 0
    run_id: str | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    methods: tuple[str, ...] | None = None  # a subset of the profile's methods
    maps: bool = True  # build the profile's embedding maps (UMAP) with the run
    llm_map: bool = True  # include the LLM item space in the maps (one LLM pass per item)
    group: str | None = None  # runs of one --seeds call share it (their mean and spread)


@dataclass
class RunOutcome:
    run_id: str
    path: Path
    stages: list[tuple[str, float, str]]
    results: list[MethodResult]
    task: CTRTask
    metrics: pd.DataFrame


def run(request: RunRequest, log: Callable[[str], None] = tqdm.write) -> RunOutcome:
    """Execute one run and commit it to the store; nothing is left behind on failure.

    The run id is claimed (and the runs directory checked) before any data is read, so a bad,
    existing or busy id or an unusable --out fails at once, not after training."""
    profile = get_profile(request.profile, seed=request.seed,
                          task_overrides=request.task_options, methods=request.methods)
    check_source(request.dataset, request.path, request.side_path, request.dataset_options)
    methods = build_methods(profile)
    ranks = distributed.start()
    run_id = distributed.broadcast(request.run_id or new_run_id(request.dataset, profile.name))
    if not ranks.main:  # under torchrun, rank 0 alone claims, logs and writes the run
        error = distributed.broadcast(None)
        if error:
            raise StoreError(error)
        return _claimed_run(request, profile, methods, None, lambda _: None, run_id)
    try:
        claim = claim_run(request.out, run_id)
    except DuetError as exc:
        distributed.broadcast(str(exc))  # the other ranks stop with the same line
        raise
    distributed.broadcast(None)
    try:
        faults.point("load")
        return _claimed_run(request, profile, methods, claim, log, run_id)
    finally:
        discard_parts(request.out, run_id)  # a torchrun group's, merged or not
        claim.release()  # a no-op once the writer has published or aborted


def _claimed_run(request: RunRequest, profile: Profile, methods: list[Method],
                 claim: RunClaim | None, log: Callable[[str], None], run_id: str
                 ) -> RunOutcome:
    """The run itself; claim is None on the ranks other than 0 of a torchrun group, which
    compute their shares and leave the store to rank 0."""
    stages: list[tuple[str, float, str]] = []
    start = time.perf_counter()
    planned = planned_stages([m.name for m in profile.methods],
                             profile.maps is not None and request.maps)
    expected = estimate(request.out, request.dataset, profile.name, profile.typical())
    total = expected.total(planned)
    if total is not None:
        log(f"[eta] this run should take about {duration(total)} ({expected.source})")

    def stage(name: str, t0: float, detail: str = "") -> None:
        stages.append((name, time.perf_counter() - t0, detail))
        log(f"[{name}] {stages[-1][1]:.1f}s {detail}")
        left = expected.left(planned, [s[0] for s in stages], time.perf_counter() - start)
        if left is not None and name != "store":
            log(f"[eta] about {duration(left)} left ({expected.source})")

    t0 = time.perf_counter()
    dataset = load_dataset(request.dataset, request.path, request.side_path,
                           request.dataset_options)
    stage("load", t0, f"{len(dataset.interactions):,} interactions from {dataset.source}")
    t0 = time.perf_counter()
    task = build_task(dataset, profile.task)
    # item text vectors, once per run: ReLLa's prompt retrieval and LLM-CF's example
    # retrieval read them, and the maps' semantic space reuses them
    if profile.task.prompt_history_order == "similar" or any(
            m.uses_item_vectors for m in methods):
        from engine.models.encoder import Encoder

        task.use_item_vectors(Encoder().encode(task.items["text"].tolist(), progress=True))
    stage("task", t0, f"{len(task):,} samples")
    for line in data_report(dataset, task, request):
        log(line)

    results = []
    shared: dict[str, Any] = {}  # artifacts one method hands to the later ones
    for number, (spec, method) in enumerate(zip(profile.methods, methods), start=1):
        log(f"[method {number}/{len(profile.methods)}] {spec.name}")
        faults.point("method")
        t0 = time.perf_counter()
        own = _run_method(method, task, shared)
        results.extend(own)
        stage(f"method:{spec.name}", t0)
        for sub, seconds in (own[0].stage_seconds if own else {}).items():
            stages.append((f"method:{spec.name}/{sub}", seconds, ""))  # not in the total
            log(f"    {spec.name}: {sub} {duration(seconds)}")

    maps = None
    if profile.maps is not None and request.maps:
        t0 = time.perf_counter()
        map_config = profile.maps if request.llm_map else replace(profile.maps, llm_space=False)
        maps = _maps(task, results, map_config, log)
        stage("maps", t0, f"{maps[0]['entity_id'].nunique():,} items, "
                          f"{maps[0]['space'].nunique()} spaces")

    t0 = time.perf_counter()
    metrics = _all_metrics(task, results)
    stage("metrics", t0)

    t0 = time.perf_counter()
    ranks = distributed.current()
    outputs = [_per_sample(task, result) for result in results]
    if ranks.active:  # every rank writes its share of the per-sample outputs
        _write_parts(request.out, run_id, outputs)
        faults.point("parts")
        distributed.barrier()
    if claim is None:
        return RunOutcome(run_id, Path(request.out), stages, results, task, metrics)
    with RunWriter(request.out, claim.run_id, claim=claim) as writer:
        writer.write_run(dataset=dataset.name, profile=profile.name, source=dataset.source,
                         seed=request.seed, config=_run_config(request, profile),
                         versions=versions())
        summary = {**dataset.summary(), **task.summary()}
        writer.append("summary", as_float_summary(summary))
        writer.append("notes", notes_frame(dataset, task))
        _write_data(writer, task)
        faults.point("store")  # the store write half done
        _write_results(writer, results, outputs, ranks.world)
        if maps is not None:
            writer.write_frame("embeddings", maps[0])
            writer.write_frame("map_agreement", maps[1])
        writer.append("metrics", metrics)
        stage("store", t0)
        writer.append("stages", pd.DataFrame(stages, columns=["stage", "seconds", "detail"]))
        writer.finish(time.perf_counter() - start)
    return RunOutcome(claim.run_id, writer.paths.db, stages, results, task, metrics)


def data_report(dataset: Dataset, task: CTRTask, request: RunRequest) -> list[str]:
    """What the run trains on, printed before any training: users, items (with text),
    samples per split, the click rule and the click rate per split, then every note."""
    summary = {**dataset.summary(), **task.summary()}
    duplicates = int(summary.get("duplicates_dropped", 0))
    text = summary.get("items_with_text_share", 1.0)
    lines = [
        f"[data] {summary['users']:,} users · {summary['items']:,} items ({text:.0%} with "
        f"text) · {summary['interactions']:,} ratings ({duplicates:,} exact duplicates "
        "dropped)",
        f"[splits] {len(task):,} samples: " + " · ".join(
            f"{split} {summary[f'{split}_samples']:,}" for split in SPLITS),
        f"[click rule] {click_rule(task.click_threshold, dataset, request)}; click rate "
        + " · ".join(f"{split} {summary[f'{split}_click_rate']:.1%}" for split in SPLITS),
    ]
    return lines + [f"warning: {note}" for note in dataset.notes + task.notes]


def click_rule(threshold: float, dataset: Dataset, request: RunRequest) -> str:
    """'rating >= 4 (the ml-100k default)' and where a non-default value came from."""
    rule = f"rating >= {threshold:g}" if dataset.rating_kind != "label" else "label == 1"
    if "click_threshold" in request.task_options:
        return f"{rule} (--task click_threshold)"
    if "click_threshold" in request.dataset_options:
        return f"{rule} (--option click_threshold)"
    return f"{rule} (the {request.dataset} source's default)"


def notes_frame(dataset: Dataset, task: CTRTask) -> pd.DataFrame:
    return pd.DataFrame([("load", n) for n in dataset.notes] + [("task", n) for n in task.notes],
                        columns=["stage", "message"])


def build_methods(profile: Profile) -> list[Method]:
    """The profile's methods, constructed (constructors only store parameters) and checked:
    each method's needs are provided by a method before it, so a missing teacher fails now,
    not after an hour of training."""
    methods, provided = [], set()
    for spec in profile.methods:
        method = method_class(spec.kind)(spec.name, **{"train": profile.train, **spec.options})
        missing = [n for n in method.needs() if n not in provided]
        if missing:
            raise ConfigError(f"method {spec.name!r} needs {', '.join(missing)} from a method "
                              "earlier in the run (e.g. corella trains the LLM adapter); add it "
                              "before, or configure the method not to need it")
        provided |= set(method.provides)
        methods.append(method)
    return methods


def _run_method(method: Method, task: CTRTask, shared: dict[str, Any]) -> list[MethodResult]:
    """Fit one method with what earlier methods shared, and keep what it shares."""
    method.use_artifacts(shared)
    results = method.fit(task).results()
    shared.update(method.artifacts())
    return results


def result_rows(task: CTRTask, result: MethodResult, split: str) -> np.ndarray:
    """The task rows a result's probabilities belong to (the whole split by default)."""
    return result.rows.get(split, task.index(split))


def _maps(task: CTRTask, results: list[MethodResult], config: MapConfig,
          log: Callable[[str], None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Semantic (encoder, LLM) and behavioural (first CRM's item table) item spaces -> UMAP."""
    from engine.models.encoder import Encoder
    from engine.models.llm import LLM

    items = map_items(task, config)
    texts = items["text"].tolist()
    spaces = {"semantic": task.item_vectors[items["idx"].to_numpy() - 1]
              if task.item_vectors is not None else Encoder().encode(texts, progress=True)}
    if config.llm_space:
        spaces["llm"] = LLM().embed(texts, progress=True)
    crm = next((r for r in results if r.kind == "crm" and r.weights), None)
    if crm is not None:
        weights = next(iter(crm.weights.values()))
        spaces["behavioural"] = behavioural_vectors(weights, items, task.schema.item_field)
    coords, agreement = build_maps(items, spaces, config, log)
    for result in results:  # a method's own item spaces (CoReLLa: before/after alignment)
        extra = _method_spaces(items, result.item_vectors)
        if extra is None:
            continue
        subset, vectors = extra
        if len(subset) < MIN_MAP_ITEMS:
            log(f"  {result.name}: {len(subset)} items with layer states; too few to map")
            continue
        more = build_maps(subset, vectors, config, log)
        coords = pd.concat([coords, more[0]], ignore_index=True)
        agreement = pd.concat([agreement, more[1]], ignore_index=True)
    return coords, agreement


def _method_spaces(items: pd.DataFrame, item_vectors: dict[str, tuple[np.ndarray, np.ndarray]]
                   ) -> tuple[pd.DataFrame, dict[str, np.ndarray]] | None:
    """The mapped items every one of a method's spaces covers, and their rows of each."""
    if not item_vectors:
        return None
    common = set(items["item"])
    for ids, _ in item_vectors.values():
        common &= set(ids)
    subset = items[items["item"].isin(common)].reset_index(drop=True)
    vectors = {}
    for space, (ids, matrix) in item_vectors.items():
        position = pd.Index(ids).get_indexer(subset["item"])
        vectors[space] = matrix[position]
    return subset, vectors


def _all_metrics(task: CTRTask, results: list[MethodResult]) -> pd.DataFrame:
    frames = []
    for result in results:
        for split in EVAL_SPLITS:
            samples = task.samples.iloc[result_rows(task, result, split)]
            frame = segment_metrics(samples, result.probs[split])
            frame.insert(0, "split", split)
            frame.insert(0, "method", result.name)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _write_data(writer: RunWriter, task: CTRTask) -> None:
    writer.write_frame("users", task.users.assign(idx=np.arange(1, len(task.users) + 1)))
    writer.write_frame("items", task.items)
    samples = task.samples.drop(columns=["user_idx", "item_idx"])
    writer.write_frame("samples", samples)
    writer.write_frame("interactions", task.ratings)
    test_rows = task.index("test")
    writer.write_frame("prompts", pd.DataFrame({
        "sample_id": task.samples["sample_id"].to_numpy()[test_rows],
        "prompt": task.prompts(test_rows)}))
    stem, tensors, metadata = feature_tensors(task)
    writer.save_weights(stem, tensors, metadata)


def feature_tensors(task: CTRTask) -> tuple[str, dict[str, torch.Tensor], dict[str, str]]:
    """What engine.scoring needs to encode a new pair exactly as the task did: the per-entity
    id tables, the rating levels, and (as metadata) the schema and prompt settings."""
    codes = task.codes
    tensors = {"user_codes": torch.from_numpy(codes.user_codes),
               "item_codes": torch.from_numpy(codes.item_codes),
               "item_tags": torch.from_numpy(codes.item_tags),
               "rating_levels": torch.from_numpy(task.rating_levels.astype(np.float64))}
    cfg = task.config
    metadata = {"schema": _json(asdict(task.schema)), "click_threshold": str(task.click_threshold),
                "prompt_template": cfg.prompt_template, "prompt_history": str(cfg.prompt_history),
                "min_history": str(cfg.min_history)}
    return FEATURES_STEM, tensors, metadata


def _per_sample(task: CTRTask, result: MethodResult) -> list[tuple[str, pd.DataFrame]]:
    """A result's per-sample outputs as (table, frame), in the order they are written: its
    predictions per split, then its diagnostics keyed by sample."""
    out = []
    for split, probs in result.probs.items():
        ids = task.samples["sample_id"].to_numpy()[result_rows(task, result, split)]
        out.append(("predictions", pd.DataFrame(
            {"sample_id": ids, "method": result.name, "prob": probs.astype(np.float64)})))
    for table, frame in result.diagnostics.items():
        if "sample_id" in frame.columns:
            out.append((table, _with_method(frame, result.name)))
    return out


def _with_method(frame: pd.DataFrame, method: str) -> pd.DataFrame:
    frame = frame.copy()
    frame.insert(0, "method", method)
    return frame


def _part_key(number: int, table: str) -> str:
    """The name of the n-th per-sample output's Parquet parts (the same on every rank)."""
    return f"{number:04d}-{table}"


def _write_parts(out: str | Path, run_id: str,
                 outputs: list[list[tuple[str, pd.DataFrame]]]) -> None:
    """Under torchrun, every rank: its share of every per-sample output (_per_sample of each
    result) as Parquet parts, which rank 0 merges (_write_results) once all have written."""
    ranks = distributed.current()
    frames = (item for per_result in outputs for item in per_result)
    for number, (table, frame) in enumerate(frames):
        write_part(out, run_id, _part_key(number, table), frame, ranks.rank, ranks.world)


def _write_results(writer: RunWriter, results: list[MethodResult],
                   outputs: list[list[tuple[str, pd.DataFrame]]], world: int = 1) -> None:
    """Every result's rows; `outputs` are their per-sample frames (_per_sample), which with
    world > 1 come from the ranks' Parquet parts (_write_parts) instead."""
    number = 0
    for result, per_sample in zip(results, outputs):
        weight_files = [writer.save_weights(stem, tensors)
                        for stem, tensors in result.weights.items()]
        writer.append("methods", pd.DataFrame([{
            "method": result.name, "kind": result.kind,
            "config": _json(result.config), "train_seconds": result.cost.get("train_seconds"),
            "infer_ms_per_1k": result.cost.get("infer_ms_per_1k"),
            "llm_calls_per_1k": result.cost.get("llm_calls_per_1k", 0.0),
            "cost": _json(result.cost), "weights_file": ",".join(weight_files),
            "description": result.description}]))
        for table, frame in per_sample:
            if world > 1:
                writer.merge_parts(table, _part_key(number, table), world)
            else:
                writer.put(table, frame)
            number += 1
        if not result.training_log.empty:
            writer.append("training_log", _with_method(result.training_log, result.name))
        for table, frame in result.diagnostics.items():
            if "sample_id" not in frame.columns:
                writer.write_frame(table, _with_method(frame, result.name))


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


def _run_config(request: RunRequest, profile: Profile) -> dict[str, Any]:
    return {"request": asdict(request), "profile": asdict(profile)}


def versions() -> dict[str, str]:
    import duckdb
    import torch

    out = {"duet": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "duckdb": duckdb.__version__, "pandas": pd.__version__, "numpy": np.__version__,
           "platform": platform.platform()}
    try:
        out["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=5, cwd=Path(__file__).parent
                                    ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out
