"""The lean GPT-2 decoder computes what transformers' GPT2LMHeadModel computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rl4gen.config import GenerationConfig
from rl4gen.models import fast_gpt2
from rl4gen.models.char_gpt import build_tiny_gpt

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("activation", ["gelu", "gelu_new"])
def test_prefill_and_steps_match_the_full_forward(activation: str) -> None:
    torch.manual_seed(0)
    model = build_tiny_gpt(20, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    model.config.activation_function = activation
    model = type(model)(model.config).eval()  # rebuild so the activation module matches
    assert fast_gpt2.supports(model)
    b, p, t = 5, 7, 6
    prompt = torch.randint(3, 20, (b, p))
    mask = torch.ones(b, p, dtype=torch.long)
    for row, pad in enumerate([0, 2, 6, 1, 3]):  # left padding of different widths
        mask[row, :pad] = 0
        prompt[row, :pad] = 0
    new = torch.randint(3, 20, (b, t))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        dec = fast_gpt2.GPT2FastDecoder(model, b, p + t)
        got = [dec.prefill(prompt, mask, positions)]
        pos = positions[:, -1] + 1
        for j in range(t - 1):
            got.append(dec.step(new[:, j], pos))
            pos = pos + 1
        ids = torch.cat([prompt, new], 1)
        full_mask = torch.cat([mask, torch.ones(b, t, dtype=torch.long)], 1)
        full_pos = (full_mask.cumsum(-1) - 1).clamp(min=0)
        ref = model(input_ids=ids, attention_mask=full_mask, position_ids=full_pos).logits[:, p - 1 : p + t - 1]
    got_t = torch.stack(got, 1)
    assert torch.isfinite(got_t).all()
    assert (got_t - ref).abs().max() < 1e-4


def test_unsupported_models_keep_the_general_path(tiny_model_dir: Path) -> None:
    from rl4gen.config import LoraConfig
    from rl4gen.policies.causal_lm import CausalLMPolicy

    lora = CausalLMPolicy.from_pretrained(tiny_model_dir, lora=LoraConfig(r=2, target_modules=["c_attn"]))
    assert not fast_gpt2.supports(lora.model)
    torch.manual_seed(0)
    dropout = build_tiny_gpt(16, n_embd=16, n_layer=1, n_head=2)
    dropout.config.attn_pdrop = 0.1
    assert not fast_gpt2.supports(dropout)


def test_fast_and_general_paths_sample_the_same(tiny_model_dir: Path) -> None:
    from rl4gen.policies.causal_lm import CausalLMPolicy

    policy = CausalLMPolicy.from_pretrained(tiny_model_dir, GenerationConfig(max_completion_length=10))
    prompts = ["1+1=", "123+456=", "9="]
    fast = policy.sample(prompts, 4, generator=torch.Generator().manual_seed(3))
    policy.fast_decoding = False
    slow = policy.sample(prompts, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(fast.actions, slow.actions)
    assert torch.allclose(fast.logprobs, slow.logprobs, atol=1e-5)


# ------------------------------------------------------------------ prompts shared by several rows


def _grouped_batch(t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Three left-padded prompts of different lengths (plus one equal to the first in tokens but
    not in padding), repeated in a non-contiguous order, each row with its own completion and
    completion mask. Returns ids, attention mask, positions, actions, completion mask, P."""
    torch.manual_seed(1)
    p = 7
    prompts = torch.randint(3, 20, (4, p))
    pmask = torch.ones(4, p, dtype=torch.long)
    for r, pad in enumerate([0, 3, 6, 0]):
        pmask[r, :pad] = 0
        prompts[r, :pad] = 0
    prompts[3, 0] = 0  # same tokens as a padded prompt would have, but a real token: a distinct prompt
    pmask[3, 0] = 1
    order = torch.tensor([0, 1, 2, 1, 0, 2, 2, 0, 1, 3, 1])
    b = len(order)
    actions = torch.randint(3, 20, (b, t))
    cmask = torch.ones(b, t)
    for r in range(b):
        cmask[r, int(torch.randint(1, t + 1, ())) :] = 0  # completions ending at different lengths
    ids = torch.cat([prompts[order], actions], 1)
    attn = torch.cat([pmask[order].float(), cmask], 1)
    positions = (attn.long().cumsum(-1) - 1).clamp(min=0)
    return ids, attn, positions, actions, cmask, p


def test_prompt_groups_finds_rows_with_the_same_prompt_wherever_they_are() -> None:
    ids, attn, _, _, _, p = _grouped_batch(4)
    first, inverse = fast_gpt2.prompt_groups(ids[:, :p], attn[:, :p])
    assert len(first) == 4
    for row in range(len(ids)):  # every row maps to a representative with its exact prompt and padding
        rep = first[inverse[row]]
        assert torch.equal(ids[row, :p], ids[rep, :p]) and torch.equal(attn[row, :p], attn[rep, :p])
    assert inverse[0] == inverse[4] == inverse[7] and inverse[2] == inverse[5] == inverse[6]
    assert len(set(inverse.tolist())) == 4  # the row equal in tokens but not in padding stays apart
    distinct = [0, 1, 2, 9]
    assert fast_gpt2.prompt_groups(ids[distinct, :p], attn[distinct, :p]) is None  # nothing to share


