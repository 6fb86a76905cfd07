"""DDPM++ (cont.) on CIFAR-10 with the sub-VP SDE — Song et al. (2021), Table 3; score_sde
``configs/subvp/cifar10_ddpmpp_continuous.py``.

Same architecture and training recipe as the VP model (61.8M parameters, the published checkpoint): the
network predicts the noise (``s = -net / σ(t)``, σ the sub-VP marginal std) from the time label ``999 t``;
data centred to [-1, 1]. Only the SDE differs.
"""

import ml_collections

from configs.vp.cifar10_ddpmpp_continuous import get_config as _vp_config


def get_config() -> ml_collections.ConfigDict:
    config = _vp_config()
    config.training.sde = "subvp"
    return config
