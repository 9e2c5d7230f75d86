"""Lean incremental decoding for transformers' GPT-2, on the model's own parameters.

Sampling is a loop of one-token forward passes; for small models the cost of each pass is mostly
overhead: module dispatch and, above all, the KV cache growing by concatenation (``torch.cat``
copies the whole cache every token, quadratic in length). :class:`GPT2FastDecoder` runs the same
computation as ``GPT2LMHeadModel`` with a preallocated KV cache and ``scaled_dot_product_attention``,
reading the model's parameters in place (no copy: updates to the model are seen at once).

Rows that have finished can be dropped from the cache (:meth:`GPT2FastDecoder.keep_rows`), so
a batch whose completions end at different lengths stops paying for the finished ones.

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


class _GPT2:
    """GPT-2's computation on a ``GPT2LMHeadModel``'s own parameters."""

    def __init__(self, model: Any) -> None:
        c = model.config
        self.t = model.transformer
        self.lm_head = model.lm_head.weight  # (V, C), tied to wte in GPT-2
        self.n_head = c.n_head
        self.d = c.n_embd
        self.hd = c.n_embd // c.n_head
        self.eps = c.layer_norm_epsilon
        self.act = _ACTIVATIONS[c.activation_function]

    def _ln(self, x: Tensor, ln: Any) -> Tensor:
        return F.layer_norm(x, (self.d,), ln.weight, ln.bias, self.eps)

    def hidden(
        self,
        ids: Tensor,  # (B, S)
        positions: Tensor,  # (B, S)
        mask: Tensor,  # (B, 1, S, L) bool
        cache: tuple[list[Tensor], list[Tensor], int] | None = None,
    ) -> Tensor:  # (B, S, C) after the final layer norm
        """The transformer stack; with ``cache`` (keys, values, start) new keys and values are
        written at ``start`` and attention runs over the cache up to the new end."""
        b, s = ids.shape
        x = F.embedding(ids, self.t.wte.weight) + F.embedding(positions, self.t.wpe.weight)
        for i, block in enumerate(self.t.h):
            a = self._ln(x, block.ln_1)
            qkv = torch.addmm(block.attn.c_attn.bias, a.reshape(-1, self.d), block.attn.c_attn.weight)
            q, k, v = qkv.view(b, s, 3, self.n_head, self.hd).permute(2, 0, 3, 1, 4)  # 3 x (B, H, S, D)
            if cache is not None:
                keys, values, start = cache
                keys[i][:, :, start : start + s] = k
                values[i][:, :, start : start + s] = v
                k, v = keys[i][:, :, : start + s], values[i][:, :, : start + s]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            y = y.transpose(1, 2).reshape(b * s, self.d)
            x = x + torch.addmm(block.attn.c_proj.bias, y, block.attn.c_proj.weight).view(b, s, self.d)
            m = self._ln(x, block.ln_2).reshape(-1, self.d)
            m = self.act(torch.addmm(block.mlp.c_fc.bias, m, block.mlp.c_fc.weight))
            x = x + torch.addmm(block.mlp.c_proj.bias, m, block.mlp.c_proj.weight).view(b, s, self.d)
        return x

    def logits(self, x: Tensor) -> Tensor:  # (B, S, C) -> (B, S, V)
        return self._ln(x, self.t.ln_f) @ self.lm_head.T


def prefix_mask(attention_mask: Tensor) -> Tensor:  # (B, S) -> (B, 1, S, S) bool
    """Causal attention over non-padding keys; a padded query sees only itself, so no row is
    fully masked (which would give NaN) and no real token ever sees padding."""
    s = attention_mask.shape[1]
    causal = torch.ones((s, s), dtype=torch.bool, device=attention_mask.device).tril()
    eye = torch.eye(s, dtype=torch.bool, device=attention_mask.device)
    return ((causal & attention_mask.bool()[:, None, :]) | eye)[:, None]


def completion_logits(
    model: Any, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, start: int
) -> Tensor:  # (B, S - start, V)
    """Logits predicting tokens ``start:`` of ``input_ids`` (one forward, with gradients): the
    LM head runs only where a prediction is needed."""
    gpt = _GPT2(model)
    x = gpt.hidden(input_ids, position_ids, prefix_mask(attention_mask))
    return gpt.logits(x[:, start - 1 : -1])


def completion_hidden(
    model: Any, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, start: int
) -> tuple[Tensor, Tensor]:  # logits (B, S - start, V), hidden (B, S - start, C)
    """Like :func:`completion_logits`, also returning the last hidden state (after the final
    layer norm, as transformers' ``hidden_states[-1]``) at the same positions, for a value head."""
    gpt = _GPT2(model)
    x = gpt.hidden(input_ids, position_ids, prefix_mask(attention_mask))
    h = gpt._ln(x[:, start - 1 : -1], gpt.t.ln_f)
    return h @ gpt.lm_head.T, h


class GPT2FastDecoder(_GPT2):
    """Prefill + one-token steps with a preallocated KV cache for a ``GPT2LMHeadModel``."""

    def __init__(self, model: Any, batch: int, max_len: int) -> None:
        super().__init__(model)
        p = next(model.parameters())
        shape = (batch, self.n_head, max_len, self.hd)
        self.k = [torch.empty(shape, dtype=p.dtype, device=p.device) for _ in self.t.h]
        self.v = [torch.empty(shape, dtype=p.dtype, device=p.device) for _ in self.t.h]
        self.key_ok = torch.zeros((batch, max_len), dtype=torch.bool, device=p.device)  # (B, L)
        self.length = 0

    def _forward(self, ids: Tensor, positions: Tensor, mask: Tensor) -> Tensor:  # -> (B, V)
        x = self.hidden(ids, positions, mask, (self.k, self.v, self.length))
        self.length += ids.shape[1]
        return self.logits(x[:, -1:])[:, -1]  # only the last position is needed for sampling

    def prefill(self, ids: Tensor, attention_mask: Tensor, positions: Tensor) -> Tensor:
        """Left-padded prompts (B, P) -> next-token logits (B, V)."""
        self.key_ok[:, : ids.shape[1]] = attention_mask.bool()
        return self._forward(ids, positions, prefix_mask(attention_mask))

    def keep_rows(self, keep: Tensor) -> None:
        """Drop finished rows (``keep`` (A,) bool) so later steps compute only live ones."""
        self.k = [k[keep] for k in self.k]
        self.v = [v[keep] for v in self.v]
        self.key_ok = self.key_ok[keep]

    def step(self, tok: Tensor, position: Tensor) -> Tensor:
        """One new token per row (B,) at ``position`` (B,) -> next-token logits (B, V)."""
        self.key_ok[:, self.length] = True
        mask = self.key_ok[:, None, None, : self.length + 1]  # (B, 1, 1, L)
        return self._forward(tok[:, None], position[:, None], mask)
