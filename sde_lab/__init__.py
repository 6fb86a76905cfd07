"""sde_lab: score-based generative modelling on Gaussian paths — VE, VP, sub-VP, cosine, EDM, rectified flow
and any path from α(t), σ(t).

The curated public API; see the README for a tour. Everything downstream of training sees a *model*
(:class:`DiffusionModel`: ``score``, ``eps``, ``x0``, ``velocity`` on a path) — a network wrapped in
:class:`Model`, a loaded checkpoint, the exact oracle of an analytic :class:`GaussianMixture`, or a plain
score function through :func:`as_model` are interchangeable. Solvers are objects called on a model, an
initial state and an explicit time grid; :func:`sample` is the entry point that also takes names.
"""

from .analytic import GaussianMixture, OracleModel, make_target
from .config import conditional_sample, sample
from .checkpoints import load_official_checkpoint
from .conditional import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    Colorization,
    Inpainting,
    colorize,
    inpaint,
    smc_inpaint,
)
from .config import build_model, build_trainer, load_checkpoint_score, load_config, train
from .correctors import AnnealedLangevin, Langevin, NoCorrector
from .data import CenteredScaler, ZeroOneScaler, dataset_info, get_dataset, get_pixels, uniform_dequantize
from .fast_samplers import (
    AdaptiveSDE,
    DPMSolver,
    DPMSolverPP,
    Heun,
    adaptive_sample,
    dpm_solver_pp_sample,
    dpm_solver_sample,
    heun_sample,
)
from .multistep import DEIS, AdaptiveDPMSolver, DPMSolverPPSDE, EulerAncestral, UniPC
from .noise import GeneratorNoise, PerSampleNoise
from .grids import geometric_noise_grid, karras_grid, karras_sigmas, logsnr_grid, quadratic_time_grid, uniform_time_grid
from .likelihood import bits_per_dim, log_likelihood
from .losses import (
    DDPMObjective,
    DSMObjective,
    EDMWeighting,
    FlowMatchingWeighting,
    ImportanceLikelihoodWeighting,
    LikelihoodWeighting,
    MinSNRWeighting,
    SigmaSquaredWeighting,
    VPredictionWeighting,
    SMLDObjective,
    ddpm_loss,
    dsm_loss,
    smld_loss,
)
from .metrics import energy_distance, frechet_distance, mmd2, sliced_wasserstein
from .model import DiffusionModel, EDMPreconditioning, Model, ScoreModel, as_model, change_path
from .nets import build_network
from .noise import GeneratorNoise
from .predictors import Ancestral, EulerMaruyama, NoPredictor, ProbabilityFlowEuler, ReverseDiffusion
from .sampling import (
    AnnealedLangevinDynamics,
    PredictorCorrector,
    ProbabilityFlowODE,
    ReverseSDE,
    SampleResult,
    Solver,
    ode_encode,
    ode_sample,
    pc_sample,
    sdeint_sample,
)
from .sde import (
    LIKELIHOOD_EPS,
    SAMPLING_EPS,
    SDE,
    VESDE,
    VPSDE,
    DiscreteVP,
    AffinePath,
    CosineVP,
    EDMPath,
    GaussianPath,
    RectifiedFlow,
    SubVPSDE,
)
from .training import EMA, Trainer, TrainResult

__version__ = "0.2.0"

__all__ = [
    # paths and the oracle
    "SDE",
    "GaussianPath",
    "VESDE",
    "VPSDE",
    "DiscreteVP",
    "SubVPSDE",
    "CosineVP",
    "EDMPath",
    "RectifiedFlow",
    "AffinePath",
    "SAMPLING_EPS",
    "LIKELIHOOD_EPS",
    "GaussianMixture",
    "OracleModel",
    "make_target",
    # models
    "DiffusionModel",
    "Model",
    "ScoreModel",
    "as_model",
    "change_path",
    "EDMPreconditioning",
    "build_network",
    "build_model",
    # grids and noise
    "uniform_time_grid",
    "karras_sigmas",
    "karras_grid",
    "logsnr_grid",
    "geometric_noise_grid",
    "quadratic_time_grid",
    "GeneratorNoise",
    # solvers
    "Solver",
    "SampleResult",
    "PredictorCorrector",
    "EulerMaruyama",
    "ReverseDiffusion",
    "Ancestral",
    "ProbabilityFlowEuler",
    "NoPredictor",
    "Langevin",
    "AnnealedLangevin",
    "NoCorrector",
    "AnnealedLangevinDynamics",
    "ProbabilityFlowODE",
    "ReverseSDE",
    "Heun",
    "DPMSolver",
    "DPMSolverPP",
    "DPMSolverPPSDE",
    "EulerAncestral",
    "UniPC",
    "DEIS",
    "AdaptiveDPMSolver",
    "AdaptiveSDE",
    "PerSampleNoise",
    "GeneratorNoise",
    "sample",
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
    # losses, training
    "dsm_loss",
    "smld_loss",
    "ddpm_loss",
    "SigmaSquaredWeighting",
    "LikelihoodWeighting",
    "ImportanceLikelihoodWeighting",
    "FlowMatchingWeighting",
    "EDMWeighting",
    "VPredictionWeighting",
    "MinSNRWeighting",
    "DSMObjective",
    "SMLDObjective",
    "DDPMObjective",
    "Trainer",
    "TrainResult",
    "EMA",
    "train",
    "build_trainer",
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
