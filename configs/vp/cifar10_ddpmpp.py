"""DDPM++ (discrete time) on CIFAR-10 with the DDPM chain — score_sde ``configs/vp/cifar10_ddpmpp.py``.

The published discrete-time VP checkpoint: the same network as the continuous DDPM++ (positional time
embedding), trained on the 1000-step DDPM chain (``training.continuous = False``). As in score_sde's
``get_score_fn(continuous=False)`` the network sees the label ``t (N − 1)`` and the score is
``−net / √(1 − ᾱ_i)`` at the chain index ``i = ⌊t (N − 1)⌋``; sampled with the ancestral predictor.
"""

from configs.vp.cifar10_ddpmpp_continuous import get_config as _continuous


def get_config():
    config = _continuous()
    config.training.continuous = False
    config.training.discrete_loss = "ddpm"
    config.sampling.predictor = "ancestral"
    config.sampling.corrector = "none"
    config.model.prediction = "noise"
    config.model.time_label = "index"  # label t (N - 1), std indexed by truncation
    return config
