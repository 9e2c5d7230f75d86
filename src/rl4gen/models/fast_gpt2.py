"""Lean incremental decoding for transformers' GPT-2, on the model's own parameters.

Sampling is a loop of one-token forward passes; for small models the cost of each pass is mostly
overhead: module dispatch and, above all, the KV cache growing by concatenation (``torch.cat``
copies the whole cache every token, quadratic in length). :class:`GPT2FastDecoder` runs the same
computation as ``GPT2LMHeadModel`` with a preallocated KV cache and ``scaled_dot_product_attention``,
reading the model's parameters in place (no copy: updates to the model are seen at once).

Only plain GPT-2 configurations are accepted (:func:`supports`); anything else — LoRA-wrapped
models, other architectures, unusual attention options — keeps the general transformers path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def supports(model: Any) -> bool:
    """True for a plain ``GPT2LMHeadModel`` whose forward this module reproduces exactly."""
    from transformers import GPT2LMHeadModel

    if type(model) is not GPT2LMHeadModel:
        return False
    c = model.config
    return (
        c.activation_function in _ACTIVATIONS
        and getattr(c, "scale_attn_weights", True)
        and not getattr(c, "scale_attn_by_inverse_layer_idx", False)
        and not getattr(c, "reorder_and_upcast_attn", False)
        and not getattr(c, "add_cross_attention", False)
        and all(abs(getattr(c, k, 0.0)) == 0.0 for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop"))
    )


class GPT2FastDecoder:
    """Prefill + one-token steps with a preallocated KV cache for a ``GPT2LMHeadModel``."""

    def __init__(self, model: Any, batch: int, max_len: int) -> None:
        c = model.config
        t = model.transformer
        self.t = t
        self.lm_head = model.lm_head.weight  # (V, C), tied to wte in GPT-2
        self.n_head = c.n_head
        self.d = c.n_embd
        self.hd = c.n_embd // c.n_head
        self.eps = c.layer_norm_epsilon
        self.act = _ACTIVATIONS[c.activation_function]
        p = next(model.parameters())
        shape = (batch, self.n_head, max_len, self.hd)
        self.k = [torch.empty(shape, dtype=p.dtype, device=p.device) for _ in t.h]
        self.v = [torch.empty(shape, dtype=p.dtype, device=p.device) for _ in t.h]
        self.key_ok = torch.zeros((batch, max_len), dtype=torch.bool, device=p.device)  # (B, L)
        self.length = 0

    def _ln(self, x: Tensor, ln: Any) -> Tensor:
        return F.layer_norm(x, (self.d,), ln.weight, ln.bias, self.eps)

    def _forward(self, ids: Tensor, positions: Tensor, mask: Tensor) -> Tensor:
        """ids, positions (B, S); mask (B, 1, S, L) bool over the cache -> logits (B, S, V)."""
        b, s = ids.shape
        start = self.length
        end = start + s
        x = self.t.wte.weight[ids] + self.t.wpe.weight[positions]  # (B, S, C)
        for i, block in enumerate(self.t.h):
            a = self._ln(x, block.ln_1)
            qkv = torch.addmm(block.attn.c_attn.bias, a.view(-1, self.d), block.attn.c_attn.weight)
            q, k, v = qkv.view(b, s, 3, self.n_head, self.hd).permute(2, 0, 3, 1, 4)  # 3 x (B, H, S, D)
            self.k[i][:, :, start:end] = k
            self.v[i][:, :, start:end] = v
            y = F.scaled_dot_product_attention(q, self.k[i][:, :, :end], self.v[i][:, :, :end], attn_mask=mask)
            y = y.transpose(1, 2).reshape(b * s, self.d)
            x = x + torch.addmm(block.attn.c_proj.bias, y, block.attn.c_proj.weight).view(b, s, self.d)
            m = self._ln(x, block.ln_2).view(-1, self.d)
            m = self.act(torch.addmm(block.mlp.c_fc.bias, m, block.mlp.c_fc.weight))
            x = x + torch.addmm(block.mlp.c_proj.bias, m, block.mlp.c_proj.weight).view(b, s, self.d)
        x = self._ln(x[:, -1:], self.t.ln_f)  # only the last position is needed for sampling
        self.length = end
        return x @ self.lm_head.T  # (B, 1, V)

    def prefill(self, ids: Tensor, attention_mask: Tensor, positions: Tensor) -> Tensor:
        """Left-padded prompts (B, P) -> next-token logits (B, V)."""
        s = ids.shape[1]
        self.key_ok[:, :s] = attention_mask.bool()
        causal = torch.ones((s, s), dtype=torch.bool, device=ids.device).tril()
        # A padded query sees only itself: no all-masked rows (NaN) and no pad seen by a real token.
        eye = torch.eye(s, dtype=torch.bool, device=ids.device)
        mask = (causal & self.key_ok[:, None, :s]) | eye  # (B, S, S)
        return self._forward(ids, positions, mask[:, None])[:, -1]

    def step(self, tok: Tensor, position: Tensor) -> Tensor:
        """One new token per row (B,) at ``position`` (B,) -> next-token logits (B, V)."""
        self.key_ok[:, self.length] = True
        mask = self.key_ok[:, None, None, : self.length + 1]  # (B, 1, 1, L)
        return self._forward(tok[:, None], position[:, None], mask)[:, -1]
