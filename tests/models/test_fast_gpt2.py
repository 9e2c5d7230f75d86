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
