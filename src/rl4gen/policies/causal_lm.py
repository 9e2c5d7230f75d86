"""Any transformers causal language model as a policy: each generated token is an action.

Sampling runs a batched prefill over left-padded prompts and then decodes one token at a time
with the model's KV cache under ``torch.inference_mode()``, recording each chosen token's
log-prob (at the sampling temperature, before top-p/top-k truncation, as TRL does) and the
entropy of its distribution. ``log_probs`` recomputes the same quantities in one forward pass
with gradients. The reference for the KL term is a frozen copy of the starting weights, or, for
a LoRA policy, the same model with its adapter disabled. Algorithms with a critic (PPO) add a
value head (:meth:`CausalLMPolicy.add_value_head`): a linear layer on the last hidden state,
sharing the model's forward pass, trained in full also when the model is a LoRA adapter.

On plain GPT-2 models (:mod:`rl4gen.models.fast_gpt2`) rows that share their prompt — the
``num_generations`` samples of a GRPO/RLOO group, found from the prompt tokens themselves — run
that prompt once, in the sampling prefill and in the scoring forward (``share_prompts``, on by
default; the numbers are those of the full forward), and the scoring forward skips most padding
after each row's end (``skip_padding``, on by default; log-probs there are then not the model's,
and every loss masks them).
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rl4gen.config import ConfigError, GenerationConfig, LoraConfig
from rl4gen.core.rollout import Rollout
from rl4gen.models import fast_gpt2

#: The value head's weights, next to the model's in a saved folder.
VALUE_HEAD_FILE = "value_head.safetensors"


class ModelLoadError(ValueError):
    """The model directory is missing or does not hold a loadable model; the message says why."""


def prompt_text(context: Any) -> str:
    """The prompt string of a context: the string itself, or its ``"prompt"`` entry."""
    if isinstance(context, str):
        return context
    if isinstance(context, Mapping) and "prompt" in context:
        return str(context["prompt"])
    raise TypeError(f"a text context must be a string or a mapping with a 'prompt' key, got {context!r}")


def load_model_and_tokenizer(path: str | Path) -> tuple[nn.Module, Any]:
    """Load ``AutoModelForCausalLM`` and ``AutoTokenizer`` from a local directory (or hub id)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl4gen import quiet_transformers

    quiet_transformers()
    p = Path(path).expanduser()
    local = p.exists()
    if not local and (str(path).startswith((".", "/", "~")) or len(Path(path).parts) != 2):
        raise ModelLoadError(
            f"model directory {str(path)!r} does not exist: pass a folder holding a transformers "
            "model and tokenizer, or run `rl4gen pretrain TASK` first."
        )
    if local and not (p / "config.json").is_file():
        raise ModelLoadError(
            f"model directory {str(p)!r} has no config.json: it does not hold a transformers model."
        )
    source = str(p) if local else str(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load a model from {source!r}: {first}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def _disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


class CausalLMPolicy:
    """A causal LM + tokenizer as a :class:`rl4gen.core.Policy` over text contexts."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        generation: GenerationConfig | None = None,
        *,
        use_reference: bool = False,
        lora: LoraConfig | None = None,
    ) -> None:
        self.generation = generation or GenerationConfig()
        self.tokenizer = tokenizer
        _disable_dropout(model)
        self.is_lora = lora is not None or hasattr(model, "disable_adapter")
        if lora is not None:
            from peft import LoraConfig as PeftLoraConfig
            from peft import get_peft_model

            peft_config = PeftLoraConfig(
                r=lora.r,
                lora_alpha=lora.lora_alpha,
                lora_dropout=lora.lora_dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
                # GPT-2 stores its linear layers transposed (Conv1D); PEFT needs to know.
                fan_in_fan_out=getattr(model.config, "model_type", None) == "gpt2",
            )
            model = get_peft_model(model, peft_config)
        self.model: Any = model  # unwrapped; used for sampling, saving and the LoRA reference
        self.train_model: nn.Module = model  # what gradients flow through (DDP-wrapped in parallel)
        self.model.eval()  # no dropout: sampling and re-scoring must agree exactly
        self.ref_model: nn.Module | None = None
        self.use_reference = use_reference
        #: Run plain GPT-2 models through :mod:`rl4gen.models.fast_gpt2` (same numbers, less overhead).
        self.fast_decoding = True
        #: On the fast path, drop finished rows once live rows fall to this fraction (0 = never).
        self.compact_fraction = 0.75
        #: On the fast path, compute a prompt shared by several rows (a GRPO/RLOO group) once, in
        #: the sampling prefill and in the scoring forward (same numbers, less work).
        self.share_prompts = True
        #: On the fast path, let log-probs and values skip most padding after each row's end
        #: (rows run in buckets of similar length); their values there are then not the model's.
        self.skip_padding = True
        if use_reference and not self.is_lora:
            self.ref_model = copy.deepcopy(model).eval()
            self.ref_model.requires_grad_(False)
        self.source: str | None = None  # the directory the weights were loaded from
        self.value_head: nn.Linear | None = None  # critic V(s_t) on the last hidden state (PPO)
        self.train_value_head: nn.Module | None = None  # the same, DDP-wrapped in parallel
        self.eos_token_id = int(tokenizer.eos_token_id)
        self.pad_token_id = int(tokenizer.pad_token_id)
        self._stop_ids = self._single_token_stops()
        self._multi_token_stops = [
            s for s in self.generation.stop
            if len(tokenizer(s, add_special_tokens=False).input_ids) > 1
        ]

    # ---------------------------------------------------------------- construction and I/O

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        generation: GenerationConfig | None = None,
        *,
        use_reference: bool = False,
        lora: LoraConfig | None = None,
    ) -> CausalLMPolicy:
        """Load from a local directory written by ``save_pretrained`` (or by :meth:`save`).

        A directory holding a saved LoRA adapter (``adapter_config.json``) is loaded on top of its
        base model, which must also be available locally.
        """
        p = Path(path).expanduser()
        adapter = p / "adapter_config.json"
        if adapter.is_file():
            from peft import PeftModel

            base_path = json.loads(adapter.read_text())["base_model_name_or_path"]
            base, tokenizer = load_model_and_tokenizer(base_path)
            model: nn.Module = PeftModel.from_pretrained(base, str(p), is_trainable=True)
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(p))
            tokenizer.padding_side = "left"
            policy = cls(model, tokenizer, generation, use_reference=use_reference)
        else:
            model, tokenizer = load_model_and_tokenizer(path)
            policy = cls(model, tokenizer, generation, use_reference=use_reference, lora=lora)
        policy.source = str(path)
        return policy

    def save(self, directory: str | Path) -> None:
        """Write weights (safetensors) and tokenizer with ``save_pretrained``; the value head,
        if any, goes to ``value_head.safetensors`` beside them."""
        from rl4gen import quiet_transformers

        quiet_transformers()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory), safe_serialization=True)
        self.tokenizer.save_pretrained(str(directory))
        if self.value_head is not None:
            from safetensors.torch import save_file

            state = {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()}
            save_file(state, str(directory / VALUE_HEAD_FILE))

    def load_weights(self, directory: str | Path) -> None:
        """Load trained weights written by :meth:`save` into this policy (the reference stays)."""
        directory = str(directory)
        if self.value_head is not None:
            self._load_value_head(Path(directory) / VALUE_HEAD_FILE)
        if self.is_lora:
            from peft import load_peft_weights, set_peft_model_state_dict

            set_peft_model_state_dict(self.model, load_peft_weights(directory))
            return
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        self.model.load_state_dict(loaded.state_dict())

    def add_value_head(self) -> None:
        """Give the policy a critic: ``Linear(hidden_size, 1)`` on the last hidden state, one value
        per completion token. Weights saved by an earlier run in the source folder are loaded;
        otherwise they start small (std 1 / (hidden_size + 1)) with a zero bias, so values start
        near 0. Call before building the optimizer and before :meth:`prepare`."""
        if self.value_head is not None:
            return
        hidden = int(self.model.config.hidden_size)
        head = nn.Linear(hidden, 1)
        nn.init.normal_(head.weight, std=1.0 / (hidden + 1))
        nn.init.zeros_(head.bias)
        self.value_head = head.to(self.device)
        self.train_value_head = self.value_head
        saved = Path(self.source).expanduser() / VALUE_HEAD_FILE if self.source else None
        if saved is not None and saved.is_file():
            self._load_value_head(saved)

    def _load_value_head(self, path: Path) -> None:
        from safetensors.torch import load_file

        assert self.value_head is not None
        if not path.is_file():
            raise ModelLoadError(f"{str(path)!r} is missing: the folder holds no value head for this critic.")
        self.value_head.load_state_dict(load_file(str(path), device=str(self.device)))

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.value_head is not None:
            params += list(self.value_head.parameters())
        return params

    def prepare(self, accelerator: Any) -> None:
        """Place the model with Accelerate; gradients then flow through the wrapped copy."""
        self.train_model = accelerator.prepare(self.model)
        self.model = accelerator.unwrap_model(self.train_model)
        if self.value_head is not None:
            self.train_value_head = accelerator.prepare(self.value_head)
            self.value_head = accelerator.unwrap_model(self.train_value_head)
        if self.ref_model is not None:
            self.ref_model.to(accelerator.device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---------------------------------------------------------------- sampling

    def _single_token_stops(self) -> set[int]:
        ids = {self.eos_token_id, *self.generation.stop_token_ids}
        for s in self.generation.stop:
            tok = self.tokenizer(s, add_special_tokens=False).input_ids
            if len(tok) == 1:
                ids.add(int(tok[0]))
        return ids

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Left-padded prompt ids and attention mask, both (N, P)."""
        if len(prompts) == 0:
            raise ValueError("no prompts to sample from: the prompt set is empty")
        enc = self.tokenizer(
            list(prompts), return_tensors="pt", padding=True, add_special_tokens=False
        )
        ids, mask = enc["input_ids"], enc["attention_mask"]
        if ids.shape[1] == 0 or bool((mask.sum(dim=1) == 0).any()):
            # A causal LM needs at least one token to condition on: start empty prompts with BOS.
            bos = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.eos_token_id
            ids = torch.cat([torch.full((ids.shape[0], 1), self.pad_token_id), ids], dim=1)
            mask = torch.cat([torch.zeros((ids.shape[0], 1), dtype=mask.dtype), mask], dim=1)
            empty = mask.sum(dim=1) == 0
            ids[empty, -1] = bos
            mask[empty, -1] = 1
        return ids, mask

    def context_length(self) -> int | None:
        """The most positions the model can attend over (None when its config does not say)."""
        config = getattr(self.model, "config", None)
        for key in ("n_positions", "max_position_embeddings"):
            value = getattr(config, key, None)
            if isinstance(value, int):
                return value
        return None

    def _max_new_tokens(self, prompt_tokens: int) -> int:
        """``max_completion_length``, cut where the longest prompt plus the completion would run
        past the model's context (those completions end truncated)."""
        limit = self.context_length()
        steps = self.generation.max_completion_length
        if limit is None:
            return steps
        if prompt_tokens >= limit:
            raise ConfigError(
                f"a prompt of {prompt_tokens} tokens fills the model's context of {limit} positions: "
                f"shorten the prompt to fewer than {limit} tokens."
            )
        return min(steps, limit - prompt_tokens)

    def _filter_logits(self, logits: Tensor) -> Tensor:  # (B, V) scaled logits -> filtered
        top_k, top_p = self.generation.top_k, self.generation.top_p
        if top_k is not None and top_k < logits.shape[-1]:
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            drop = cum - sorted_logits.softmax(dim=-1) >= top_p  # mass before this token already >= p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
        return logits

    def sample(
        self,
        contexts: Sequence[Any],
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        *,
        greedy: bool = False,
    ) -> Rollout:
        """Sample ``num_samples`` completions per context (greedy decoding if ``greedy``)."""
        contexts = list(contexts)
        expanded = [c for c in contexts for _ in range(num_samples)]
        prompt_ids, prompt_mask = self.encode_prompts([prompt_text(c) for c in expanded])
        device = self.device
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        with torch.inference_mode():
            actions, logprobs, entropy, mask, truncated = self._decode(
                prompt_ids, prompt_mask, generator, greedy
            )
        # Tensors made under inference mode cannot enter autograd; clone them out of it.
        actions, logprobs, entropy, mask, truncated = (
            t.clone() for t in (actions, logprobs, entropy, mask, truncated)
        )
        samples = self._decode_text(actions, mask)
        group_ids = torch.arange(len(contexts), device=device).repeat_interleave(num_samples)
        return Rollout(
            actions=actions,
            mask=mask,
            logprobs=logprobs,
            group_ids=group_ids,
            samples=samples,
            contexts=expanded,
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            truncated=truncated,
            extras={"entropy": entropy},
        )

    def _decode(
        self, prompt_ids: Tensor, prompt_mask: Tensor, generator: torch.Generator | None, greedy: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        model = self.model
        gen = self.generation
        b = prompt_ids.shape[0]
        device = prompt_ids.device
        position_ids = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, P)
        fast = self.fast_decoding and fast_gpt2.supports(model)
        max_new = self._max_new_tokens(int(prompt_mask.sum(dim=1).max()))
        if fast:
            decoder = fast_gpt2.GPT2FastDecoder(model, b, prompt_ids.shape[1] + max_new)
            logits = decoder.prefill(prompt_ids, prompt_mask, position_ids, share_prompts=self.share_prompts)
        else:
            out = model(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                position_ids=position_ids,
                use_cache=True,
            )
            past = out.past_key_values
            logits = out.logits[:, -1, :]  # (B, V)
        next_pos = position_ids[:, -1] + 1  # (B,)
        attn = prompt_mask
        stop_ids = torch.tensor(sorted(self._stop_ids), device=device)
        finished = torch.zeros(b, dtype=torch.bool, device=device)
        live = torch.arange(b, device=device)  # rows the model still computes (fast path drops others)
        tokens, logps, ents = [], [], []
        multi_token_stops = self._multi_token_stops
        for step in range(max_new):
            # One uniform draw per row and step, whatever is live: the samples do not depend on
            # which rows the model still computes.
            u = None if greedy else torch.rand(b, generator=generator, device=device)
            scaled = logits.float() / gen.temperature  # (A, V) for the A live rows
            logp_all = torch.log_softmax(scaled, dim=-1)
            if greedy:
                tok_live = scaled.argmax(dim=-1)
            else:
                assert u is not None
                cdf = torch.softmax(self._filter_logits(scaled), dim=-1).cumsum(dim=-1)
                target = (u[live] * cdf[:, -1]).unsqueeze(1)
                tok_live = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=cdf.shape[1] - 1)
            tok = torch.full((b,), self.pad_token_id, dtype=torch.long, device=device)
            tok[live] = tok_live
            tok = torch.where(finished, torch.full_like(tok, self.pad_token_id), tok)
            logp = torch.zeros(b, device=device)
            logp[live] = logp_all.gather(1, tok_live[:, None]).squeeze(1)
            ent = torch.zeros(b, device=device)
            ent[live] = -(logp_all.exp() * logp_all).sum(-1)
            tokens.append(tok)
            logps.append(logp.masked_fill(finished, 0.0))  # padding after the end: 0 either path
            ents.append(ent.masked_fill(finished, 0.0))
            newly = torch.isin(tok, stop_ids) & ~finished
            if multi_token_stops:
                newly |= self._hits_stop_string(torch.stack(tokens, 1), multi_token_stops) & ~finished
            finished = finished | newly
            if bool(finished.all()) or step == max_new - 1:
                break
            if fast:
                keep = ~finished[live]
                if int(keep.sum()) <= self.compact_fraction * len(live):
                    decoder.keep_rows(keep)
                    live = live[keep]
                logits = decoder.step(tok[live], next_pos[live])
            else:
                attn = torch.cat([attn, torch.ones((b, 1), dtype=attn.dtype, device=device)], dim=1)
                out = model(
                    input_ids=tok[:, None],
                    attention_mask=attn,
                    position_ids=next_pos[:, None],
                    past_key_values=past,
                    use_cache=True,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :]
            next_pos = next_pos + 1
        actions = torch.stack(tokens, dim=1)  # (B, T)
        logprobs = torch.stack(logps, dim=1)  # (B, T)
        entropy = torch.stack(ents, dim=1)  # (B, T)
        mask = self._completion_mask(actions)
        truncated = ~finished
        return actions, logprobs, entropy, mask, truncated

    def _hits_stop_string(self, tokens: Tensor, stops: list[str]) -> Tensor:  # (B,) bool
        texts = self.tokenizer.batch_decode(tokens[:, -8:].tolist(), skip_special_tokens=True)
        return torch.tensor([any(t.endswith(s) for s in stops) for t in texts], device=tokens.device)

    def _completion_mask(self, actions: Tensor) -> Tensor:  # (B, T) -> (B, T)
        """1.0 up to and including the first stop token of each row, 0.0 after it."""
        is_stop = torch.isin(actions, torch.tensor(sorted(self._stop_ids), device=actions.device))
        stops_before = is_stop.long().cumsum(dim=1) - is_stop.long()  # stops strictly before t
        mask = (stops_before == 0).float()
        if self._multi_token_stops:
            mask = mask * self._stop_string_mask(actions)
        return mask

    def _stop_string_mask(self, actions: Tensor) -> Tensor:
        """Mask out tokens after a multi-token stop string completes."""
        mask = torch.ones_like(actions, dtype=torch.float)
        stops = self._multi_token_stops
        for i, row in enumerate(actions.tolist()):
            text = ""
            for j, tok in enumerate(row):
                text += self.tokenizer.decode([tok], skip_special_tokens=True)
                if any(text.endswith(s) for s in stops):
                    mask[i, j + 1 :] = 0.0
                    break
        return mask

    def _decode_text(self, actions: Tensor, mask: Tensor) -> list[str]:
        rows = [row[: int(m.sum().item())] for row, m in zip(actions.tolist(), mask)]
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        out = []
        for text in texts:
            for s in self.generation.stop:
                cut = text.find(s)
                if cut >= 0:
                    text = text[:cut]
            out.append(text)
        return out

    def generate(self, prompts: Sequence[Any], greedy: bool = True, generator: torch.Generator | None = None) -> list[str]:
        """Convenience: one completion per prompt (greedy by default), as strings."""
        return self.sample(prompts, 1, generator=generator, greedy=greedy).samples

    # ---------------------------------------------------------------- scoring

    def _scoring_inputs(self, rollout: Rollout) -> tuple[Tensor, Tensor, Tensor, int]:
        assert rollout.prompt_ids is not None and rollout.prompt_mask is not None
        p = rollout.prompt_ids.shape[1]
        input_ids = torch.cat([rollout.prompt_ids, rollout.actions], dim=1)  # (B, P+T)
        attn = torch.cat([rollout.prompt_mask.to(rollout.mask.dtype), rollout.mask], dim=1)
        position_ids = (attn.long().cumsum(-1) - 1).clamp(min=0)
        return input_ids, attn, position_ids, p

    def completion_logits(self, rollout: Rollout, model: nn.Module | None = None, *, skip_padding: bool = False) -> Tensor:  # (B, T, V)
        """Raw logits at every completion position (those that predict ``rollout.actions``),
        from ``model`` (default: the trained model, with gradients). With ``skip_padding`` the
        logits predicting padding (``rollout.mask`` 0) may be left uncomputed: mask them."""
        model = self.train_model if model is None else model
        input_ids, attn, position_ids, p = self._scoring_inputs(rollout)
        if self.fast_decoding and fast_gpt2.supports(model):  # unwrapped GPT-2 (not DDP, not LoRA)
            return fast_gpt2.completion_logits(
                model, input_ids, attn, position_ids, p, share_prompts=self.share_prompts, skip_padding=skip_padding
            )
        logits = model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids).logits
        return logits[:, p - 1 : -1, :]

    def _completion_logits_and_hidden(self, rollout: Rollout, model: nn.Module) -> tuple[Tensor, Tensor]:
        """Logits (B, T, V) and last hidden states (B, T, C) at the completion positions."""
        input_ids, attn, position_ids, p = self._scoring_inputs(rollout)
        if self.fast_decoding and fast_gpt2.supports(model):
            return fast_gpt2.completion_hidden(
                model, input_ids, attn, position_ids, p, share_prompts=self.share_prompts, skip_padding=self._skip_padding()
            )
        out = model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids, output_hidden_states=True)
        return out.logits[:, p - 1 : -1, :], out.hidden_states[-1][:, p - 1 : -1, :]

    def _logprobs_from_logits(self, logits: Tensor, rollout: Rollout, with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
        logp_all = torch.log_softmax(logits.float() / self.generation.temperature, dim=-1)  # (B, T, V)
        logp = logp_all.gather(-1, rollout.actions.unsqueeze(-1)).squeeze(-1)  # (B, T)
        entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
        return logp, entropy

    def _skip_padding(self) -> bool:
        """Skip padding only when the trained model is itself on the fast path: the policy and its
        reference then agree on what stands in for padding (finite, near each other), so a
        masked KL or ratio there never overflows."""
        return self.skip_padding and self.fast_decoding and fast_gpt2.supports(self.train_model)

    def _forward_logprobs(self, model: nn.Module, rollout: Rollout, with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
        logits = self.completion_logits(rollout, model, skip_padding=self._skip_padding())
        return self._logprobs_from_logits(logits, rollout, with_entropy)

    def log_probs(self, rollout: Rollout) -> Tensor:  # (B, T)
        """Per-token log-probs of the rollout's completions under the current weights (where
        ``rollout.mask`` is 0 they may not be the model's: mask them, as every loss does)."""
        return self._forward_logprobs(self.train_model, rollout)[0]

    def log_probs_and_values(self, rollout: Rollout) -> tuple[Tensor, Tensor]:  # (B, T), (B, T)
        """Log-probs (as :meth:`log_probs`) and critic values ``V(s_t)`` of the state before each
        completion token, from one forward pass, with gradients. Needs :meth:`add_value_head`."""
        if self.train_value_head is None:
            raise RuntimeError("this policy has no value head: call add_value_head() first")
        logits, hidden = self._completion_logits_and_hidden(rollout, self.train_model)
        values = self.train_value_head(hidden.float()).squeeze(-1)  # (B, T)
        return self._logprobs_from_logits(logits, rollout)[0], values

    def values(self, rollout: Rollout) -> Tensor:  # (B, T)
        """Critic values ``V(s_t)`` at the current weights, without gradients (0 on padding)."""
        if self.value_head is None:
            raise RuntimeError("this policy has no value head: call add_value_head() first")
        with torch.inference_mode():
            _, hidden = self._completion_logits_and_hidden(rollout, self.model)
            values = self.value_head(hidden.float()).squeeze(-1) * rollout.mask
        return values.clone()

    def rollout_for(self, prompts: Sequence[Any], completions: Sequence[str]) -> Rollout:
        """A rollout holding given completions (not sampled), to score them with
        :meth:`log_probs` or :meth:`ref_log_probs`; its ``logprobs`` are zeros."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts for {len(completions)} completions")
        rows = [self.tokenizer(c, add_special_tokens=False).input_ids for c in completions]
        width = max((len(r) for r in rows), default=0)
        actions = torch.full((len(rows), max(width, 1)), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros(actions.shape, dtype=torch.float32)
        for j, r in enumerate(rows):
            actions[j, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[j, : len(r)] = 1.0
        prompt_ids, prompt_mask = self.encode_prompts([prompt_text(p) for p in prompts])
        device = self.device
        return Rollout(
            actions=actions.to(device),
            mask=mask.to(device),
            logprobs=torch.zeros(actions.shape, device=device),
            group_ids=torch.arange(len(rows), device=device),
            samples=list(completions),
            contexts=list(prompts),
            prompt_ids=prompt_ids.to(device),
            prompt_mask=prompt_mask.to(device),
        )

    def score(self, prompts: Sequence[Any], completions: Sequence[str]) -> Tensor:  # (B,)
        """Mean per-token log-probability of each completion after its prompt, without gradients
        (0 for an empty completion)."""
        rollout = self.rollout_for(prompts, completions)
        with torch.inference_mode():
            logp = self._forward_logprobs(self.model, rollout)[0]
        return ((logp * rollout.mask).sum(-1) / rollout.mask.sum(-1).clamp(min=1)).clone()

    @contextlib.contextmanager
    def _reference(self) -> Iterator[nn.Module]:
        if self.ref_model is not None:
            yield self.ref_model
        elif self.is_lora:
            with self.model.disable_adapter():
                yield self.model
        else:
            raise RuntimeError("this policy was built without a reference (use_reference=False)")

    def ref_log_probs(self, rollout: Rollout) -> Tensor:  # (B, T)
        """Per-token log-probs under the frozen reference (the base model for LoRA)."""
        with torch.inference_mode(), self._reference() as ref:
            logp = self._forward_logprobs(ref, rollout)[0]
        return logp.clone()
