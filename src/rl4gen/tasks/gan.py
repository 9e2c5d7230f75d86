"""GANs and latent-variable models on the digits, trained with RL.

- ``latent_digits``: a :class:`~rl4gen.policies.latent.LatentPolicy` steers a frozen decoder (a
  small VAE, or a GAN generator) toward the requested digit: contexts are ``{"label": k}``, the
  recipe's reward is ``digit_alignment`` (the local classifier's p(k | image)), and ``beta`` ties
  the codes to the decoder's N(0, I) prior.
- ``gan_digits``: the RL-GAN. A generator is a Gaussian-output policy over pixels; its rewards are
  a discriminator that trains alongside it (``image_discriminator``) and a batch-novelty bonus
  (``batch_novelty``). The plain non-saturating GAN on the same budget is the baseline
  (:func:`rl4gen.gan.images.train_gan`, used by ``rl4gen demo --task gan``).

Both evaluate with :func:`rl4gen.images.image_report` against the 360 held-out digits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from rl4gen.tasks.base import Task, cached_build, cached_path


class DigitsImageOptions(BaseModel):
    """Options shared by the image tasks on the digits."""

    model_config = ConfigDict(extra="forbid")

    image_size: Literal[8, 16] = 16
    """Side of the digits in pixels (8 = scikit-learn's originals, 16 = upsampled)."""
    gan_latent_dim: int = Field(16, ge=1)
    """Latent size of the GAN generator."""
    gan_hidden: int = Field(256, ge=8)
    """Width of the GAN generator and discriminator."""
    gan_steps: int = Field(1200, ge=1)
    """Generator updates of the plain non-saturating GAN that is the latent task's GAN decoder
    (1,200 = the RL-GAN's warm start plus its recipe's steps, so the demo's baseline is the same model)."""
    pretrain_seed: int = 0
    """Seed of the priors' initial weights and data order."""


def gan_settings(o: DigitsImageOptions, steps: int) -> dict[str, Any]:
    return {"model": "ns_gan", "version": 1, "image_size": o.image_size, "latent_dim": o.gan_latent_dim, "hidden": o.gan_hidden, "steps": steps, "seed": o.pretrain_seed}


def pretrained_gan(o: DigitsImageOptions, steps: int | None = None, log: Callable[[str], None] = print) -> Path:
    """The plain NS-GAN trained for ``steps`` (default ``gan_steps``) generator updates, cached."""
    from rl4gen.gan.images import train_gan
    from rl4gen.gan.vae import save_module
    from rl4gen.images import load_digits

    settings = gan_settings(o, o.gan_steps if steps is None else steps)

    def build(out: Path) -> dict[str, Any]:
        images = load_digits("train", o.image_size).images
        g, d = train_gan(
            images, latent_dim=o.gan_latent_dim, hidden=o.gan_hidden, steps=settings["steps"], seed=o.pretrain_seed,
            on_log=lambda s, m: log(f"pretrain gan: step {s}/{settings['steps']} " + " ".join(f"{k} {v:.3f}" for k, v in m.items())),
        )
        save_module(g, g.config(), out, "generator")
        save_module(d, {"image_size": o.image_size, "hidden": o.gan_hidden}, out, "discriminator")
        return {}

    return cached_build(cached_path("ns_gan", settings), settings, build)


def load_generator(directory: str | Path) -> Any:
    from rl4gen.gan.images import Generator
    from rl4gen.gan.vae import load_module

    return load_module(Generator, directory, "generator")


def _decoder_folder(model_path: str) -> Path:
    """A prior folder as given, or the decoder folder a saved policy points at."""
    path = Path(model_path).expanduser()
    if (path / "policy.json").is_file():
        from rl4gen.policies.latent import load_policy_config

        source = load_policy_config(path).get("decoder_source")
        if source:
            return Path(source)
    return path


def _report(images: torch.Tensor, requested: torch.Tensor | None, size: int) -> dict[str, float]:
    from rl4gen.images import image_report, load_digits

    return image_report(images, requested, reference=load_digits("test", size).images)


class LatentDigitsOptions(DigitsImageOptions):
    model_config = ConfigDict(extra="forbid")

    decoder: Literal["vae", "gan"] = "vae"
    """What the policy's codes are decoded by: the small VAE or the plain GAN's generator."""
    vae_latent_dim: int = Field(8, ge=1)
    """Latent size of the VAE."""
    vae_hidden: int = Field(256, ge=8)
    """Width of the VAE's MLPs."""
    vae_steps: int = Field(3000, ge=1)
    """Training steps of the VAE (fixed in advance)."""
    perturbation_scale: float = Field(0.5, gt=0, le=1)
    """Std ``s`` of the reference perturbation; the code is ``sqrt(1 - s^2) z0 + a``."""
    policy_hidden: int = Field(128, ge=4)
    """Width of the policy network."""


class LatentDigitsTask(Task):
    """Steer a VAE's (or GAN's) latent codes toward the requested digit."""

    name = "latent_digits"
    Options = LatentDigitsOptions
    options: LatentDigitsOptions

    def latent_dim(self) -> int:
        o = self.options
        return o.vae_latent_dim if o.decoder == "vae" else o.gan_latent_dim

    def train_contexts(self, generator: torch.Generator, n: int) -> list[dict[str, int]]:
        return [{"label": int(k)} for k in torch.randint(0, 10, (n,), generator=generator)]

    def eval_contexts(self, n: int) -> list[dict[str, int]]:
        return [{"label": i % 10} for i in range(n)]

    def evaluate(self, policy: Any, n: int) -> dict[str, float]:
        """:func:`~rl4gen.images.image_report` of one image per held-out context (labels cycling 0-9)."""
        contexts = self.eval_contexts(n)
        requested = torch.tensor([c["label"] for c in contexts])
        return _report(policy.images(contexts), requested, self.options.image_size)

    def default_config(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "task_args": {"decoder": self.options.decoder},
            # Several passes per batch are cheap here: re-scoring needs the small policy network
            # only, never the decoder or the classifier (measured, VAE, 40 steps: accuracy 11% ->
            # 17% with one pass on p, 11% -> 81% with four passes on log p).
            "algorithm": {"name": "grpo", "num_generations": 8, "beta": 0.02, "loss_type": "grpo", "num_iterations": 4},
            "rewards": [{"type": "digit_alignment", "args": {"log": True}}],
            "max_steps": 40,
            "prompts_per_step": 16,
            "learning_rate": 3e-3,
            "max_grad_norm": 1.0,
            "eval_steps": 20,
            "eval_size": 500,
            "sample_steps": 20,
            "save_steps": 40,
            "reference_metrics": True,
        }

    def pretrain_settings(self) -> dict[str, Any]:
        o = self.options
        if o.decoder == "gan":
            return gan_settings(o, o.gan_steps)
        return {"model": "vae", "version": 1, "image_size": o.image_size, "latent_dim": o.vae_latent_dim, "hidden": o.vae_hidden, "steps": o.vae_steps, "seed": o.pretrain_seed}

    def pretrained_dir(self) -> Path:
        return pretrained_gan(self.options) if self.options.decoder == "gan" else super().pretrained_dir()

    def pretrain(self, force: bool = False, log: Callable[[str], None] = print) -> Path:
        if self.options.decoder == "gan":
            return pretrained_gan(self.options, log=log)
        return super().pretrain(force, log)

    def build_prior(self, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        """Train the VAE (the GAN decoder is built by :func:`pretrained_gan`)."""
        from rl4gen.gan.vae import save_module, train_vae
        from rl4gen.images import load_digits

        o = self.options
        images = load_digits("train", o.image_size).images
        vae = train_vae(
            images, latent_dim=o.vae_latent_dim, hidden=o.vae_hidden, steps=o.vae_steps, seed=o.pretrain_seed,
            on_log=lambda s, loss: log(f"pretrain vae: step {s}/{o.vae_steps} loss {loss:.2f}"),
        )
        test = load_digits("test", o.image_size).images
        with torch.no_grad():
            held_out = float(vae.loss(test, torch.Generator().manual_seed(0))[0])
        save_module(vae, vae.config(), out_dir, "vae")
        return {"held_out_neg_elbo": held_out}

    def load_policy(self, model_path: str, config: Any, use_reference: bool) -> Any:
        from rl4gen.gan.vae import load_vae
        from rl4gen.policies.latent import LatentPolicy

        o = self.options
        folder = _decoder_folder(model_path)
        decoder = load_vae(folder) if o.decoder == "vae" else load_generator(folder)
        policy = LatentPolicy(decoder, self.latent_dim(), o.perturbation_scale, o.policy_hidden)
        policy.source = str(folder)
        if Path(model_path, "policy.json").is_file():
            policy.load_weights(model_path)
        return policy


class GanDigitsOptions(DigitsImageOptions):
    model_config = ConfigDict(extra="forbid")

    pixel_std: float = Field(0.1, gt=0)
    """Std of the generator policy's Gaussian pixel noise (its exploration)."""
    warm_start_steps: int = Field(1000, ge=0)
    """Start the RL generator from the plain GAN after this many steps (0 = from random weights)."""


class GanDigitsTask(Task):
    """The RL-GAN: a Gaussian-output generator trained by policy gradient against a discriminator."""

    name = "gan_digits"
    Options = GanDigitsOptions
    options: GanDigitsOptions

    def train_contexts(self, generator: torch.Generator, n: int) -> list[dict[str, int]]:
        return [{"slot": i} for i in range(n)]  # one latent code per context, drawn by the policy

    def eval_contexts(self, n: int) -> list[dict[str, int]]:
        return [{"slot": i} for i in range(n)]

    def evaluate(self, policy: Any, n: int) -> dict[str, float]:
        """:func:`~rl4gen.images.image_report` of ``n`` noise-free generator images ``G(z)``."""
        return _report(policy.mean_images(n), None, self.options.image_size)

    def default_config(self) -> dict[str, Any]:
        o = self.options
        disc: dict[str, Any] = {"image_size": o.image_size, "hidden": o.gan_hidden, "instance_noise": o.pixel_std}
        if o.warm_start_steps > 0:  # the plain GAN's discriminator comes with its generator
            disc["init_from"] = str(cached_path("ns_gan", gan_settings(o, o.warm_start_steps)))
        return {
            "task": self.name,
            "task_args": {"warm_start_steps": o.warm_start_steps},
            "algorithm": {"name": "grpo", "num_generations": 4, "beta": 0.0, "loss_type": "grpo", "scale_rewards": "batch"},
            "rewards": [
                {"type": "image_discriminator", "args": disc},
                {"type": "batch_novelty", "weight": 1.0},
            ],
            "max_steps": 200,
            "prompts_per_step": 16,
            "learning_rate": 3e-4,
            "max_grad_norm": 1.0,
            "eval_steps": 100,
            "eval_size": 500,
            "sample_steps": 100,
            "save_steps": 300,
        }

    def pretrain_settings(self) -> dict[str, Any]:
        o = self.options
        return {"model": "generator_init", "version": 1, "image_size": o.image_size, "latent_dim": o.gan_latent_dim, "hidden": o.gan_hidden, "warm_start_steps": o.warm_start_steps, "seed": o.pretrain_seed}

    def build_prior(self, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        """The generator the RL-GAN starts from: random weights, or the plain GAN's after
        ``warm_start_steps``."""
        import shutil

        from rl4gen.gan.images import Generator
        from rl4gen.gan.vae import save_module

        o = self.options
        if o.warm_start_steps > 0:
            src = pretrained_gan(o, o.warm_start_steps, log)
            for name in ("generator.safetensors", "generator.json"):
                shutil.copy(src / name, out_dir / name)
            return {}
        torch.manual_seed(o.pretrain_seed)
        g = Generator(o.image_size, o.gan_latent_dim, o.gan_hidden)
        save_module(g, g.config(), out_dir, "generator")
        return {}

    def load_policy(self, model_path: str, config: Any, use_reference: bool) -> Any:
        from rl4gen.policies.latent import GaussianGeneratorPolicy

        path = Path(model_path).expanduser()
        # a trained RL-GAN's folder holds the generator as the policy network (policy.*)
        generator = _generator_from_policy(path) if (path / "policy.json").is_file() else load_generator(path)
        policy = GaussianGeneratorPolicy(generator, self.options.gan_latent_dim, self.options.pixel_std, use_reference)
        policy.source = str(path)
        return policy


def _generator_from_policy(path: Path) -> Any:
    """The generator saved by a trained :class:`GaussianGeneratorPolicy` (``policy.*``)."""
    from safetensors.torch import load_file

    from rl4gen.gan.images import Generator
    from rl4gen.policies.latent import load_policy_config

    cfg = load_policy_config(path)
    g = Generator(cfg["image_size"], cfg["latent_dim"], cfg["hidden"])
    g.load_state_dict(load_file(str(path / "policy.safetensors")))
    return g


__all__ = ["GanDigitsTask", "LatentDigitsTask", "pretrained_gan"]
