"""Lean incremental decoding for transformers' GPT-2, on the model's own parameters.

Sampling is a loop of one-token forward passes; for small models the cost of each pass is mostly
overhead: module dispatch and, above all, the KV cache growing by concatenation (``torch.cat``
copies the whole cache every token, quadratic in length). :class:`GPT2FastDecoder` runs the same
computation as ``GPT2LMHeadModel`` with a preallocated KV cache and ``scaled_dot_product_attention``,
reading the model's parameters in place (no copy: updates to the model are seen at once).

Rows that have finished can be dropped from the cache (:meth:`GPT2FastDecoder.keep_rows`), so
a batch whose completions end at different lengths stops paying for the finished ones.

In GRPO and RLOO every prompt is sampled ``num_generations`` times, so the rows of a group share
their prompt. The training forward (:func:`completion_logits`, :func:`completion_hidden`) then
runs each distinct prompt once and the completions of all rows on top of their prompt's keys and
values (:func:`prompt_groups` finds the groups from the tokens themselves); autograd through the
gather sums each prompt's gradient over its group, so values and gradients are those of the full
forward. Sampling likewise prefills each distinct prompt once (:meth:`GPT2FastDecoder.prefill`).
With ``skip_padding`` the completions run in buckets of similar length (:func:`length_buckets`),
each only as wide as its longest row, so most padding after a row's end is never computed.

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
        *,
        prefix: list[tuple[Tensor, Tensor]] | None = None,
        kv_out: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:  # (B, S, C) before the final layer norm
        """The transformer stack. With ``cache`` (keys, values, start) new keys and values are
        written at ``start`` and attention runs over the cache up to the new end. With ``prefix``
        (per layer, keys and values (B, H, P, D) of earlier positions, with gradients) attention
        runs over the prefix followed by these positions (L = P + S). ``kv_out`` collects this
        pass's keys and values per layer."""
        b, s = ids.shape
        x = F.embedding(ids, self.t.wte.weight) + F.embedding(positions, self.t.wpe.weight)
        for i, block in enumerate(self.t.h):
            a = self._ln(x, block.ln_1)
            qkv = torch.addmm(block.attn.c_attn.bias, a.reshape(-1, self.d), block.attn.c_attn.weight)
            q, k, v = qkv.view(b, s, 3, self.n_head, self.hd).permute(2, 0, 3, 1, 4)  # 3 x (B, H, S, D)
            if kv_out is not None:
                kv_out.append((k, v))
            if cache is not None:
                keys, values, start = cache
                keys[i][:, :, start : start + s] = k
                values[i][:, :, start : start + s] = v
                k, v = keys[i][:, :, : start + s], values[i][:, :, : start + s]
            elif prefix is not None:
                k, v = torch.cat([prefix[i][0], k], dim=2), torch.cat([prefix[i][1], v], dim=2)
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


def prompt_groups(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor] | None:
    """Rows that share their prompt (same tokens, same padding), wherever they sit in the batch.

    Returns ``(first, inverse)``: ``first`` (U,) one row index per distinct prompt, ``inverse``
    (B,) each row's index into ``first``; None when every row's prompt is distinct (nothing to
    share)."""
    rows = prompt_ids.long() * 2 + (prompt_mask != 0).long()  # (B, P): token and padding in one key
    distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
    b, u = rows.shape[0], distinct.shape[0]
    if u == b:
        return None
    index = torch.arange(b, device=rows.device)
    first = torch.full((u,), b, dtype=torch.long, device=rows.device).scatter_reduce(0, inverse, index, "amin")
    return first, inverse


def length_buckets(lengths: Tensor, max_buckets: int = 4) -> list[tuple[Tensor, int]]:
    """Rows grouped by completion length for a forward that skips padding after each row's end.

    ``lengths`` (B,) are the tokens each row needs as input. Rows are sorted longest first and cut
    into up to ``max_buckets`` equal-count buckets; neighbours of the same width merge. Returns
    ``(rows, width)`` pairs: the row indices and the widest length among them."""
    order = torch.argsort(lengths, descending=True, stable=True)
    buckets: list[tuple[Tensor, int]] = []
    for rows in order.tensor_split(min(max_buckets, len(order))):
        width = int(lengths[rows[0]])
        if buckets and buckets[-1][1] == width:
            buckets[-1] = (torch.cat([buckets[-1][0], rows]), width)
        else:
            buckets.append((rows, width))
    return buckets


#: Skip padding only when the buckets leave out at least this fraction of completion positions
#: (below it the extra, smaller passes cost about what they save).
SKIP_PADDING_MIN_SAVING = 0.1


