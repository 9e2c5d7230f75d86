"""rl4gen: improve generative models with reinforcement learning.

A generative model is a policy, generating is acting, a reward scores the result, and an RL
algorithm moves the policy toward higher reward while a KL term keeps it near where it started.
"""

from __future__ import annotations

__version__ = "0.1.0"


def quiet_transformers() -> None:
    """Silence transformers' progress bars and advisory warnings (call before loading/saving)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover - huggingface_hub always ships with transformers
        pass
