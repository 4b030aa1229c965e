"""Our CRMs against DeepCTR-Torch and FuxiCTR on the same samples, split and features (issue 5).

    .venv/bin/pip install --no-deps -r bench/requirements.txt      # once
    .venv/bin/python bench/peers.py [--datasets ml-100k,ml-1m] [--seeds 3] [--models dcnv2,deepfm]
                                    [--libs ours,deepctr,fuxictr] [--ml100k PATH] [--ml1m PATH]

Each dataset's CTRTask is built once (demo protocol: K=30 history, min 5 earlier ratings, 8:1:1
global time split). Every run (dataset x seed x model x library) trains in a forked child of
that process, so all runs start from the same memory state and the peak-RSS delta is the run's
own; runs alternate ours, deepctr, fuxictr, ours, ... so background load hits all alike.

Same features for all three: the task's sparse fields as categorical features with the task's
vocab sizes (id 0 = unknown/padding), the target item's tags, the history items (sharing the
item embedding table) and the history rating levels as mean-pooled sequence features.
Ours folds the history into one field (mean over valid positions of item + rating
embedding); the peers have no "sum two sequences then pool" feature, so they get two pooled
fields, mean(item) and mean(rating). Because the masks are equal, ours is their sum:
their DNN / cross input is one 16-d block wider and can represent ours exactly; the FM of
DeepFM has one extra pair term <mean item, mean rating> in the peers.

Matched: embedding 16, DCNv2 (matrix cross, 3 layers, parallel deep (256, 128)), DeepFM deep
(256, 128), dropout 0.1, batch 1024, Adam lr 1e-3, no L2 (both peers' L2 set to 0 / None,
since our demo profile uses none), early stopping on valid AUC with patience 2, max 10 epochs,
best epoch restored, eval batch 8192, torch.set_num_threads(2). Left at each library's own
default on purpose (the "library as shipped" part): initialisation, loss reduction, data
pipeline, FuxiCTR's gradient clipping (norm 10). See `DIFFERENCES` below, printed with the
tables and stored in the JSON.

Reports per dataset x model x library: test AUC / LogLoss mean +- std over seeds, best epoch,
train samples/s (training epochs only, validation excluded), inference samples/s on the test
split (median of 3 passes), peak-RSS delta of the run (VmHWM after - VmRSS before, /proc;
from the child's start, after imports), and ours/peer throughput ratios. Writes
bench/results/peers.json.

The full runs' throughput moves with whatever else the (shared) CPU is doing. A speed probe
follows them (`--probe-rounds`, default 5; `--seeds 0` runs only the probe): each round forks
every model x library once more, trains one warm-up and one timed epoch over the same
`--probe-rows` training rows through the library's own training step and data path, and
times one test pass after a warm-up one; the best round per library is the least disturbed.

Diagnostic variants, not run by default (e.g. `--libs ...,fuxictr-fixlr,ours-previnit`):
`fuxictr-fixlr` is FuxiCTR with one change, the first-order (LR) table of the shared
hist_items feature gets FuxiCTR's own N(0, 1e-4) embedding init instead of the N(0, 1) it is
left with (see DIFFERENCES); `ours-previnit` is our model and trainer with the initialisation
we had before 0.2 (embeddings N(0, 0.01), PyTorch-default Linear layers), which lost to
FuxiCTR on ML-100k until we adopted FuxiCTR's scheme.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import io
import json
import multiprocessing as mp
import os
import platform
import queue as queue_module
import random
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")  # read by tqdm at import; no progress bars

from engine.data.movielens import load_ml1m, load_ml100k  # noqa: E402
from engine.data.task import CTRTask, build_task  # noqa: E402
from engine.metrics import auc, logloss  # noqa: E402
from engine.profiles import PROFILES  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
LIBS = ("ours", "deepctr", "fuxictr")
MODELS = ("dcnv2", "deepfm")
EMBED_DIM = 16
DEEP = (256, 128)
CROSS_LAYERS = 3
DROPOUT = 0.1
BATCH = 1024
EVAL_BATCH = 8192
LR = 1e-3
PATIENCE = 2
THREADS = 2

DIFFERENCES = {
    "all peers": [
        "history: ours pools item+rating embeddings into ONE field (mean over valid positions); "
        "peers get TWO mean-pooled fields (hist_items sharing the item table, hist_ratings). "
        "Ours = their sum, so their DNN/cross input is 16 dims wider (10 fields x 16 vs 9 x 16); "
        "DeepFM's FM has one extra pair term <mean hist item, mean hist rating> in the peers.",
        "init: ours N(0, 1e-4) embeddings, Linear Xavier-normal with zero biases (FuxiCTR's "
        "scheme, our default since 0.2); peers N(0, 1e-4) embeddings (their default).",
        "data: ours index_select()s whole batches from in-memory tensors; peers go through "
        "their own torch DataLoader (per-row __getitem__ + default_collate).",
    ],
    "deepctr": [
        "init: DNN weights N(0, 1e-4) (init_std) with PyTorch-default biases, cross kernels "
        "Xavier-normal with zero biases, output Linear PyTorch default (no bias; the "
        "PredictionLayer adds a zero-initialised one).",
        "loss is BCE on sigmoid outputs with reduction='sum' (ours: BCE-with-logits, mean); "
        "with Adam this only changes the effective epsilon.",
        "all inputs travel as ONE float32 matrix (ids cast back with .long() per field).",
        "L2 set to 0 (library defaults: 1e-5 on embeddings, linear and cross kernels).",
        "DCN: cross_parameterization='matrix' (DCN-M = DCNv2), parallel, no linear (LR) "
        "part (linear_feature_columns=[]), as ours.",
        "DeepFM first-order term: 1-d embeddings, sequences mean-pooled, item weights shared "
        "with the history = exactly ours.",
        "early stopping: our loop around fit(epochs=1) (its EarlyStopping callback restores "
        "the best weights only when patience runs out, not when max epochs is reached).",
    ],
    "fuxictr": [
        "models: fuxictr 2.3.10's wheel ships no DCNv2/DeepFM for plain CTR (only LongCTR's), "
        "so DCNv2/DeepFM here are its model_zoo structure rebuilt from fuxictr's own layers "
        "(FeatureEmbedding, CrossNetV2, MLP_Block, FactorizationMachine) on its BaseModel.",
        "init: Linear Xavier-normal, biases 0 (BaseModel.reset_parameters).",
        "DeepFM first-order term (LogisticRegression): sequences SUM-pooled (not mean) and "
        "hist_items gets its own unshared 1-d table that fuxictr leaves at nn.Embedding's "
        "N(0, 1) init (init_weights skips features with share_embedding even when the LR "
        "layer turns sharing off): the initial first-order logit has std ~sqrt(30) ~ 5, which "
        "Adam at lr 1e-3 needs many epochs to wash out (see --libs fuxictr-fixlr).",
        "training: its own BaseModel.fit (early stop on valid AUC, patience 2, min_delta 1e-6, "
        "best checkpoint reloaded from disk), reduce_lr_on_plateau=False (default True), "
        "gradient-norm clipping at 10 (its default, kept).",
        "data: its NpzDataLoader (num_workers=0) over .npz files written to a temp dir; "
        "rows become float64 and are cast back to long per field.",
        "sequence pooling infers the mask from all-zero embedding rows (padding_idx=0).",
    ],
}


# --------------------------------------------------------------------------------------------
# shared helpers


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def vm_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class PeakRSS:
    """Peak RSS over a block, relative to RSS at its start (MB). Resets the kernel's high-water
    mark via /proc/self/clear_refs when allowed, and also samples RSS in a thread as a fallback."""

    def __enter__(self) -> PeakRSS:
        self.start_kb = vm_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.hwm_ok = True
        except OSError:
            self.hwm_ok = False
        self.sampled_kb = self.start_kb
        self._stop = threading.Event()
        self._thread = None
        if not self.hwm_ok:  # sample only when the kernel's high-water mark can't be reset
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.sampled_kb = max(self.sampled_kb, vm_kb("VmRSS"))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        peak = max(self.sampled_kb, vm_kb("VmRSS"))
        if self.hwm_ok:
            peak = max(peak, vm_kb("VmHWM"))
        self.delta_mb = (peak - self.start_kb) / 1024
        self.start_mb = self.start_kb / 1024


class Stopwatch:
    """Accumulates wall and process-CPU seconds (all threads) of the timed blocks. Under a
    shared CPU the wall time grows with other people's load; CPU time much less so."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.count = 0

    @contextlib.contextmanager
    def __call__(self):
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - w
            self.cpu += time.process_time() - c
            self.count += 1

    def minus(self, other: Stopwatch) -> Stopwatch:
        out = Stopwatch()
        out.wall, out.cpu, out.count = self.wall - other.wall, self.cpu - other.cpu, self.count
        return out