def _forward_and_grads(
    model: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor, positions: torch.Tensor, actions: torch.Tensor,
    cmask: torch.Tensor, p: int, **flags: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Logits, hidden states, log-probs and parameter gradients of a masked, row-weighted loss."""
    model.zero_grad()
    logits, hidden = fast_gpt2.completion_hidden(model, ids, attn, positions, p, **flags)
    logp = torch.log_softmax(logits, -1).gather(-1, actions[..., None]).squeeze(-1)
    weights = torch.linspace(-1.0, 1.0, len(ids))[:, None]  # rows pull in different directions
    ((logp + hidden.sum(-1)) * cmask * weights).sum().backward()
    grads = {n: q.grad.clone() for n, q in model.named_parameters()}
    return logits.detach(), hidden.detach(), logp.detach(), grads


@pytest.mark.parametrize("t", [6, 1])
@pytest.mark.parametrize(("share", "skip"), [(True, False), (True, True), (False, True)])
def test_shared_prompt_and_skipped_padding_match_the_full_forward_with_gradients(t: int, share: bool, skip: bool) -> None:
    torch.manual_seed(0)
    model = build_tiny_gpt(20, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    ids, attn, positions, actions, cmask, p = _grouped_batch(t)
    lf, hf, pf, gf = _forward_and_grads(model, ids, attn, positions, actions, cmask, p, share_prompts=False)
    ls, hs, ps, gs = _forward_and_grads(model, ids, attn, positions, actions, cmask, p, share_prompts=share, skip_padding=skip)
    assert lf.shape == ls.shape == (len(ids), t, 20)
    counted = cmask.bool() if skip else torch.ones_like(cmask, dtype=torch.bool)  # skipped padding differs
    assert torch.allclose(ls[counted], lf[counted], atol=1e-5) and torch.allclose(hs[counted], hf[counted], atol=1e-5)
    assert torch.allclose(ps[counted], pf[counted], atol=1e-5)
    for name, grad in gf.items():
        assert grad.abs().max() > 0, name
        assert torch.allclose(gs[name], grad, rtol=1e-4, atol=1e-5), name
    if skip and t > 1:  # padding was really skipped: some states after a row's end are not the model's
        assert not torch.allclose(hs[~counted], hf[~counted], atol=1e-3)
    with torch.no_grad():  # and all are what transformers computes where a token counts
        ref = model(input_ids=ids, attention_mask=attn, position_ids=positions).logits[:, p - 1 : -1]
    assert ((ls - ref).abs() * cmask[..., None]).max() < 1e-4


def test_skipped_padding_when_every_row_ends_early() -> None:
    """One bucket narrower than the batch (every row ends at the same early step, as in a
    micro-batch cut from a longer rollout): rows keep their order and values."""
    torch.manual_seed(0)
    model = build_tiny_gpt(20, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    ids, attn, positions, actions, cmask, p = _grouped_batch(6)
    cmask[:] = 0
    cmask[:, :2] = 1
    attn[:, p:] = cmask
    positions = (attn.long().cumsum(-1) - 1).clamp(min=0)
    full = _forward_and_grads(model, ids, attn, positions, actions, cmask, p, share_prompts=False)
    skip = _forward_and_grads(model, ids, attn, positions, actions, cmask, p, skip_padding=True)
    counted = cmask.bool()
    assert torch.allclose(skip[2][counted], full[2][counted], atol=1e-5)
    for name, grad in full[3].items():
        assert torch.allclose(skip[3][name], grad, rtol=1e-4, atol=1e-5), name


def test_length_buckets_cover_every_row_once_longest_first() -> None:
    lengths = torch.tensor([3, 0, 5, 5, 1, 2, 5, 4])
    buckets = fast_gpt2.length_buckets(lengths, max_buckets=4)
    rows = torch.cat([r for r, _ in buckets])
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    widths = [w for _, w in buckets]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == len(widths)  # same widths merged
    for r, w in buckets:
        assert int(lengths[r].max()) == w
    assert [w for _, w in fast_gpt2.length_buckets(torch.full((6,), 4))] == [4]


def test_shared_prefill_matches_the_unshared_one() -> None:
    torch.manual_seed(0)
    model = build_tiny_gpt(20, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    ids, attn, positions, actions, _, p = _grouped_batch(3)
    prompt, pmask, ppos = ids[:, :p], attn[:, :p].long(), positions[:, :p]
    out = {}
    with torch.no_grad():
        for share in (False, True):
            dec = fast_gpt2.GPT2FastDecoder(model, len(ids), p + 3)
            got = [dec.prefill(prompt, pmask, ppos, share_prompts=share)]
            pos = ppos[:, -1] + 1
            for j in range(2):
                got.append(dec.step(actions[:, j], pos))
                pos = pos + 1
            out[share] = torch.stack(got, 1)
    assert torch.allclose(out[True], out[False], atol=1e-5)


def test_policy_scores_and_samples_the_same_with_and_without_sharing_and_skipping(tiny_model_dir: Path) -> None:
    from rl4gen.policies.causal_lm import CausalLMPolicy

    policy = CausalLMPolicy.from_pretrained(tiny_model_dir, GenerationConfig(max_completion_length=6), use_reference=True)
    prompts = ["1+1=", "123+456=", "9="]
    rollouts, logps, refs = [], [], []
    for share in (True, False):
        policy.share_prompts = policy.skip_padding = share
        rollouts.append(policy.sample(prompts, 4, generator=torch.Generator().manual_seed(3)))
        batch = rollouts[0].select([5, 0, 11, 4, 1, 8])  # groups not contiguous, of sizes 2 and 1
        logps.append(policy.log_probs(batch))
        refs.append(policy.ref_log_probs(batch))
    assert torch.equal(rollouts[0].actions, rollouts[1].actions)
    assert torch.allclose(rollouts[0].logprobs, rollouts[1].logprobs, atol=1e-5)
    assert logps[0].requires_grad
    counted = batch.mask.bool()
    assert torch.allclose(logps[0][counted], logps[1][counted], atol=1e-5)
    assert torch.allclose(refs[0][counted], refs[1][counted], atol=1e-5)
