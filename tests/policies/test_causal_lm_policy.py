"""rl4gen.policies.causal_lm.CausalLMPolicy on a tiny random character GPT (see conftest.py).

The model has n_positions=32, so prompts here stay short and max_completion_length <= 16.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rl4gen.config import GenerationConfig, LoraConfig
from rl4gen.core.rollout import Rollout
from rl4gen.policies.causal_lm import CausalLMPolicy, ModelLoadError

PAD, EOS = 0, 1
PROMPTS = ["1+1=", "12+34=", "7-", "999-1000="]  # 4, 6, 2 and 9 characters: varied left padding
T_MAX = 12


pytestmark = pytest.mark.usefixtures("one_thread")


def gen(**kw) -> GenerationConfig:
    kw.setdefault("max_completion_length", T_MAX)
    return GenerationConfig(**kw)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def policy(tiny_model_dir: Path) -> CausalLMPolicy:
    """A shared policy whose weights no test changes."""
    return CausalLMPolicy.from_pretrained(tiny_model_dir, gen())


def next_token_logits(model, prompt_ids: torch.Tensor) -> torch.Tensor:
    """Logits for the token after an unpadded (1, P) prompt, from a plain forward pass."""
    with torch.no_grad():
        return model(input_ids=prompt_ids).logits[0, -1].float()


def ids_of(policy: CausalLMPolicy, text: str) -> list[int]:
    return policy.tokenizer(text, add_special_tokens=False).input_ids


def masked_max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float(((a.detach() - b.detach()).abs() * mask).max())


# ------------------------------------------------------------------------------ shapes


def test_from_pretrained_sets_source_and_tokenizer(policy, tiny_model_dir):
    assert policy.source == str(tiny_model_dir)
    assert policy.eos_token_id == EOS and policy.pad_token_id == PAD
    assert policy.tokenizer.padding_side == "left"
    assert policy.ref_model is None and not policy.is_lora
    assert not policy.model.training


@pytest.mark.parametrize("num_samples", [1, 3])
def test_sample_shapes_groups_and_contexts(policy, num_samples):
    contexts = ["1+1=", {"prompt": "12+34=", "answer": 46}, "7-"]
    r = policy.sample(contexts, num_samples, generator=seeded(0))
    assert isinstance(r, Rollout)
    b = len(contexts) * num_samples
    assert r.actions.ndim == 2 and r.actions.shape[0] == b
    t = r.actions.shape[1]
    assert 1 <= t <= T_MAX
    assert r.mask.shape == r.logprobs.shape == (b, t)
    assert r.actions.dtype == torch.long
    assert r.truncated is not None and r.truncated.shape == (b,) and r.truncated.dtype == torch.bool
    assert r.group_ids.tolist() == torch.arange(len(contexts)).repeat_interleave(num_samples).tolist()
    assert r.contexts == [c for c in contexts for _ in range(num_samples)]
    assert len(r.samples) == b and all(isinstance(s, str) for s in r.samples)
    assert not r.logprobs.requires_grad
    assert bool((r.logprobs <= 0).all())


def test_prompt_ids_are_left_padded(policy):
    r = policy.sample(PROMPTS, 2, generator=seeded(1))
    ids, mask = r.prompt_ids, r.prompt_mask
    assert ids is not None and mask is not None
    assert ids.shape == mask.shape == (len(PROMPTS) * 2, max(len(p) for p in PROMPTS))
    assert bool((mask[:, -1] == 1).all())
    assert bool((ids[:, -1] != PAD).all())
    for row, prompt in enumerate(p for p in PROMPTS for _ in range(2)):
        n = len(prompt)
        pad = ids.shape[1] - n
        assert mask[row].tolist() == [0] * pad + [1] * n
        assert ids[row, :pad].tolist() == [PAD] * pad
        assert ids[row, pad:].tolist() == ids_of(policy, prompt)


def test_mapping_context_uses_prompt_entry(policy):
    a = policy.sample([{"prompt": "12+34="}], 2, generator=seeded(3))
    b = policy.sample(["12+34="], 2, generator=seeded(3))
    assert torch.equal(a.prompt_ids, b.prompt_ids)
    assert torch.equal(a.actions, b.actions)
    assert a.contexts == [{"prompt": "12+34="}] * 2


# ------------------------------------------------------------------------------ mask semantics


def test_mask_ends_at_first_eos_and_truncated_flags(policy):
    r = policy.sample(PROMPTS, 16, generator=seeded(2))
    has_eos = (r.actions == EOS).any(dim=1)
    assert bool(has_eos.any()) and bool((~has_eos).any())  # the seed yields both kinds of rows
    for row in range(len(r)):
        acts = r.actions[row].tolist()
        m = r.mask[row].tolist()
        if EOS in acts:
            k = acts.index(EOS)
            assert m == [1.0] * (k + 1) + [0.0] * (len(acts) - k - 1)
            assert acts[k + 1 :] == [PAD] * (len(acts) - k - 1)
            assert not bool(r.truncated[row])
        else:
            assert m == [1.0] * len(acts)
            assert bool(r.truncated[row])
    assert r.truncated.tolist() == (~has_eos).tolist()


def test_samples_decode_masked_tokens_without_special_tokens(policy):
    r = policy.sample(PROMPTS, 8, generator=seeded(4))
    alphabet = set("0123456789+-=")
    for row in range(len(r)):
        n = int(r.mask[row].sum())
        kept = [t for t in r.actions[row, :n].tolist() if t > 2]  # drop pad/eos/unk
        assert r.samples[row] == policy.tokenizer.decode(kept)
        assert set(r.samples[row]) <= alphabet
        assert "<" not in r.samples[row]


def test_width_is_longest_counted_row(policy):
    """Decoding stops once every row has ended: T is the longest counted row (or the max)."""
    for seed, prompts, n in [(5, ["1+1="], 64), (9, ["7-"], 1), (10, PROMPTS, 2)]:
        r = policy.sample(prompts, n, generator=seeded(seed))
        longest = int(r.mask.sum(dim=1).max())
        assert r.actions.shape[1] == (T_MAX if bool(r.truncated.any()) else longest)


# ------------------------------------------------------------------------------ log-prob agreement


@pytest.mark.parametrize(
    "config",
    [
        {"temperature": 1.0},
        {"temperature": 0.7},
        {"temperature": 1.3, "top_k": 3},
        {"temperature": 0.7, "top_p": 0.8},
    ],
    ids=["t1.0", "t0.7", "t1.3-topk3", "t0.7-topp0.8"],
)
def test_sampling_logprobs_equal_recomputed_logprobs(tiny_model_dir, config):
    pol = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(**config))
    prompts = [*PROMPTS, ""]
    r = pol.sample(prompts, 4, generator=seeded(6))
    assert r.prompt_mask is not None and bool((r.prompt_mask == 0).any())  # left padding in play
    lp = pol.log_probs(r)
    assert lp.shape == r.logprobs.shape
    assert lp.requires_grad
    assert masked_max_diff(lp, r.logprobs, r.mask) < 1e-5
    # The PPO/GRPO ratio at the first iteration is exactly 1 on counted tokens.
    ratio = torch.exp(lp.detach() - r.logprobs)[r.mask.bool()]
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5)
    # Log-probs are taken before truncation, at the sampling temperature.
    with torch.no_grad():
        full = pol.model(input_ids=r.prompt_ids[:1, -len(PROMPTS[0]):]).logits[0, -1] / config["temperature"]
    first = torch.log_softmax(full, -1)[r.actions[0, 0]]
    assert abs(float(first) - float(r.logprobs[0, 0])) < 1e-5


def test_log_probs_backward_reaches_parameters(tiny_model_dir):
    pol = CausalLMPolicy.from_pretrained(tiny_model_dir, gen())
    r = pol.sample(PROMPTS, 2, generator=seeded(7))
    lp = pol.log_probs(r)
    loss = -(lp * r.mask).sum()
    loss.backward()
    grads = [p.grad for p in pol.trainable_parameters()]
    assert all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    assert all(bool(torch.isfinite(g).all()) for g in grads)


def test_entropy_extra(policy):
    r = policy.sample(PROMPTS, 3, generator=seeded(8))
    ent = r.extras["entropy"]
    assert ent.shape == r.actions.shape
    assert bool((ent >= 0).all())
    assert bool((ent <= math.log(len(policy.tokenizer)) + 1e-5).all())
    # First-step entropy of row 0 matches the model's next-token distribution for its prompt.
    logits = next_token_logits(policy.model, torch.tensor([ids_of(policy, PROMPTS[0])]))
    logp = torch.log_softmax(logits, -1)
    assert abs(float(-(logp.exp() * logp).sum()) - float(ent[0, 0])) < 1e-5


# ------------------------------------------------------------------------------ determinism and decoding


def test_same_seed_same_actions_different_seed_different(policy):
    a = policy.sample(PROMPTS, 4, generator=seeded(11))
    b = policy.sample(PROMPTS, 4, generator=seeded(11))
    c = policy.sample(PROMPTS, 4, generator=seeded(12))
    assert torch.equal(a.actions, b.actions)
    assert torch.equal(a.logprobs, b.logprobs)
    assert a.samples == b.samples
    assert a.actions.shape != c.actions.shape or not torch.equal(a.actions, c.actions)


def test_greedy_is_deterministic(policy):
    a = policy.sample(PROMPTS, 2, generator=seeded(1), greedy=True)
    b = policy.sample(PROMPTS, 2, generator=seeded(2), greedy=True)
    c = policy.sample(PROMPTS, 2, greedy=True)
    assert torch.equal(a.actions, b.actions) and torch.equal(a.actions, c.actions)
    # Both samples of one prompt are the same.
    assert torch.equal(a.actions[0::2], a.actions[1::2])
    assert policy.generate(PROMPTS) == a.samples[0::2]


def test_greedy_first_token_is_argmax(policy):
    r = policy.sample(PROMPTS, 1, greedy=True)
    for row, prompt in enumerate(PROMPTS):
        logits = next_token_logits(policy.model, torch.tensor([ids_of(policy, prompt)]))
        assert int(r.actions[row, 0]) == int(logits.argmax())


def test_greedy_matches_hand_decoding_without_padding_or_cache(policy):
    r = policy.sample(PROMPTS, 1, greedy=True)
    for row, prompt in enumerate(PROMPTS):
        ids = ids_of(policy, prompt)
        out: list[int] = []
        for _ in range(T_MAX):
            tok = int(next_token_logits(policy.model, torch.tensor([ids + out])).argmax())
            out.append(tok)
            if tok == EOS:
                break
        n = int(r.mask[row].sum())
        assert r.actions[row, :n].tolist() == out


def test_top_k_1_equals_greedy(tiny_model_dir, policy):
    pol = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(top_k=1))
    greedy = policy.sample(PROMPTS, 3, greedy=True)
    sampled = pol.sample(PROMPTS, 3, generator=seeded(13))
    assert torch.equal(sampled.actions, greedy.actions)
    assert torch.equal(sampled.mask, greedy.mask)


def test_tiny_top_p_equals_greedy(tiny_model_dir, policy):
    pol = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(top_p=1e-6))
    greedy = policy.sample(PROMPTS, 3, greedy=True)
    sampled = pol.sample(PROMPTS, 3, generator=seeded(14))
    assert torch.equal(sampled.actions, greedy.actions)


def test_unfiltered_sampling_produces_non_argmax_tokens(policy):
    prompt = "12+34="
    r = policy.sample([prompt], 64, generator=seeded(15))
    argmax = int(next_token_logits(policy.model, torch.tensor([ids_of(policy, prompt)])).argmax())
    first = r.actions[:, 0]
    assert bool((first != argmax).any())
    assert len(set(first.tolist())) >= 3


def test_top_k_restricts_first_token(tiny_model_dir, policy):
    prompt = "12+34="
    pol = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(top_k=3))
    r = pol.sample([prompt], 64, generator=seeded(16))
    logits = next_token_logits(policy.model, torch.tensor([ids_of(policy, prompt)]))
    top3 = set(torch.topk(logits, 3).indices.tolist())
    assert set(r.actions[:, 0].tolist()) <= top3
    assert len(set(r.actions[:, 0].tolist())) >= 2


def test_top_p_restricts_first_token_to_nucleus(tiny_model_dir, policy):
    prompt = "12+34="
    top_p = 0.5
    pol = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(top_p=top_p))
    r = pol.sample([prompt], 64, generator=seeded(17))
    probs = torch.softmax(next_token_logits(policy.model, torch.tensor([ids_of(policy, prompt)])), -1)
    p_sorted, order = torch.sort(probs, descending=True)
    before = p_sorted.cumsum(0) - p_sorted
    nucleus = set(order[before < top_p].tolist())
    assert len(nucleus) < len(probs)
    assert set(r.actions[:, 0].tolist()) <= nucleus


@pytest.mark.parametrize("max_len", [1, 3, 16])
def test_max_completion_length_respected(tiny_model_dir, max_len):
    pol = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(max_completion_length=max_len))
    r = pol.sample(PROMPTS, 8, generator=seeded(18))
    assert r.actions.shape[1] <= max_len
    assert all(len(s) <= max_len for s in r.samples)
    assert r.truncated.tolist() == (~(r.actions == EOS).any(dim=1)).tolist()
    if max_len == 1:
        assert r.actions.shape[1] == 1
        assert r.mask.tolist() == [[1.0]] * len(r)


# ------------------------------------------------------------------------------ stop strings


def test_single_token_stop(tiny_model_dir):
    plain = CausalLMPolicy.from_pretrained(tiny_model_dir, gen())
    stop = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(stop=["+"]))
    plus = ids_of(stop, "+")
    assert len(plus) == 1
    plus = plus[0]
    a = plain.sample(PROMPTS, 16, generator=seeded(19))
    r = stop.sample(PROMPTS, 16, generator=seeded(19))
    hit = 0
    for row in range(len(r)):
        n = int(r.mask[row].sum())
        acts = r.actions[row].tolist()
        assert "+" not in r.samples[row]
        assert plus not in acts[: n - 1]
        if acts[n - 1] == plus:
            hit += 1
            assert not bool(r.truncated[row])
            assert acts[n:] == [PAD] * (len(acts) - n)
            assert r.mask[row, n:].sum() == 0
        # Same seed: the stopped completion is the unstopped one cut at its first "+".
        assert r.samples[row] == a.samples[row].split("+")[0]
    assert hit > 0
    assert masked_max_diff(stop.log_probs(r), r.logprobs, r.mask) < 1e-5


def test_multi_token_stop_string(tiny_model_dir):
    plain = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(max_completion_length=16))
    a = plain.sample(PROMPTS, 32, generator=seeded(20))
    stop_str = "=="
    assert any(stop_str in s for s in a.samples)  # the seed produces the stop string somewhere
    pol = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(max_completion_length=16, stop=[stop_str]))
    r = pol.sample(PROMPTS, 32, generator=seeded(20))
    for row in range(len(r)):
        assert stop_str not in r.samples[row]
        assert r.samples[row] == a.samples[row].split(stop_str)[0]
        n = int(r.mask[row].sum())
        text = policy_text(pol, r.actions[row, :n].tolist())
        if stop_str in a.samples[row]:
            # Counted tokens end exactly where the stop string completes.
            assert text.endswith(stop_str) and text.count(stop_str) == 1
            assert not bool(r.truncated[row])
        else:
            assert stop_str not in text
    assert masked_max_diff(pol.log_probs(r), r.logprobs, r.mask) < 1e-5


def policy_text(pol: CausalLMPolicy, ids: list[int]) -> str:
    return pol.tokenizer.decode(ids, skip_special_tokens=True)


# ------------------------------------------------------------------------------ reference


def test_ref_log_probs_without_reference_raises(policy):
    r = policy.sample(PROMPTS[:1], 2, generator=seeded(21))
    with pytest.raises(RuntimeError, match="reference"):
        policy.ref_log_probs(r)


def test_full_model_reference_stays_frozen(tiny_model_dir):
    pol = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(), use_reference=True)
    assert pol.ref_model is not None
    assert all(not p.requires_grad for p in pol.ref_model.parameters())
    r = pol.sample(PROMPTS, 4, generator=seeded(22))
    before = pol.log_probs(r).detach()
    ref0 = pol.ref_log_probs(r)
    assert not ref0.requires_grad
    assert masked_max_diff(ref0, before, r.mask) < 1e-5

    opt = torch.optim.SGD(pol.trainable_parameters(), lr=1.0)
    loss = -(pol.log_probs(r) * r.mask).sum() / r.mask.sum()
    loss.backward()
    opt.step()

    after = pol.log_probs(r).detach()
    ref1 = pol.ref_log_probs(r)
    assert masked_max_diff(after, before, r.mask) > 1e-3
    assert torch.equal(ref1, ref0)
    # The update raised the likelihood of the sampled tokens.
    assert float((after * r.mask).sum()) > float((before * r.mask).sum())


def test_full_model_reference_unaffected_by_noise(tiny_model_dir):
    pol = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(), use_reference=True)
    r = pol.sample(PROMPTS, 2, generator=seeded(23))
    ref0 = pol.ref_log_probs(r)
    before = pol.log_probs(r).detach()
    with torch.no_grad():
        pol.model.transformer.h[0].mlp.c_fc.weight.add_(torch.randn_like(pol.model.transformer.h[0].mlp.c_fc.weight))
    assert masked_max_diff(pol.log_probs(r), before, r.mask) > 1e-3
    assert torch.equal(pol.ref_log_probs(r), ref0)


# ------------------------------------------------------------------------------ LoRA


LORA = LoraConfig(r=4, target_modules=["c_attn"])


def perturb_lora(pol: CausalLMPolicy, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pol.model.named_parameters():
            if "lora_" in name:
                p.add_(0.5 * torch.randn(p.shape, generator=g))


@pytest.fixture()
def lora_policy(tiny_model_dir) -> CausalLMPolicy:
    return CausalLMPolicy.from_pretrained(tiny_model_dir, gen(), lora=LORA, use_reference=True)


def test_lora_policy_structure(lora_policy):
    assert lora_policy.is_lora
    assert lora_policy.ref_model is None
    trainable = {id(p) for p in lora_policy.trainable_parameters()}
    names = [n for n, p in lora_policy.model.named_parameters() if id(p) in trainable]
    assert names and len(names) == len(trainable)
    assert all("lora_" in n for n in names)
    assert all("c_attn" in n for n in names)
    frozen = [n for n, p in lora_policy.model.named_parameters() if not p.requires_grad]
    assert any("wte" in n for n in frozen)


def test_lora_reference_is_base_model(tiny_model_dir, lora_policy, policy):
    r = lora_policy.sample(PROMPTS, 4, generator=seeded(24))
    base = policy.log_probs(r).detach()
    start = lora_policy.log_probs(r).detach()
    assert masked_max_diff(start, base, r.mask) < 1e-5  # LoRA B starts at zero
    assert masked_max_diff(lora_policy.ref_log_probs(r), base, r.mask) < 1e-5

    perturb_lora(lora_policy)
    moved = lora_policy.log_probs(r)
    assert moved.requires_grad
    assert masked_max_diff(moved, base, r.mask) > 1e-3
    ref = lora_policy.ref_log_probs(r)
    assert masked_max_diff(ref, base, r.mask) < 1e-5
    # The adapter is enabled again after computing the reference.
    assert masked_max_diff(lora_policy.log_probs(r), moved, r.mask) < 1e-6
    # Sampling uses the adapted weights and still agrees with log_probs.
    r2 = lora_policy.sample(PROMPTS, 4, generator=seeded(25))
    assert masked_max_diff(lora_policy.log_probs(r2), r2.logprobs, r2.mask) < 1e-5


def test_lora_save_and_reload(tiny_model_dir, lora_policy, tmp_path):
    perturb_lora(lora_policy, seed=1)
    r = lora_policy.sample(PROMPTS, 3, generator=seeded(26))
    expected = lora_policy.log_probs(r).detach()
    out = tmp_path / "adapter"
    lora_policy.save(out)
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "adapter_config.json").is_file()
    assert not (out / "model.safetensors").exists()

    reloaded = CausalLMPolicy.from_pretrained(out, gen(), use_reference=True)
    assert reloaded.is_lora and reloaded.ref_model is None
    assert all("lora_" in n for n, p in reloaded.model.named_parameters() if p.requires_grad)
    assert masked_max_diff(reloaded.log_probs(r), expected, r.mask) < 1e-5
    assert masked_max_diff(reloaded.ref_log_probs(r), lora_policy.ref_log_probs(r), r.mask) < 1e-5

    fresh = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(), lora=LORA, use_reference=True)
    assert masked_max_diff(fresh.log_probs(r), expected, r.mask) > 1e-3
    fresh.load_weights(out)
    assert masked_max_diff(fresh.log_probs(r), expected, r.mask) < 1e-5


# ------------------------------------------------------------------------------ full-model save/load


def test_full_model_save_and_load_weights(tiny_model_dir, tmp_path):
    pol = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(), use_reference=True)
    r = pol.sample(PROMPTS, 2, generator=seeded(27))
    ref0 = pol.ref_log_probs(r)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in pol.model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    expected = pol.log_probs(r).detach()
    out = tmp_path / "full"
    pol.save(out)
    assert (out / "model.safetensors").is_file()
    assert (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "tokenizer_config.json").is_file()

    reloaded = CausalLMPolicy.from_pretrained(out, gen())
    assert masked_max_diff(reloaded.log_probs(r), expected, r.mask) < 1e-6

    fresh = CausalLMPolicy.from_pretrained(tiny_model_dir, gen(), use_reference=True)
    fresh.load_weights(out)
    saved = dict(pol.model.named_parameters())
    for name, p in fresh.model.named_parameters():
        assert torch.equal(p, saved[name]), name
    assert masked_max_diff(fresh.log_probs(r), expected, r.mask) < 1e-6
    # The reference keeps the starting weights.
    assert torch.equal(fresh.ref_log_probs(r), ref0)


# ------------------------------------------------------------------------------ errors and edge cases


def test_missing_model_dir_raises(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(ModelLoadError) as info:
        CausalLMPolicy.from_pretrained(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_relative_model_dir_raises(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="no-such-model"):
        CausalLMPolicy.from_pretrained("no-such-model")


def test_dir_without_config_raises(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="config.json") as info:
        CausalLMPolicy.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_empty_prompt_list_raises(policy):
    with pytest.raises(ValueError, match="empty"):
        policy.encode_prompts([])
    with pytest.raises(ValueError):
        policy.sample([], 2)


@pytest.mark.parametrize("context", [3, None, {"question": "1+1="}, ["1+1="]])
def test_bad_context_raises_type_error(policy, context):
    with pytest.raises(TypeError):
        policy.sample([context], 1)


def test_empty_prompt_samples_from_bos(policy):
    r = policy.sample([""], 4, generator=seeded(28))
    assert r.prompt_ids.tolist() == [[EOS]] * 4
    assert r.prompt_mask.tolist() == [[1]] * 4
    assert len(r) == 4 and r.actions.shape[1] >= 1
    assert masked_max_diff(policy.log_probs(r), r.logprobs, r.mask) < 1e-5
    # Mixed with a non-empty prompt: the empty one gets BOS as its last (only) real token.
    m = policy.sample(["", "12+34="], 2, generator=seeded(29))
    assert m.prompt_ids[0, -1] == EOS and int(m.prompt_mask[0].sum()) == 1
    assert m.prompt_ids[2, -6:].tolist() == ids_of(policy, "12+34=")
    assert int(m.prompt_mask[2].sum()) == 6
    # First token of the empty-prompt row follows the model's distribution after BOS alone.
    logits = next_token_logits(policy.model, torch.tensor([[EOS]]))
    assert abs(float(torch.log_softmax(logits, -1)[m.actions[0, 0]]) - float(m.logprobs[0, 0])) < 1e-5
    assert masked_max_diff(policy.log_probs(m), m.logprobs, m.mask) < 1e-5


def test_stop_token_ids_end_completions(tiny_model_dir: Path) -> None:
    from rl4gen.policies.causal_lm import CausalLMPolicy

    plus = 13  # "+" in the arithmetic alphabet (pad, eos, unk, 0-9, then "+")
    policy = CausalLMPolicy.from_pretrained(tiny_model_dir, GenerationConfig(max_completion_length=12, stop_token_ids=[plus]))
    rollout = policy.sample(["1+1="] * 16, 4, generator=torch.Generator().manual_seed(0))
    assert any(plus in row for row in rollout.actions.tolist())  # the stop was actually drawn
    for row, m in zip(rollout.actions.tolist(), rollout.mask.tolist()):
        if plus in row:
            at = row.index(plus)
            assert m[: at + 1] == [1.0] * (at + 1) and not any(m[at + 1 :])


def test_generation_stops_at_the_end_of_the_model_context(tiny_model_dir: Path) -> None:
    from rl4gen.config import ConfigError, GenerationConfig
    from rl4gen.policies.causal_lm import CausalLMPolicy

    policy = CausalLMPolicy.from_pretrained(tiny_model_dir, GenerationConfig(max_completion_length=40, stop_token_ids=[]))
    assert policy.context_length() == 32
    policy.eos_token_id = -1  # never stop early: the random model must run into the context's end
    policy._stop_ids = set()
    rollout = policy.sample([{"prompt": "12+3"}], 2, generator=torch.Generator().manual_seed(0))
    assert rollout.actions.shape[1] == 28  # 32 positions - 4 prompt tokens
    assert rollout.truncated is not None and bool(rollout.truncated.all())
    with pytest.raises(ConfigError, match="a prompt of 33 tokens fills the model's context of 32 positions"):
        policy.sample([{"prompt": "1" * 33}], 1)
