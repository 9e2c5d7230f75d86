"""GANs and latent-variable models with RL: SeqGAN for discrete sequences (``oracle.py``,
``seqgan.py``); image generators and discriminators on the digits and a small VAE whose latent
codes a :class:`~rl4gen.policies.latent.LatentPolicy` steers (``images.py``, ``vae.py``)."""
