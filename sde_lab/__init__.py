"""sde_lab: score-based generative modelling through stochastic differential equations.

The curated public API; see the README for a tour.
"""

from .analytic import GaussianMixture, make_target
from .sde import LIKELIHOOD_EPS, SAMPLING_EPS, SDE, VESDE, VPSDE, SubVPSDE

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "SAMPLING_EPS",
    "LIKELIHOOD_EPS",
    "GaussianMixture",
    "make_target",
]
