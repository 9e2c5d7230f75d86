"""GANs and latent-variable models with RL: image generators and discriminators on the digits,
a small VAE whose latent codes a :class:`~rl4gen.policies.latent.LatentPolicy` steers."""