def early_stopping_loop(train_epoch, valid_probs, valid_labels, state, load_state,
                        max_epochs: int, n_train: int) -> dict:
    """Our trainer's rule around a peer's one-epoch fit: keep the best valid AUC, stop after
    `PATIENCE` epochs without gain, restore the best weights. Times training epochs only."""
    best_auc, best_epoch, best_state = -1.0, 0, copy.deepcopy(state())
    watch, log = Stopwatch(), []
    for epoch in range(1, max_epochs + 1):
        with watch():
            train_epoch()
        probs = valid_probs()
        row = {"epoch": epoch, "valid_auc": auc(valid_labels, probs),
               "valid_logloss": logloss(valid_labels, probs)}
        log.append(row)
        if row["valid_auc"] > best_auc:
            best_auc, best_epoch, best_state = row["valid_auc"], epoch, copy.deepcopy(state())
        elif epoch - best_epoch >= PATIENCE:
            break
    load_state(best_state)
    return {"best_epoch": best_epoch, "epochs": len(log), "train_seconds": watch.wall,
            "train_cpu_seconds": watch.cpu, "log": log}


def timed_predict(predict, repeats: int = 3) -> tuple[np.ndarray, dict]:
    """Test-split predictions and the median wall / CPU time of `repeats` passes (the CPU is
    shared, so one pass is easily hit by someone else's burst)."""
    walls, cpus = [], []
    for _ in range(repeats):
        watch = Stopwatch()
        with watch():
            probs = predict()
        walls.append(watch.wall)
        cpus.append(watch.cpu)
    return np.asarray(probs, dtype=np.float64).reshape(-1), {
        "infer_seconds": float(np.median(walls)), "infer_cpu_seconds": float(np.median(cpus))}


