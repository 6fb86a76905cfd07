"""Score networks: MLP for low-dimensional data, NCSN++/DDPM++ and the DDPM U-Net for images.

Every network is a pure ``net(x, labels) -> output`` with ``labels`` of shape ``(B,)``; turning the
output into a score is :class:`sde_lab.score.ScoreModel`'s job. :func:`build_network` builds one from an
ml-collections config by ``config.model.name`` (DDPM++ is ``"ncsnpp"`` with the DDPM++ settings, as in
score_sde).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping

from torch import nn

from .ddpm import DDPM, ddpm_from_config
from .ncsnpp import NCSNpp, ncsnpp_from_config
from .mlp import MLPScoreNet, mlp_from_config

__all__ = ["NCSNpp", "DDPM", "MLPScoreNet", "NETWORKS", "build_network"]

# config.model.name -> constructor taking the whole config. Read-only; add entries here, not at runtime.
NETWORKS: Mapping[str, Callable[..., nn.Module]] = MappingProxyType(
    {
        "ncsnpp": ncsnpp_from_config,  # NCSN++ and DDPM++ (Song et al. 2021)
        "ddpm": ddpm_from_config,  # DDPM U-Net (Ho et al. 2020)
        # --- low-dimensional networks (MLP): add "mlp" below this line ---
        "mlp": mlp_from_config,  # residual MLP with a time embedding, for low-dimensional data
    }
)


def build_network(config) -> nn.Module:
    """The network named ``config.model.name`` built from ``config`` (sections ``data`` and ``model``)."""
    name = config.model.name
    try:
        builder = NETWORKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown network {name!r}; valid choices: {', '.join(sorted(NETWORKS))}") from None
    return builder(config)
