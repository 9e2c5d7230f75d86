"""Judges: rank pairs of completions so preferences can be made without people (RLAIF).

A judge answers, for each prompt and two completions ``a`` and ``b``, one number in [-1, 1]:

- its sign says which completion wins (> 0: ``a``, < 0: ``b``),
- its size says how sure the judge is (1 = certain),
- 0 is a tie: the judge cannot tell them apart, and ``rl4gen prefs generate`` writes no pair.

Built-in judges (registered under a type name, like rewards):

- ``reward``: any registered reward (a rule such as ``exact_answer`` or ``lexicon``, or a trained
  ``reward_model`` by path) scores both completions; the preference is the score difference
  divided by ``scale`` and clipped to [-1, 1]. A reward that does not apply (``None``) is a tie.
- ``model``: a stronger local causal LM. ``likelihood`` compares the completions' mean per-token
  log-probabilities under the judge model (``2 sigma(delta / temperature) - 1``, the Bradley-Terry
  probability mapped to [-1, 1]); ``ask`` puts both completions in a comparison question
  (through the tokenizer's chat template when it has one) and compares the next-token
  probabilities of ``A`` and ``B``, asked in both orders so that a bias for the first position
  cancels.

Prompts are contexts, as for rewards: a string, or a mapping with a ``prompt`` entry (and any
other fields a rule needs, such as ``answer``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from rl4gen.config import ConfigError, build_registered


@runtime_checkable
class Judge(Protocol):
    """Ranks two completions of the same prompt."""

    name: str

    def compare(
        self, prompts: Sequence[Any], completions_a: Sequence[str], completions_b: Sequence[str]
    ) -> list[float]:
        """One preference per pair in [-1, 1]: > 0 prefers ``a``, < 0 prefers ``b``, 0 is a tie."""
        ...


def check_preferences(name: str, values: Sequence[float], expected: int) -> list[float]:
    """Validate a judge's output: one finite number in [-1, 1] per pair (a bug otherwise)."""
    out = [float(v) for v in values]
    if len(out) != expected:
        raise RuntimeError(f"judge {name!r} returned {len(out)} preferences for {expected} pairs")
    for i, v in enumerate(out):
        if not math.isfinite(v) or abs(v) > 1.0:
            raise RuntimeError(f"judge {name!r} returned {v} for pair {i}: preferences must lie in [-1, 1]")
    return out


# ------------------------------------------------------------------------------- registry

JudgeFactory = Callable[..., Judge]
JUDGE_TYPES: dict[str, JudgeFactory] = {}


def register_judge(type_name: str) -> Callable[[JudgeFactory], JudgeFactory]:
    """Register a judge class or factory under ``type_name`` for use in configs."""

    def decorator(factory: JudgeFactory) -> JudgeFactory:
        JUDGE_TYPES[type_name] = factory
        return factory

    return decorator


def build_judge(type_name: str, **args: Any) -> Judge:
    """Instantiate a registered judge type, with one-sentence errors for bad types or arguments."""
    judge: Judge = build_registered("judge", JUDGE_TYPES, type_name, args, passthrough=(ConfigError,))
    return judge


# ------------------------------------------------------------------------------- judges


@register_judge("reward")
class RewardJudge:
    """Prefer the completion a registered reward scores higher.

    Args:
        type: the reward type (``exact_answer``, ``lexicon``, ``regex``, ``reward_model``, ...).
        args: the reward's arguments (e.g. ``{path: runs/rm}`` for ``reward_model``).
        scale: score difference that counts as a certain preference; smaller differences give
            proportionally weaker preferences (clipped to [-1, 1]).
    """

    def __init__(self, type: str, args: dict[str, Any] | None = None, scale: float = 1.0) -> None:
        from rl4gen.rewards.base import build_reward

        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.reward = build_reward(type, **(args or {}))
        self.name = f"reward:{self.reward.name}"
        self.scale = float(scale)

    def compare(
        self, prompts: Sequence[Any], completions_a: Sequence[str], completions_b: Sequence[str]
    ) -> list[float]:
        from rl4gen.rewards.base import check_reward_values

        n = len(prompts)
        # One call over both halves: a learned reward then scores them in one batched pass.
        values = check_reward_values(
            self.reward.name, self.reward([*completions_a, *completions_b], [*prompts, *prompts]), 2 * n
        )
        out = []
        for ra, rb in zip(values[:n], values[n:]):
            if math.isnan(ra) or math.isnan(rb):  # the reward does not apply: no preference
                out.append(0.0)
            else:
                out.append(max(-1.0, min(1.0, (ra - rb) / self.scale)))
        return out


