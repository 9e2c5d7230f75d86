"""Generative models wrapped as policies."""

from rl4gen.policies.causal_lm import CausalLMPolicy, ModelLoadError

__all__ = ["CausalLMPolicy", "ModelLoadError"]