def probe_result(train_epoch, predict, n_rows: int, n_test: int) -> dict:
    """Speed probe: one warm-up and one timed epoch over the probe rows, then one warm-up
    and one timed test prediction. Best-of-rounds over such short windows shows each
    library's speed with the least interference from other people's load."""
    train_epoch()
    watch = Stopwatch()
    with watch():
        train_epoch()
    predict()
    infer = Stopwatch()
    with infer():
        predict()
    return {"probe_train_sps": n_rows / watch.wall, "probe_train_sps_cpu": n_rows / watch.cpu,
            "probe_infer_sps": n_test / infer.wall, "probe_infer_sps_cpu": n_test / infer.cpu}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# ours


def previous_init(model) -> None:
    """Diagnostic: our initialisation before 0.2 - embeddings N(0, 0.01), PyTorch's default
    (Kaiming-uniform) Linear layers. 0.2 adopted FuxiCTR's scheme (engine.models.features.
    init_weights) after this comparison: see the README's Benchmarks section."""
    import torch
    from torch import nn

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=1e-2)
            elif isinstance(module, nn.Linear):
                module.reset_parameters()


def run_ours(task: CTRTask, model_name: str, seed: int, max_epochs: int, ctx: dict,
             init=None) -> dict:
    import torch

    import engine.models.trainer as trainer
    from engine.models import build_crm, crm_config
    from engine.models.trainer import TaskTensors, TrainConfig, fit, predict

    watch, orig_epoch = Stopwatch(), trainer._train_epoch

    def timed_epoch(*a, **k):  # fit() times the same span; this adds CPU time
        with watch():
            return orig_epoch(*a, **k)

    trainer._train_epoch = timed_epoch  # in this forked child only
    with PeakRSS() as mem:
        tensors = TaskTensors(task)
        torch.manual_seed(seed)  # as CRMMethod.fit: initial weights depend on the seed
        opts = {"embed_dim": EMBED_DIM, "deep_layers": DEEP, "dropout": DROPOUT}
        if model_name == "dcnv2":
            opts.update(cross_layers=CROSS_LAYERS, structure="parallel")
        model = build_crm(model_name, task.schema, crm_config(model_name, opts))
        if init is not None:
            init(model)
        config = TrainConfig(batch_size=BATCH, lr=LR, max_epochs=max_epochs, patience=PATIENCE,
                             eval_batch_size=EVAL_BATCH, seed=seed, threads=THREADS)
        if "probe_rows" in ctx:
            rows = torch.from_numpy(ctx["probe_rows"])
            opt = torch.optim.Adam(model.parameters(), lr=LR)
            gen = torch.Generator().manual_seed(seed)
            test = task.index("test")
            return probe_result(
                lambda: orig_epoch(model, tensors, rows, opt, config, gen, desc="probe"),
                lambda: predict(model, tensors, test, EVAL_BATCH), len(rows), len(test))
        result = fit(model, task, config, name=model_name, tensors=tensors)
        test = task.index("test")
        probs, infer = timed_predict(lambda: predict(model, tensors, test, EVAL_BATCH))
    assert watch.count == len(result.log)
    return {"probs": probs, "best_epoch": result.best_epoch, "epochs": len(result.log),
            "train_seconds": watch.wall, "train_cpu_seconds": watch.cpu,
            "trainer_train_sps": result.train_samples_per_s, **infer,
            "params": n_params(model), "rss_delta_mb": mem.delta_mb, "rss_start_mb": mem.start_mb,
            "log": [{"epoch": r["epoch"], "valid_auc": r["valid_auc"],
                     "valid_logloss": r["valid_logloss"]} for r in result.log]}


# --------------------------------------------------------------------------------------------
# DeepCTR-Torch


def deepctr_columns(task: CTRTask):
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat

    s = task.schema
    item_name, item_vocab = s.sparse_fields[s.item_field]
    cols = [SparseFeat(name, vocab, embedding_dim=EMBED_DIM) for name, vocab in s.sparse_fields]
    cols += [
        VarLenSparseFeat(SparseFeat("tags", s.n_tags, embedding_dim=EMBED_DIM),
                         maxlen=s.max_tags, combiner="mean"),
        VarLenSparseFeat(SparseFeat("hist_items", item_vocab, embedding_dim=EMBED_DIM,
                                    embedding_name=item_name),
                         maxlen=s.history_len, combiner="mean"),
        VarLenSparseFeat(SparseFeat("hist_ratings", s.n_rating_levels + 1,
                                    embedding_dim=EMBED_DIM),
                         maxlen=s.history_len, combiner="mean"),
    ]
    return cols


