"""sde_lab: score-based generative modelling through stochastic differential equations.

The curated public API; see the README for a tour. Everything downstream of training sees only a score
function ``score_fn(x, t)`` — a network wrapped in :class:`ScoreModel`, a loaded checkpoint, or the exact
score of an analytic :class:`GaussianMixture` are interchangeable.
"""

from .analytic import GaussianMixture, make_target
from .checkpoints import load_official_checkpoint
from .conditional import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    Colorization,
    Inpainting,
    colorize,
    conditional_sample,
    inpaint,
    smc_inpaint,
)
from .data import CenteredScaler, ZeroOneScaler, dataset_info, get_dataset, get_pixels, uniform_dequantize
from .fast_samplers import adaptive_sample, dpm_solver_pp_sample, dpm_solver_sample, heun_sample
from .likelihood import bits_per_dim, log_likelihood
from .losses import LikelihoodWeighting, SigmaSquaredWeighting, ddpm_loss, dsm_loss, smld_loss
from .metrics import energy_distance, frechet_distance, mmd2, sliced_wasserstein
from .nets import build_network
from .sampling import SampleResult, ode_encode, ode_sample, pc_sample, sample, sdeint_sample
from .score import ScoreModel
from .sde import LIKELIHOOD_EPS, SAMPLING_EPS, SDE, VESDE, VPSDE, SubVPSDE
from .train import EMA, Trainer, load_checkpoint_score, load_config, train

__version__ = "0.1.0"

__all__ = [
    # SDEs and the oracle
    "SDE",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "SAMPLING_EPS",
    "LIKELIHOOD_EPS",
    "GaussianMixture",
    "make_target",
    # sampling
    "sample",
    "SampleResult",
    "pc_sample",
    "ode_sample",
    "ode_encode",
    "sdeint_sample",
    "heun_sample",
    "dpm_solver_sample",
    "dpm_solver_pp_sample",
    "adaptive_sample",
    # controllable generation
    "conditional_sample",
    "inpaint",
    "smc_inpaint",
    "colorize",
    "Inpainting",
    "Colorization",
    "ClassifierGuidance",
    "ClassifierFreeGuidance",
    # likelihood
    "log_likelihood",
    "bits_per_dim",
    # models, losses, training
    "ScoreModel",
    "build_network",
    "dsm_loss",
    "smld_loss",
    "ddpm_loss",
    "SigmaSquaredWeighting",
    "LikelihoodWeighting",
    "train",
    "Trainer",
    "EMA",
    "load_config",
    "load_checkpoint_score",
    "load_official_checkpoint",
    # data and metrics
    "get_dataset",
    "get_pixels",
    "dataset_info",
    "ZeroOneScaler",
    "CenteredScaler",
    "uniform_dequantize",
    "sliced_wasserstein",
    "mmd2",
    "energy_distance",
    "frechet_distance",
]