def _completion_states(
    gpt: _GPT2,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    start: int,
    share_prompts: bool,
    skip_padding: bool,
) -> Tensor:  # (B, S - start, C) before the final layer norm
    """Hidden states at positions ``start - 1 .. S - 2`` (those predicting tokens ``start:``).

    When rows share their prompt (``input_ids[:, :start]``) and ``share_prompts`` is set, each
    distinct prompt runs once and the completions run on its gathered keys and values: the last
    completion token, which predicts nothing, is not computed either. With ``skip_padding``,
    rows are run in buckets of similar completion length (:func:`length_buckets`), each only as
    wide as its longest row, so padding after a row's last real token (``attention_mask`` 0) is
    mostly not computed: the states there are zeros instead. Everywhere else the numbers are those
    of the full forward (up to float rounding); gradients reach a shared prompt summed over its
    rows through the gathers."""
    b, s = input_ids.shape
    groups = prompt_groups(input_ids[:, :start], attention_mask[:, :start]) if share_prompts else None
    buckets: list[tuple[Tensor, int]] = []
    if skip_padding and s - start >= 2:
        # Input j (completion token j) predicts token j + 1: a row needs the inputs up to the one
        # predicting its last real token.
        predicted = attention_mask[:, start + 1 :]  # (B, T - 1)
        steps = torch.arange(1, predicted.shape[1] + 1, device=predicted.device)
        lengths = ((predicted != 0) * steps).amax(dim=1)
        buckets = length_buckets(lengths)
        if sum(len(rows) * width for rows, width in buckets) > (1 - SKIP_PADDING_MIN_SAVING) * predicted.numel():
            buckets = []
    if groups is None and not buckets:
        x = gpt.hidden(input_ids, position_ids, prefix_mask(attention_mask))
        return x[:, start - 1 : -1]
    if groups is None:
        first = inverse = torch.arange(b, device=input_ids.device)
    else:
        first, inverse = groups
    kv: list[tuple[Tensor, Tensor]] = []
    prompt_mask = attention_mask[first, :start]
    x = gpt.hidden(input_ids[first, :start], position_ids[first, :start], prefix_mask(prompt_mask), kv_out=kv)
    last = x[:, -1:].index_select(0, inverse)  # (B, 1, C): predicts the first completion token
    if s - start < 2:
        return last
    if not buckets:
        buckets = [(torch.arange(b, device=input_ids.device), s - start - 1)]
    parts, rows_in_order = [], []
    for rows, width in buckets:
        if width == 0:  # rows with at most one real token: the prompt's last state predicts it
            parts.append(x.new_zeros(len(rows), s - start - 1, x.shape[-1]))
        else:
            prefix = [(k.index_select(0, inverse[rows]), v.index_select(0, inverse[rows])) for k, v in kv]
            # The full forward's mask, restricted to these rows' completion queries up to ``width``.
            mask = prefix_mask(attention_mask[rows, : start + width])[:, :, start:]  # (n, 1, width, start + width)
            cols = slice(start, start + width)
            h = gpt.hidden(input_ids[rows, cols], position_ids[rows, cols], mask, prefix=prefix)
            parts.append(F.pad(h, (0, 0, 0, s - start - 1 - width)))
        rows_in_order.append(rows)
    states = torch.cat(parts).index_select(0, torch.cat(rows_in_order).argsort())  # back to batch order
    return torch.cat([last, states], dim=1)


def completion_hidden(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    start: int,
    *,
    share_prompts: bool = True,
    skip_padding: bool = False,
) -> tuple[Tensor, Tensor]:  # logits (B, S - start, V), hidden (B, S - start, C)
    """Logits predicting tokens ``start:`` of ``input_ids`` and the last hidden state at the same
    positions (after the final layer norm, as transformers' ``hidden_states[-1]``, for a value
    head), from one forward with gradients. The LM head runs only where a prediction is needed,
    a prompt shared by several rows is computed once (see :func:`prompt_groups`), and with
    ``skip_padding`` positions after a row's last real token are mostly skipped (their states are
    then zeros, their logits those of a zero state: mask them)."""
    gpt = _GPT2(model)
    x = _completion_states(gpt, input_ids, attention_mask, position_ids, start, share_prompts, skip_padding)
    h = gpt._ln(x, gpt.t.ln_f)
    return h @ gpt.lm_head.T, h


def completion_logits(model: Any, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, start: int, **options: bool) -> Tensor:
    """The logits of :func:`completion_hidden` (same ``options``), (B, S - start, V)."""
    return completion_hidden(model, input_ids, attention_mask, position_ids, start, **options)[0]


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

    def prefill(self, ids: Tensor, attention_mask: Tensor, positions: Tensor, *, share_prompts: bool = True) -> Tensor:
        """Left-padded prompts (B, P) -> next-token logits (B, V). Rows with the same prompt
        (``share_prompts``, see :func:`prompt_groups`) are computed once and copied into each
        row's cache."""
        self.key_ok[:, : ids.shape[1]] = attention_mask.bool()
        groups = prompt_groups(ids, attention_mask) if share_prompts else None
        if groups is None:
            return self._forward(ids, positions, prefix_mask(attention_mask))
        first, inverse = groups
        kv: list[tuple[Tensor, Tensor]] = []
        x = self.hidden(ids[first], positions[first], prefix_mask(attention_mask[first]), kv_out=kv)
        p = ids.shape[1]
        for i, (k, v) in enumerate(kv):
            self.k[i][:, :, :p] = k.index_select(0, inverse)
            self.v[i][:, :, :p] = v.index_select(0, inverse)
        self.length = p
        return self.logits(x[:, -1:])[:, -1].index_select(0, inverse)

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