def deepctr_inputs(task: CTRTask, rows: np.ndarray) -> dict[str, np.ndarray]:
    out = {name: task.sparse[rows, i] for i, (name, _) in enumerate(task.schema.sparse_fields)}
    out.update(tags=task.tags[rows], hist_items=task.hist_items[rows],
               hist_ratings=task.hist_ratings[rows])
    return out


def run_deepctr(task: CTRTask, model_name: str, seed: int, max_epochs: int, ctx: dict) -> dict:
    import torch

    with contextlib.redirect_stdout(io.StringIO()):  # its import prints a version notice
        from deepctr_torch.models import DCN, DeepFM

    seed_everything(seed)
    train, valid, test = (task.index(s) for s in ("train", "valid", "test"))
    with PeakRSS() as mem:
        cols = deepctr_columns(task)
        x_train, x_valid, x_test = (deepctr_inputs(task, r) for r in (train, valid, test))
        y_train = task.labels[train]
        common = dict(l2_reg_linear=0.0, l2_reg_embedding=0.0, l2_reg_dnn=0.0,
                      dnn_hidden_units=DEEP, dnn_dropout=DROPOUT, seed=seed, device="cpu")
        if model_name == "dcnv2":
            model = DCN([], cols, cross_num=CROSS_LAYERS, cross_parameterization="matrix",
                        l2_reg_cross=0.0, **common)
        else:
            model = DeepFM(cols, cols, **common)
        model.compile(torch.optim.Adam(model.parameters(), lr=LR), "binary_crossentropy",
                      metrics=[])

        def train_epoch(x=x_train, y=y_train) -> None:
            with contextlib.redirect_stdout(io.StringIO()):  # fit() prints device and sizes
                model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=True)

        if "probe_rows" in ctx:
            rows = ctx["probe_rows"]
            x_probe, y_probe = deepctr_inputs(task, rows), task.labels[rows]
            return probe_result(lambda: train_epoch(x_probe, y_probe),
                                lambda: model.predict(x_test, EVAL_BATCH), len(rows), len(test))

        fit = early_stopping_loop(
            train_epoch, lambda: model.predict(x_valid, EVAL_BATCH).reshape(-1),
            task.labels[valid], model.state_dict, model.load_state_dict, max_epochs, len(train))
        probs, infer = timed_predict(lambda: model.predict(x_test, EVAL_BATCH))
    return {"probs": probs, **fit, **infer, "params": n_params(model),
            "rss_delta_mb": mem.delta_mb, "rss_start_mb": mem.start_mb}


# --------------------------------------------------------------------------------------------
# FuxiCTR


def fuxictr_feature_specs(task: CTRTask) -> OrderedDict:
    """FuxiCTR feature_map entries with the task's own vocabularies (0 = padding/unknown);
    the same keys its FeatureProcessor writes (type, source, vocab_size, padding_idx, ...)."""
    s = task.schema
    item_name, item_vocab = s.sparse_fields[s.item_field]
    specs = OrderedDict()
    for name, vocab in s.sparse_fields:
        source = "user" if name.startswith("user") else "item" if name.startswith("item") else ""
        specs[name] = {"source": source, "type": "categorical", "padding_idx": 0,
                       "vocab_size": int(vocab)}
    pool = "layers.MaskedAveragePooling()"
    specs["tags"] = {"source": "item", "type": "sequence", "feature_encoder": pool,
                     "padding_idx": 0, "max_len": s.max_tags, "vocab_size": int(s.n_tags)}
    specs["hist_items"] = {"source": "user", "type": "sequence", "feature_encoder": pool,
                           "share_embedding": item_name, "padding_idx": 0,
                           "max_len": s.history_len, "vocab_size": int(item_vocab)}
    specs["hist_ratings"] = {"source": "user", "type": "sequence", "feature_encoder": pool,
                             "padding_idx": 0, "max_len": s.history_len,
                             "vocab_size": int(s.n_rating_levels + 1)}
    return specs


def write_fuxictr_data(task: CTRTask, name: str, root: Path,
                       probe_rows: np.ndarray | None = None) -> Path:
    """feature_map.json + {train,valid,test}.npz as FuxiCTR's build_dataset would leave them
    (plus probe.npz, the speed probe's training rows)."""
    data_dir = root / name
    data_dir.mkdir(parents=True, exist_ok=True)
    specs = fuxictr_feature_specs(task)
    feature_map = {"dataset_id": name, "num_fields": len(specs),
                   "total_features": int(sum(v["vocab_size"] for k, v in specs.items()
                                             if "share_embedding" not in v)),
                   "input_length": 0, "labels": ["label"],
                   "features": [{k: v} for k, v in specs.items()]}
    (data_dir / "feature_map.json").write_text(json.dumps(feature_map, indent=2))
    splits = {s: task.index(s) for s in ("train", "valid", "test")}
    if probe_rows is not None:
        splits["probe"] = probe_rows
    for split, rows in splits.items():
        arrays = {n: task.sparse[rows, i] for i, (n, _) in enumerate(task.schema.sparse_fields)}
        arrays.update(tags=task.tags[rows], hist_items=task.hist_items[rows],
                      hist_ratings=task.hist_ratings[rows], label=task.labels[rows])
        np.savez(data_dir / f"{split}.npz", **arrays)
    return data_dir


