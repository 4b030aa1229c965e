"""Live scoring: any user-item pair of a stored run, through the run's saved models.

A pair is encoded exactly as the task builder encoded samples (the run stores the per-user and
per-item id tables, the rating levels and the prompt settings in `task-features.safetensors`):
the user's ratings strictly before `as_of` (default: all of them) give the history, the last
K feed the CRMs and the last `prompt_history` the LLM's prompt. CRMs are rebuilt from their
configs and safetensors weights; a routed method's LLM is the base model plus its LoRA state.
Scoring a stored sample at its own timestamp reproduces the stored probabilities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from engine.data.task import EntityCodes, FeatureSchema, sample_prompt
from engine.errors import DuetError, StoreError
from engine.models import build_crm, crm_config
from engine.models.generation import Decoding, generate_cached
from engine.routing import binary_entropy
from engine.store import FEATURES_STEM, RunReader


@dataclass(frozen=True)
class Pair:
    """One user-item pair encoded for the run's models."""

    user: str
    item: str
    title: str
    as_of: int | None  # history = ratings strictly before this timestamp (None: all)
    history: pd.DataFrame  # the K ratings the CRMs see: item, title, rating, timestamp
    batch: dict[str, torch.Tensor]  # a one-row model batch
    prompt: str
    own_rating: float | None  # the user's rating of this item in the data, if any


@dataclass(frozen=True)
class GeneratedScore:
    """CoRA on one pair: the base LLM, with the pair's generated weights, and with the
    weights generated for another user's embedding (the same prompt each time)."""

    p_base: float
    p_cora: float
    swap_user: str | None
    p_swapped: float | None


@dataclass(frozen=True)
class RoutedScore:
    """A routed method on one pair: its CRM, its LLM and where the threshold sends it."""

    p_crm: float
    p_llm: float
    entropy: float
    route: str  # "LLM" or "CRM"
    p: float  # the routed probability


