"""Read-only name → constructor tables, used by the CLI and configs (strings stay at the edge).

Library functions take objects; only the CLI, configs and the string-valued options of the
:func:`sde_lab.sample` entry point resolve names here. Each table maps a name to a constructor (or
function) and a one-line description; :func:`lookup` raises ``ValueError`` listing the valid names.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping

from .analytic import TARGETS as _TARGETS
from .sde import VESDE, VPSDE, SubVPSDE

__all__ = [
    "lookup",
    "make_sde",
    "SDES",
    "TARGETS",
    "PREDICTORS",
    "CORRECTORS",
    "SOLVERS",
    "DIVERGENCES",
    "PROBES",
    "WEIGHTINGS",
    "DATASETS",
    "METRICS",
]


def _table(entries: dict[str, tuple[Callable[..., Any], str]]) -> Mapping[str, tuple[Callable[..., Any], str]]:
    return MappingProxyType(dict(entries))


def lookup(table: Mapping[str, tuple[Callable[..., Any], str]], name: str, kind: str) -> Callable[..., Any]:
    """The constructor registered under ``name``; unknown names list the valid choices."""
    try:
        return table[name][0]
    except (KeyError, TypeError):
        raise ValueError(f"unknown {kind} {name!r}; valid choices: {', '.join(sorted(table))}") from None


# --- SDEs ---------------------------------------------------------------------------------------
SDES = _table(
    {
        "ve": (VESDE, "variance exploding (SMLD/NCSN limit), sigma_min=0.01, sigma_max=50"),
        "vp": (VPSDE, "variance preserving (DDPM limit), beta_min=0.1, beta_max=20"),
        "subvp": (SubVPSDE, "sub-VP, beta_min=0.1, beta_max=20"),
    }
)


def make_sde(name: str, **kwargs) -> Any:
    """Build an SDE by name (``ve``, ``vp``, ``subvp``) with optional hyperparameters."""
    return lookup(SDES, name, "SDE")(**kwargs)


# --- analytic oracle targets --------------------------------------------------------------------
TARGETS = _table(_TARGETS)

# --- samplers (predictors, correctors, solvers) --------------------------------------------------
from . import correctors as _corr  # noqa: E402
from . import predictors as _pred  # noqa: E402
from . import sampling as _sampling  # noqa: E402
from . import fast_samplers as _fast  # noqa: E402

PREDICTORS = _table(
    {
        "euler_maruyama": (_pred.EulerMaruyama, "Euler-Maruyama on the reverse SDE"),
        "probability_flow": (_pred.ProbabilityFlowEuler, "Euler step of the probability-flow ODE"),
        "reverse_diffusion": (_pred.ReverseDiffusion, "reverse diffusion, Song et al. 2021 eq. (46)"),
        "ancestral": (_pred.Ancestral, "ancestral sampling (DDPM for VP, SMLD for VE, any linear SDE)"),
        "none": (_pred.NoPredictor, "no predictor (identity step)"),
    }
)
CORRECTORS = _table(
    {
        "langevin": (_corr.Langevin, "Langevin corrector, step from snr and score/noise norms (Song et al. 2021, Alg. 4-5)"),
        "ald": (_corr.AnnealedLangevin, "annealed Langevin dynamics, step from snr and sigma(t) (Song & Ermon 2019)"),
        "none": (_corr.NoCorrector, "no corrector"),
    }
)
# name -> solver(sde, score_fn, shape, *, steps, eps, generator, device, **options) -> SampleResult
SOLVERS = _table(
    {
        "pc": (_sampling.pc_sample, "predictor-corrector sampler (any predictor x corrector)"),
        "ode": (_sampling.ode_sample, "probability-flow ODE with scipy solve_ivp (adaptive, float64)"),
        "sdeint": (_sampling.sdeint_sample, "reverse SDE with torchsde (euler, milstein, srk; fixed/adaptive)"),
        "ald": (_sampling.ald_sample, "annealed Langevin dynamics (Song & Ermon 2019), n_corrector_steps per level"),
        "heun": (_fast.heun_sample, "Heun 2nd-order sigma-form ODE + optional churn (Karras et al. 2022, Alg. 2); NFE 2*steps-1"),
        "dpm_solver": (_fast.dpm_solver_sample, "DPM-Solver-1/2/3 single-step (Lu et al. 2022a); steps = NFE budget"),
        "dpm_solver_pp": (_fast.dpm_solver_pp_sample, "DPM-Solver++(2M) multistep, data prediction (Lu et al. 2022b); NFE = steps"),
        "adaptive": (_fast.adaptive_sample, "adaptive reverse-SDE EM/improved-Euler pair (Jolicoeur-Martineau et al. 2021)"),
    }
)

# --- likelihood (divergence estimators, probes) ---------------------------------------------------
from .likelihood import PROBES as _PROBES  # noqa: E402  (section-local import keeps concurrent edits apart)
from .likelihood import ExactDivergence, HutchinsonDivergence  # noqa: E402

DIVERGENCES = _table(
    {
        "exact": (ExactDivergence, "trace of the drift's Jacobian by autograd (O(D) passes; low-dim data, checks)"),
        "hutchinson": (HutchinsonDivergence, "Hutchinson-Skilling estimate v^T J v, probes fixed along the ODE"),
    }
)
PROBES = tuple(_PROBES)  # probe distributions of HutchinsonDivergence: rademacher (default), gaussian

# --- networks, parametrizations and losses -------------------------------------------------------
from . import losses as _losses  # noqa: E402  (section-local import keeps concurrent edits apart)

# name -> (time weighting of the DSM loss, description); configs select them with training.likelihood_weighting
# and training.importance_sampling (score_sde's flags), the library takes the objects.
WEIGHTINGS = _table(
    {
        "sigma2": (_losses.SigmaSquaredWeighting, "lambda(t) = sigma(t)^2, t ~ U[eps, T] (Song et al. 2021 default)"),
        "likelihood": (_losses.LikelihoodWeighting, "lambda(t) = g(t)^2, t ~ U[eps, T]: the likelihood bound"),
        "likelihood_importance": (
            _losses.ImportanceLikelihoodWeighting,
            "lambda(t) = g(t)^2 with t ~ g^2/sigma^2 (importance sampled, Song, Durkan, Murray & Ermon 2021)",
        ),
    }
)

# --- datasets and metrics -----------------------------------------------------------------------
from . import metrics as _metrics  # noqa: E402  (section-local import keeps concurrent edits apart)
from .data import DATASETS as _DATASETS  # noqa: E402

DATASETS = _table(_DATASETS)  # name -> (get_dataset bound to the name, description); see sde_lab.data
# name -> (function on samples/features, description). Image metrics run on network features:
# fid (Inception pool3), fid-lenet (penultimate layer of sde_lab.classifier.Classifier), is (its logits).
METRICS = _table(
    {
        "sw2": (_metrics.sliced_wasserstein, "sliced Wasserstein-2 (random projections, exact 1-D W2)"),
        "mmd": (_metrics.mmd2, "unbiased MMD^2, sum of RBF kernels at 0.25-4x the median distance"),
        "energy": (_metrics.energy_distance, "energy distance (U-statistic), Szekely & Rizzo 2013"),
        "fid": (_metrics.frechet_distance_from_features, "FID: Frechet distance of Inception-v3 pool3 features (TorchScript)"),
        "fid-lenet": (_metrics.frechet_distance_from_features, "FID-LeNet: Frechet distance of a trained small classifier's features"),
        "is": (_metrics.inception_score, "IS-LeNet: Inception Score from the small classifier's logits"),
    }
)
