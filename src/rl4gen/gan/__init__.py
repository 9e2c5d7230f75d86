"""GANs with RL: SeqGAN for discrete sequences (``oracle.py``, ``seqgan.py``)."""