Mode = Literal["likelihood", "ask"]

ASK_TEMPLATE = (
    "Which response answers the prompt better?\n\nPrompt: {prompt}\n\nResponse A: {a}\n\n"
    "Response B: {b}\n\nAnswer with one letter, A or B."
)


@register_judge("model")
class ModelJudge:
    """A local causal LM as the judge (a stronger model than the policy, or an instruct model).

    Args:
        path: folder with a transformers causal LM and tokenizer (or a run folder).
        mode: ``likelihood`` (compare the completions' mean per-token log-probs after the prompt)
            or ``ask`` (ask the model which response is better; for instruct models).
        temperature: divides the log-prob difference (``likelihood``) or the log-odds of A over B
            (``ask``) before the sigmoid; lower = more decisive.
        template: the ``ask`` question, with ``{prompt}``, ``{a}`` and ``{b}`` fields.
        batch_size: pairs per forward pass.
    """

    def __init__(
        self,
        path: str,
        mode: Mode = "likelihood",
        temperature: float = 1.0,
        template: str = ASK_TEMPLATE,
        batch_size: int = 32,
    ) -> None:
        from rl4gen.cli import resolve_model_dir
        from rl4gen.policies.causal_lm import CausalLMPolicy

        if mode not in ("likelihood", "ask"):
            raise ValueError(f"mode must be 'likelihood' or 'ask', got {mode!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        for field in ("{prompt}", "{a}", "{b}"):
            if field not in template:
                raise ValueError(f"template must contain {field}")
        self.policy = CausalLMPolicy.from_pretrained(resolve_model_dir(path))
        if torch.cuda.is_available():
            self.policy.model.to("cuda")
        self.name = f"model:{mode}"
        self.mode: Mode = mode
        self.temperature = float(temperature)
        self.template = template
        self.batch_size = batch_size
        if mode == "ask":
            self._letters = [self._letter_id(c) for c in ("A", "B")]

    def _letter_id(self, letter: str) -> int:
        ids = self.policy.tokenizer(letter, add_special_tokens=False).input_ids
        if len(ids) != 1 or self.policy.tokenizer.decode(ids).strip() != letter:
            raise ValueError(f"the judge's tokenizer has no single token for {letter!r}; use mode 'likelihood'")
        return int(ids[0])

    def compare(
        self, prompts: Sequence[Any], completions_a: Sequence[str], completions_b: Sequence[str]
    ) -> list[float]:
        n = len(prompts)
        out: list[float] = []
        for start in range(0, n, self.batch_size):
            sl = slice(start, start + self.batch_size)
            p, a, b = list(prompts[sl]), list(completions_a[sl]), list(completions_b[sl])
            delta = self._likelihood(p, a, b) if self.mode == "likelihood" else self._ask(p, a, b)
            out.extend((2 * torch.sigmoid(delta / self.temperature) - 1).tolist())
        return out

    def _likelihood(self, prompts: list[Any], a: list[str], b: list[str]) -> torch.Tensor:  # (N,)
        scores = self.policy.score([*prompts, *prompts], [*a, *b]).float().cpu()  # (2N,)
        return scores[: len(a)] - scores[len(a) :]

    def _question(self, prompt: Any, a: str, b: str) -> str:
        from rl4gen.policies.causal_lm import prompt_text

        text = self.template.format(prompt=prompt_text(prompt), a=a, b=b)
        tokenizer = self.policy.tokenizer
        if getattr(tokenizer, "chat_template", None):
            return str(
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
                )
            )
        return text + "\nAnswer: "

    def _ask(self, prompts: list[Any], a: list[str], b: list[str]) -> torch.Tensor:  # (N,)
        """Log-odds of "A" over "B", averaged over both orders (a in front, then b in front)."""
        texts = [self._question(p, x, y) for p, x, y in zip(prompts, a, b)]
        texts += [self._question(p, y, x) for p, x, y in zip(prompts, a, b)]
        ids, mask = self.policy.encode_prompts(texts)  # left-padded: the last position is the next token
        device = self.policy.device
        ids, mask = ids.to(device), mask.to(device)
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)  # (2N, P)
        with torch.inference_mode():
            out = self.policy.model(input_ids=ids, attention_mask=mask, position_ids=position_ids)
            logits = out.logits[:, -1, :]  # (2N, V)
        logp = torch.log_softmax(logits.float(), dim=-1)[:, self._letters].cpu()  # (2N, 2)
        odds = logp[:, 0] - logp[:, 1]  # log P(A) - log P(B)
        n = len(a)
        return (odds[:n] - odds[n:]) / 2  # in the swapped order, "A" names b