def fuxictr_models():
    """DCNv2 and DeepFM with FuxiCTR's model_zoo structure, from its own layers/BaseModel."""
    import torch
    from fuxictr.pytorch.layers import CrossNetV2, FactorizationMachine, FeatureEmbedding, MLP_Block
    from fuxictr.pytorch.models import BaseModel
    from torch import nn

    class FuxiDCNv2(BaseModel):
        def __init__(self, feature_map, embedding_dim, hidden_units, num_cross_layers,
                     net_dropout, learning_rate, **kwargs):
            super().__init__(feature_map, model_id="DCNv2", **kwargs)
            self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
            dim = feature_map.sum_emb_out_dim()
            self.crossnet = CrossNetV2(dim, num_cross_layers)
            self.parallel_dnn = MLP_Block(input_dim=dim, output_dim=None,
                                          hidden_units=list(hidden_units),
                                          hidden_activations="ReLU", output_activation=None,
                                          dropout_rates=net_dropout, batch_norm=False)
            self.fc = nn.Linear(dim + hidden_units[-1], 1)
            self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            emb = self.embedding_layer(X, flatten_emb=True)
            out = torch.cat([self.crossnet(emb), self.parallel_dnn(emb)], dim=-1)
            return {"y_pred": self.output_activation(self.fc(out))}

    class FuxiDeepFM(BaseModel):
        def __init__(self, feature_map, embedding_dim, hidden_units, net_dropout,
                     learning_rate, **kwargs):
            super().__init__(feature_map, model_id="DeepFM", **kwargs)
            self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
            self.fm = FactorizationMachine(feature_map)
            self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1,
                                 hidden_units=list(hidden_units), hidden_activations="ReLU",
                                 output_activation=None, dropout_rates=net_dropout,
                                 batch_norm=False)
            self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            emb = self.embedding_layer(X)
            y = self.fm(X, emb) + self.mlp(emb.flatten(start_dim=1))
            return {"y_pred": self.output_activation(y)}

    return {"dcnv2": FuxiDCNv2, "deepfm": FuxiDeepFM}


def run_fuxictr(task: CTRTask, model_name: str, seed: int, max_epochs: int, ctx: dict,
                fix_lr_init: bool = False) -> dict:
    import logging

    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.dataloaders.npz_dataloader import NpzDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything as fuxi_seed

    logging.getLogger().setLevel(logging.WARNING)
    models = fuxictr_models()
    data_dir = Path(ctx["fuxictr_dir"])
    fuxi_seed(seed)
    with PeakRSS() as mem:
        feature_map = FeatureMap(data_dir.name, str(data_dir))
        feature_map.load(str(data_dir / "feature_map.json"), {"embedding_dim": EMBED_DIM})
        splits = ("probe", "test") if "probe_rows" in ctx else ("train", "valid", "test")
        loaders = {split: NpzDataLoader(feature_map, str(data_dir / f"{split}.npz"),
                                        batch_size=EVAL_BATCH if split in ("valid", "test")
                                        else BATCH,
                                        shuffle=split not in ("valid", "test"), num_workers=0)
                   for split in splits}
        model_root = Path(tempfile.mkdtemp(prefix="fuxictr_ckpt_"))
        (model_root / feature_map.dataset_id).mkdir()
        common = dict(embedding_dim=EMBED_DIM, hidden_units=DEEP, net_dropout=DROPOUT,
                      learning_rate=LR, gpu=-1, optimizer="adam", loss="binary_crossentropy",
                      metrics=["AUC", "logloss"], monitor="AUC", monitor_mode="max",
                      early_stop_patience=PATIENCE, reduce_lr_on_plateau=False,
                      embedding_regularizer=None, net_regularizer=None, verbose=0,
                      model_root=str(model_root))
        if model_name == "dcnv2":
            model = models["dcnv2"](feature_map, num_cross_layers=CROSS_LAYERS, **common)
        else:
            model = models["deepfm"](feature_map, **common)
        if fix_lr_init and model_name == "deepfm":
            import torch

            lr_tables = model.fm.lr_layer.embedding_layer.embedding_layer.embedding_layers
            with torch.no_grad():
                for name, spec in feature_map.features.items():
                    if "share_embedding" in spec and name in lr_tables:
                        torch.nn.init.normal_(lr_tables[name].weight[1:], std=1e-4)

        if "probe_rows" in ctx:  # the state fit() sets up, with validation never due
            model._max_gradient_norm, model._total_steps, model._eval_steps = 10.0, 0, 1 << 62
            model._stop_training, model._epoch_index, model.valid_gen = False, 0, None
            return probe_result(lambda: model.train_epoch(loaders["probe"]),
                                lambda: model.predict(loaders["test"]),
                                len(ctx["probe_rows"]), len(task.index("test")))

        # time its own fit(), taking out the validation passes it runs inside train_epoch
        epochs, evals = Stopwatch(), Stopwatch()
        log: list[dict] = []
        best = {"auc": -np.inf, "epoch": 0}
        orig_epoch, orig_eval, orig_ckpt = (model.train_epoch, model.eval_step,
                                            model.checkpoint_and_earlystop)

        def train_epoch(gen):
            with epochs():
                orig_epoch(gen)

        def eval_step():
            with evals():
                orig_eval()

        def checkpoint_and_earlystop(logs, min_delta=1e-6):
            epoch = epochs.count + 1
            log.append({"epoch": epoch, "valid_auc": float(logs["AUC"])})
            if logs["AUC"] >= best["auc"] + min_delta:
                best.update(auc=logs["AUC"], epoch=epoch)
            orig_ckpt(logs, min_delta)

        model.train_epoch, model.eval_step = train_epoch, eval_step
        model.checkpoint_and_earlystop = checkpoint_and_earlystop
        model.fit(loaders["train"], epochs=max_epochs, validation_data=loaders["valid"])
        train = epochs.minus(evals)  # train_epoch runs the epoch-end validation inside
        probs, infer = timed_predict(lambda: model.predict(loaders["test"]))
    return {"probs": probs, "best_epoch": best["epoch"], "epochs": epochs.count,
            "train_seconds": train.wall, "train_cpu_seconds": train.cpu,
            **infer, "params": n_params(model), "rss_delta_mb": mem.delta_mb,
            "rss_start_mb": mem.start_mb, "log": log}


