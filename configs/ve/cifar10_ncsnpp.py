"""NCSN++ (discrete time) on CIFAR-10 with SMLD — score_sde ``configs/ve/cifar10_ncsnpp.py``.

The published discrete-time VE checkpoint: NCSN++ with a positional (sinusoidal) embedding of the integer
noise-level label, trained on the 1000 SMLD levels (``training.continuous = False``). As in score_sde's
``get_score_fn(continuous=False)`` the label is ``round((T − t)(N − 1))`` — 0 is the largest noise level —
and the score is ``net / σ_i`` (``scale_by_sigma``) at that level; sampled with reverse diffusion + Langevin.
"""

from configs.ve.cifar10_ncsnpp_continuous import get_config as _continuous


def get_config():
    config = _continuous()
    config.training.continuous = False
    config.training.discrete_loss = "smld"
    config.model.embedding_type = "positional"
    config.model.time_label = "reversed_index"  # label round((T - t)(N - 1)), sigma of that level
    config.sampling.eps = 1e-5
    return config