class PairScorer:
    """Encodes and scores pairs for one stored run; models load on first use and stay."""

    def __init__(self, reader: RunReader) -> None:
        self.reader = reader
        tensors, meta = reader.load_tensors(FEATURES_STEM)
        schema = json.loads(meta["schema"])
        schema["sparse_fields"] = tuple(tuple(f) for f in schema["sparse_fields"])
        self.schema = FeatureSchema(**schema)
        self.codes = EntityCodes(tensors["user_codes"].numpy(), tensors["item_codes"].numpy(),
                                 tensors["item_tags"].numpy())
        self.rating_levels = tensors["rating_levels"].numpy()
        self.template = meta["prompt_template"]
        self.prompt_history = int(meta["prompt_history"])
        self.min_history = int(meta.get("min_history", 0))
        users, items = reader.frame("users"), reader.frame("items")
        self.user_idx = dict(zip(users["user"].astype(str), users["idx"].astype(int)))
        self.item_idx = dict(zip(items["item"].astype(str), items["idx"].astype(int)))
        self.titles = items.sort_values("idx")["title"].astype(str).to_numpy()
        self.methods = reader.methods()
        # a stored run never changes: read each method's weight files once
        self.stems = {m: reader.weight_files(m) for m in self.methods["method"]}
        self._crms: dict[str, nn.Module] = {}
        self._llms: dict[str, Any] = {}
        self._generated: dict[str, tuple[Any, Any, dict[str, torch.Tensor]]] = {}

    # --- what the run can score ---------------------------------------------------------
    def crm_specs(self) -> dict[str, tuple[str, dict, str, str]]:
        """CRM name -> (model, model options, method whose weights hold it, weights stem).
        Plain CRM methods, and each routed method's own CRM (CoReLLa's stage-2 CRM)."""
        out = {}
        for row in self.methods.itertuples():
            config = json.loads(row.config) if row.config else {}
            stems = self.stems[row.method]
            if row.kind == "crm" and "model" in config and row.method in stems:
                out[row.method] = (config["model"], config.get("model_config", {}),
                                   row.method, row.method)
            inner = config.get("config", {})
            if f"{row.method}_crm" in stems and "crm" in inner:
                out[f"{row.method}_crm"] = (inner["crm"], inner.get("crm_options", {}),
                                            row.method, f"{row.method}_crm")
        return out

    def llm_methods(self) -> list[str]:
        """Methods that stored a LoRA adapter for their LLM (CoReLLa)."""
        return [m for m, stems in self.stems.items() if f"{m}_lora" in stems]

    def generated_methods(self) -> list[str]:
        """Methods that stored generated weights and their pair tables (CoRA)."""
        return [m for m, stems in self.stems.items()
                if f"{m}_generated_cora" in stems and f"{m}_pair_tables" in stems]

    # --- encoding -----------------------------------------------------------------------
    def pair(self, user: str, item: str, as_of: int | None = None) -> Pair:
        user, item = str(user), str(item)
        if user not in self.user_idx:
            raise DuetError(f"user {user!r} is not in run {self.reader.run_id}")
        if item not in self.item_idx:
            raise DuetError(f"item {item!r} is not in run {self.reader.run_id}")
        ratings = self.reader.history(user)
        own = ratings.loc[ratings["item"].astype(str) == item, "rating"]
        if as_of is not None:
            ratings = ratings[ratings["timestamp"] < as_of]
        k = self.schema.history_len
        recent = ratings.tail(k)
        hist_items = np.zeros(k, dtype=np.int64)
        hist_levels = np.zeros(k, dtype=np.int64)
        if len(recent):
            hist_items[k - len(recent):] = [self.item_idx[str(i)] for i in recent["item"]]
            levels = np.searchsorted(self.rating_levels, recent["rating"].to_numpy()) + 1
            hist_levels[k - len(recent):] = levels
        u, i = self.user_idx[user], self.item_idx[item]
        batch = {
            "sparse": self.codes.sparse_rows(np.array([u]), np.array([i])),
            "tags": self.codes.item_tags[[i]],
            "hist_items": hist_items[None, :],
            "hist_ratings": hist_levels[None, :],
        }
        prompt = sample_prompt(self.titles, self.rating_levels, hist_items, hist_levels, i,
                               self.template, self.prompt_history)
        history = recent.assign(title=[self.titles[self.item_idx[str(j)] - 1]
                                       for j in recent["item"]])
        return Pair(user=user, item=item, title=self.titles[i - 1], as_of=as_of,
                    history=history[["item", "title", "rating", "timestamp"]],
                    batch={key: torch.from_numpy(np.ascontiguousarray(v))
                           for key, v in batch.items()},
                    prompt=prompt, own_rating=float(own.iloc[-1]) if len(own) else None)

    # --- scoring ------------------------------------------------------------------------
    def crm(self, name: str) -> nn.Module:
        if name not in self._crms:
            specs = self.crm_specs()
            if name not in specs:
                raise StoreError(f"run {self.reader.run_id} has no stored CRM {name!r}; "
                                 f"stored: {', '.join(specs) or 'none'}")
            model, options, method, stem = specs[name]
            crm = build_crm(model, self.schema, crm_config(model, options))
            crm.load_state_dict(self.reader.load_weights(method, stem))
            self._crms[name] = crm.eval()
        return self._crms[name]

    @torch.inference_mode()
    def score_crms(self, pair: Pair, names: list[str] | None = None) -> dict[str, float]:
        """P(click) of the pair from each stored CRM (all by default)."""
        names = list(self.crm_specs()) if names is None else names
        return {n: float(torch.sigmoid(self.crm(n)(pair.batch)).reshape(-1)[0]) for n in names}

    def llm(self, method: str):
        """The method's LLM: the base model with its stored LoRA merged, ready to score."""
        if method not in self._llms:
            from engine.models.llm import LLM, LLMConfig

            if method not in self.llm_methods():
                raise StoreError(f"run {self.reader.run_id}: method {method!r} stored no LLM")
            row = self.methods[self.methods["method"] == method].iloc[0]
            config = json.loads(row["config"])["config"]
            llm = LLM(LLMConfig(**config["llm"]))
            llm.add_lora(r=config["lora_r"], alpha=config["lora_alpha"],
                         top_layers=config.get("lora_top_layers", 0))
            llm.load_lora_state(self.reader.load_weights(method, f"{method}_lora"))
            llm.for_inference()
            self._llms[method] = llm
        return self._llms[method]

    def score_llm(self, pair: Pair, method: str) -> float:
        return float(self.llm(method).score([pair.prompt])[0])

    def score_routed(self, pair: Pair, method: str, threshold: float) -> RoutedScore:
        """The routed method on the pair: CRM entropy above `threshold` sends it to the LLM."""
        p_crm = self.score_crms(pair, [f"{method}_crm"])[f"{method}_crm"]
        p_llm = self.score_llm(pair, method)
        entropy = float(binary_entropy(np.array([p_crm]))[0])
        to_llm = entropy > threshold
        return RoutedScore(p_crm=p_crm, p_llm=p_llm, entropy=entropy,
                           route="LLM" if to_llm else "CRM", p=p_llm if to_llm else p_crm)

    def generated(self, method: str) -> tuple[Any, Any, dict[str, torch.Tensor]]:
        """CoRA's frozen LLM with its generated-weights module hooked in, and the user and
        item tables its generator reads."""
        if method not in self._generated:
            from engine.models.collab_weights import CollabConfig, CollaborativeWeights
            from engine.models.llm import LLM, LLMConfig

            if method not in self.generated_methods():
                raise StoreError(f"run {self.reader.run_id}: method {method!r} stored no "
                                 "generated weights")
            row = self.methods[self.methods["method"] == method].iloc[0]
            config = json.loads(row["config"])["config"]
            llm = LLM(LLMConfig(**config["llm"]))
            llm.model.float().eval()
            collab = config["collab"]
            tables = self.reader.load_weights(method, f"{method}_pair_tables")
            weights = CollaborativeWeights(llm._backbone(), tables["users"].shape[1],
                                           CollabConfig(**{**collab,
                                                           "targets": tuple(collab["targets"])}))
            # runs stored before the generator standardised its inputs lack those buffers:
            # the identity (zero shift, unit scale) is what they were trained with
            weights.load_state_dict({**weights.state_dict(), **self.reader.load_weights(
                method, f"{method}_generated_cora")})
            self._generated[method] = (llm, weights.eval(), tables)
        return self._generated[method]

    @torch.inference_mode()
    def score_generated(self, pair: Pair, method: str, swap_user: str | None = None
                        ) -> GeneratedScore:
        """P(yes) of the pair's prompt without generated weights, with the pair's, and with
        the weights generated from `swap_user`'s embedding instead of the pair's user."""
        llm, weights, tables = self.generated(method)
        seqs = llm.tokenize([pair.prompt])
        user_code = int(pair.batch["sparse"][0, 0])
        item_code = int(pair.batch["sparse"][0, self.schema.item_field])
        e_i = tables["items"][[item_code]]

        def with_user(code: int) -> float:
            with weights.active(weights.generator(tables["users"][[code]], e_i)):
                return float(torch.sigmoid(llm.forward_ids(seqs)[0])[0])

        base = float(torch.sigmoid(llm.forward_ids(seqs)[0])[0])
        swapped = None
        if swap_user is not None:
            if str(swap_user) not in self.user_idx:
                raise DuetError(f"user {swap_user!r} is not in run {self.reader.run_id}")
            swapped = with_user(self.user_idx[str(swap_user)])
        return GeneratedScore(p_base=base, p_cora=with_user(user_code),
                              swap_user=None if swap_user is None else str(swap_user),
                              p_swapped=swapped)

    # --- text on demand -------------------------------------------------------------------
    def explain(self, prompt: str, method: str, decoding: Decoding = Decoding()) -> str:
        """The method's LLM's own words for a prompt: its answer, or its chain of thought
        (decoding.style "reasoning"); generated once, then read from the disk cache."""
        return generate_cached(self.llm(method), [prompt], decoding)[0]