RUNNERS = {"ours": run_ours, "deepctr": run_deepctr, "fuxictr": run_fuxictr,
           "fuxictr-fixlr": functools.partial(run_fuxictr, fix_lr_init=True),
           "ours-previnit": functools.partial(run_ours, init=previous_init)}
DIAGNOSTIC_LIBS = ("fuxictr-fixlr", "ours-previnit")


# --------------------------------------------------------------------------------------------
# orchestration


def _child(queue, lib: str, task: CTRTask, model: str, seed: int, max_epochs: int,
           ctx: dict) -> None:
    os.environ["TQDM_DISABLE"] = "1"
    sys.stdout = open(os.devnull, "w")  # libraries' prints (device, sizes, version notices)
    warnings.simplefilter("ignore")
    try:
        import torch

        torch.set_num_threads(THREADS)
        with contextlib.redirect_stdout(io.StringIO()):
            out = RUNNERS[lib](task, model, seed, max_epochs, ctx)
        if "probe_rows" in ctx:
            queue.put(("ok", out))
            return
        test = task.index("test")
        probs = np.asarray(out.pop("probs"), dtype=np.float64)
        assert len(probs) == len(test), (len(probs), len(test))
        out["test_auc"] = auc(task.labels[test], probs)
        out["test_logloss"] = logloss(task.labels[test], probs)
        n_train = len(task.index("train")) * out["epochs"]
        out["train_sps"] = n_train / max(out["train_seconds"], 1e-9)
        out["train_sps_cpu"] = n_train / max(out["train_cpu_seconds"], 1e-9)
        out["infer_sps"] = len(test) / max(out["infer_seconds"], 1e-9)
        out["infer_sps_cpu"] = len(test) / max(out["infer_cpu_seconds"], 1e-9)
        out["threads"] = torch.get_num_threads()
        queue.put(("ok", out))
    except BaseException:  # noqa: BLE001 - reported to the parent
        queue.put(("error", traceback.format_exc()))


def run_isolated(lib: str, task: CTRTask, model: str, seed: int, max_epochs: int,
                 ctx: dict) -> dict:
    """One run in a forked child: the task's arrays are shared copy-on-write, the child's
    allocator and RSS start from the same state for every run."""
    context = mp.get_context("fork")
    queue = context.Queue()
    proc = context.Process(target=_child, args=(queue, lib, task, model, seed, max_epochs, ctx))
    proc.start()
    while True:
        try:
            status, payload = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{lib}/{model}/seed {seed}: child died "
                                   f"(exit code {proc.exitcode})") from None
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{lib}/{model}/seed {seed} failed:\n{payload}")
    return payload


def load_dataset(name: str, args):
    if name == "ml-100k":
        return load_ml100k(args.ml100k if Path(args.ml100k).is_dir() else None)
    if name == "ml-1m":
        if not Path(args.ml1m).is_dir():
            raise SystemExit(f"--ml1m {args.ml1m} is not a directory")
        return load_ml1m(args.ml1m)
    raise SystemExit(f"unknown dataset {name!r}; valid: ml-100k, ml-1m")


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def aggregate(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"], r["lib"]), []).append(r)
    out = []
    for (dataset, model, lib), rs in groups.items():
        agg = {"dataset": dataset, "model": model, "lib": lib, "seeds": len(rs),
               "params": rs[0]["params"], "samples": rs[0]["samples"]}
        for key in ("test_auc", "test_logloss", "best_epoch", "epochs", "train_sps",
                    "train_sps_cpu", "infer_sps", "infer_sps_cpu", "rss_delta_mb"):
            agg[key], agg[key + "_std"] = mean_std([r[key] for r in rs])
        out.append(agg)
    for a in out:
        ours = next((b for b in out if b["lib"] == "ours" and b["dataset"] == a["dataset"]
                     and b["model"] == a["model"]), None)
        for key in ("train_sps", "train_sps_cpu", "infer_sps", "infer_sps_cpu"):
            a[f"ours_over_{key}"] = ours[key] / a[key] if ours and a[key] else float("nan")
    return out


def print_tables(aggs: list[dict], seeds: int) -> None:
    pm = "±"
    print(f"\nQuality (test split; mean {pm} std over {seeds} seed(s))\n")
    print("| dataset | model | library | test AUC | test LogLoss | best epoch | epochs run "
          "| params |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for a in aggs:
        print(f"| {a['dataset']} | {a['model']} | {a['lib']} | "
              f"{a['test_auc']:.4f} {pm} {a['test_auc_std']:.4f} | "
              f"{a['test_logloss']:.4f} {pm} {a['test_logloss_std']:.4f} | "
              f"{a['best_epoch']:.1f} | {a['epochs']:.1f} | {a['params']:,} |")
    print(f"\nSpeed and memory ({THREADS} threads; mean {pm} std; wall = samples per wall "
          "second, cpu = per process-CPU second; ours/peer > 1 means ours is faster)\n")
    print("| dataset | model | library | train samples/s wall | train samples/s cpu "
          "| infer samples/s wall | infer samples/s cpu | ours/peer train wall (cpu) "
          "| ours/peer infer wall (cpu) | peak RSS delta MB |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for a in aggs:
        ratio = ("–", "–") if a["lib"] == "ours" or np.isnan(a["ours_over_train_sps"]) else tuple(
            f"{a[f'ours_over_{k}_sps']:.2f}x ({a[f'ours_over_{k}_sps_cpu']:.2f}x)"
            for k in ("train", "infer"))
        print(f"| {a['dataset']} | {a['model']} | {a['lib']} | "
              f"{a['train_sps']:,.0f} {pm} {a['train_sps_std']:,.0f} | "
              f"{a['train_sps_cpu']:,.0f} {pm} {a['train_sps_cpu_std']:,.0f} | "
              f"{a['infer_sps']:,.0f} {pm} {a['infer_sps_std']:,.0f} | "
              f"{a['infer_sps_cpu']:,.0f} {pm} {a['infer_sps_cpu_std']:,.0f} | "
              f"{ratio[0]} | {ratio[1]} | "
              f"{a['rss_delta_mb']:,.0f} {pm} {a['rss_delta_mb_std']:,.0f} |")


def aggregate_probes(probes: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in probes:
        groups.setdefault((r["dataset"], r["model"], r["lib"]), []).append(r)
    keys = ("probe_train_sps", "probe_train_sps_cpu", "probe_infer_sps", "probe_infer_sps_cpu")
    out = []
    for (dataset, model, lib), rs in groups.items():
        agg = {"dataset": dataset, "model": model, "lib": lib, "rounds": len(rs)}
        for key in keys:
            values = [r[key] for r in rs]
            agg[key + "_best"], agg[key + "_median"] = max(values), float(np.median(values))
        out.append(agg)
    for a in out:
        ours = next((b for b in out if b["lib"] == "ours" and b["dataset"] == a["dataset"]
                     and b["model"] == a["model"]), None)
        for key in keys:
            a[f"ours_over_{key}_best"] = (ours[key + "_best"] / a[key + "_best"]
                                          if ours else float("nan"))
    return out


def print_probe_table(aggs: list[dict], rounds: int, n_rows: int) -> None:
    print(f"\nSpeed probe (best of {rounds} alternating rounds; each round = one timed "
          f"epoch over the same {n_rows:,} training rows after a warm-up epoch, and one timed "
          "test pass after a warm-up pass; best = least disturbed by other load)\n")
    print("| dataset | model | library | train samples/s best (median) | infer samples/s best "
          "(median) | ours/peer train best | ours/peer infer best |")
    print("|---|---|---|---:|---:|---:|---:|")
    for a in aggs:
        ratio = ("–", "–") if a["lib"] == "ours" or np.isnan(
            a["ours_over_probe_train_sps_best"]) else (
            f"{a['ours_over_probe_train_sps_best']:.2f}x",
            f"{a['ours_over_probe_infer_sps_best']:.2f}x")
        print(f"| {a['dataset']} | {a['model']} | {a['lib']} | "
              f"{a['probe_train_sps_best']:,.0f} ({a['probe_train_sps_median']:,.0f}) | "
              f"{a['probe_infer_sps_best']:,.0f} ({a['probe_infer_sps_median']:,.0f}) | "
              f"{ratio[0]} | {ratio[1]} |")


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "cpu_count": os.cpu_count()}
    for pkg in ("torch", "numpy", "pandas", "scikit-learn", "deepctr-torch", "fuxictr"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ml100k", default=str(SHARED / "ml-100k"),
                        help="ML-100k directory; fetched from PyPI (recbole wheel) if missing")
    parser.add_argument("--ml1m", default=str(SHARED / "ml-1m"))
    parser.add_argument("--datasets", default=None,
                        help="comma list of ml-100k, ml-1m (default: ml-100k, plus ml-1m when "
                             "--ml1m exists)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--libs", default=",".join(LIBS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--probe-rounds", type=int, default=5,
                        help="speed probe: rounds of short alternating timings, best kept "
                             "(0: off)")
    parser.add_argument("--probe-rows", type=int, default=16 * BATCH,
                        help="training rows per speed-probe epoch")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "peers.json"))
    args = parser.parse_args()
    datasets = (args.datasets.split(",") if args.datasets else
                ["ml-100k"] + (["ml-1m"] if Path(args.ml1m).is_dir() else []))
    models = args.models.split(",")
    libs = args.libs.split(",")
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"unknown model {m!r}; valid: {', '.join(MODELS)}")
    for lib in libs:
        if lib not in RUNNERS:
            raise SystemExit(f"unknown library {lib!r}; valid: {', '.join(RUNNERS)}")

    rows: list[dict] = []
    probes: list[dict] = []
    tasks_info = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="duet_peers_") as tmp:
        for dataset in datasets:
            t0 = time.perf_counter()
            task = build_task(load_dataset(dataset, args), PROFILES["demo"].task)
            build_s = time.perf_counter() - t0
            ctx = {}
            train_rows = task.index("train")
            probe_rows = np.sort(np.random.default_rng(0).choice(
                train_rows, size=min(args.probe_rows, len(train_rows)), replace=False))
            if any(lib.startswith("fuxictr") for lib in libs):
                ctx["fuxictr_dir"] = str(write_fuxictr_data(
                    task, dataset.replace("-", "_"), Path(tmp), probe_rows))
            tasks_info[dataset] = {**task.summary(), "build_seconds": build_s,
                                   "schema": repr(task.schema)}
            print(f"{dataset}: {len(task):,} samples (train {len(task.index('train')):,}, "
                  f"valid {len(task.index('valid')):,}, test {len(task.index('test')):,}); "
                  f"task built in {build_s:.1f}s", flush=True)
            total = args.seeds * sum(lib != "fuxictr-fixlr" or m == "deepfm"
                                     for m in models for lib in libs)
            k = 0
            for seed in range(args.seeds):
                for model in models:
                    for lib in libs:  # alternate: ours, deepctr, fuxictr, ours, ...
                        if lib == "fuxictr-fixlr" and model != "deepfm":
                            continue  # the fix only touches DeepFM's LR layer
                        k += 1
                        t1, load = time.perf_counter(), os.getloadavg()[0]
                        r = run_isolated(lib, task, model, seed, args.max_epochs, ctx)
                        r.update(dataset=dataset, model=model, lib=lib, seed=seed,
                                 samples=len(task), wall_seconds=time.perf_counter() - t1,
                                 loadavg_1min_before=load)
                        rows.append(r)
                        print(f"  [{k}/{total}] {dataset} {model:6s} {lib:7s} seed {seed}: "
                              f"AUC {r['test_auc']:.4f} LogLoss {r['test_logloss']:.4f} "
                              f"best {r['best_epoch']}/{r['epochs']} | train "
                              f"{r['train_sps']:,.0f}/s ({r['train_sps_cpu']:,.0f}/cpu-s) "
                              f"infer {r['infer_sps']:,.0f}/s | "
                              f"RSS +{r['rss_delta_mb']:.0f} MB | {r['wall_seconds']:.0f}s",
                              flush=True)
            for rnd in range(args.probe_rounds):
                for model in models:
                    for lib in libs:
                        if lib in DIAGNOSTIC_LIBS:
                            continue  # same speed as the library they vary
                        r = run_isolated(lib, task, model, 0, args.max_epochs,
                                         {**ctx, "probe_rows": probe_rows})
                        r.update(dataset=dataset, model=model, lib=lib, round=rnd,
                                 probe_rows=len(probe_rows))
                        probes.append(r)
                print(f"  speed probe round {rnd + 1}/{args.probe_rounds} done", flush=True)
    aggs = aggregate(rows)
    if rows:
        print_tables(aggs, args.seeds)
    probe_aggs = aggregate_probes(probes)
    if probes:
        print_probe_table(probe_aggs, args.probe_rounds, args.probe_rows)
    print("\nWhat differs from ours:")
    for who, items in DIFFERENCES.items():
        for item in items:
            print(f"- {who}: {item}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {"datasets": datasets, "models": models, "libs": libs, "seeds": args.seeds,
                   "probe_rounds": args.probe_rounds, "probe_rows": args.probe_rows,
                   "max_epochs": args.max_epochs, "embed_dim": EMBED_DIM, "deep": DEEP,
                   "cross_layers": CROSS_LAYERS, "dropout": DROPOUT, "batch": BATCH,
                   "eval_batch": EVAL_BATCH, "lr": LR, "patience": PATIENCE,
                   "threads": THREADS},
        "versions": versions(), "tasks": tasks_info, "aggregates": aggs, "runs": rows,
        "probe_aggregates": probe_aggs, "probes": probes,
        "differences": DIFFERENCES, "seconds": time.perf_counter() - started,
    }, indent=2, default=float))
    print(f"\nwrote {out}  ({time.perf_counter() - started:.0f}s in all)")


if __name__ == "__main__":
    main()
