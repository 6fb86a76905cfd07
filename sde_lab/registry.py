"""Read-only name → constructor tables: the only place where names become objects.

Used by :func:`sde_lab.sample` (the entry point that accepts names), ``sde_lab.config`` (configs → objects)
and the command line. The library below them takes objects only and never imports this module. Each
table maps a name to a constructor (or function) and a one-line description; :func:`lookup` raises
``ValueError`` listing the valid names.

:data:`SOLVERS` entries are *factories* ``factory(path, steps, eps, t_max, **options) -> (solver, grid_fn)``:
each builds the solver object from its own named options (every option given is passed on — none is
dropped for equalling a default) and the solver's default grid for ``steps``, with the v1 meaning of
``steps`` per solver (intervals for ``pc``/``sdeint``, levels for ``ald`` and ``heun``, the NFE budget for
``dpm_solver``, the number of steps for ``dpm_solver_pp``). ``grid="uniform"`` restores v1's uniform-t grid
for ``pc`` (its default is uniform in log-SNR, ``experiments/pc_study.py``).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch

from . import correctors as _corr
from . import fast_samplers as _fast
from . import grids as _grids
from . import likelihood as _lik
from . import losses as _losses
from . import metrics as _metrics
from . import multistep as _ms
from . import predictors as _pred
from . import sampling as _sampling
from .analytic import TARGETS as _TARGETS
from .data import DATASETS as _DATASETS
from .model import PARAMETRIZATIONS as _PARAMS
from .model import TIME_INPUTS as _TIME_INPUTS
from .sde import VESDE, VPSDE, CosineVP, EDMPath, RectifiedFlow, SubVPSDE

__all__ = [
    "lookup",
    "make_sde",
    "make_predictor",
    "make_corrector",
    "make_solver",
    "solver_options",
    "SDES",
    "TARGETS",
    "PREDICTORS",
    "CORRECTORS",
    "SOLVERS",
    "DEFAULT_GRIDS",
    "GRIDS",
    "DIVERGENCES",
    "PROBES",
    "WEIGHTINGS",
    "PARAMETRIZATIONS",
    "TIME_INPUTS",
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


# --- paths / SDEs -------------------------------------------------------------------------------
SDES = _table(
    {
        "ve": (VESDE, "variance exploding (SMLD/NCSN limit), sigma_min=0.01, sigma_max=50"),
        "vp": (VPSDE, "variance preserving (DDPM limit), beta_min=0.1, beta_max=20"),
        "subvp": (SubVPSDE, "sub-VP, beta_min=0.1, beta_max=20"),
        "rectified_flow": (RectifiedFlow, "rectified flow / conditional OT, x_t = (1 - t) x_0 + t eps (Liu et al. 2023)"),
        "cosine": (CosineVP, "the cosine schedule as a VP path (Nichol & Dhariwal 2021), s=0.008"),
        "edm": (EDMPath, "EDM's path, alpha = 1, sigma = t on [0, sigma_max=80] (Karras et al. 2022)"),
    }
)


def make_sde(name: str, **kwargs) -> Any:
    """Build a path by name (``ve``, ``vp``, ``subvp``, ``rectified_flow``, ``cosine``, ``edm``) with optional hyperparameters."""
    return lookup(SDES, name, "SDE")(**kwargs)


# --- analytic oracle targets --------------------------------------------------------------------
TARGETS = _table(_TARGETS)

# --- parametrizations and time inputs of sde_lab.model.Model --------------------------------------
PARAMETRIZATIONS = _table({name: (cls, cls.__doc__.strip().splitlines()[0]) for name, cls in _PARAMS.items()})
TIME_INPUTS = tuple(_TIME_INPUTS)

# --- predictors, correctors ---------------------------------------------------------------------
PREDICTORS = _table(
    {
        "euler_maruyama": (_pred.EulerMaruyama, "Euler-Maruyama on the reverse SDE"),
        "probability_flow": (_pred.ProbabilityFlowEuler, "Euler step of the probability-flow ODE"),
        "reverse_diffusion": (_pred.ReverseDiffusion, "reverse diffusion, Song et al. 2021 eq. (46)"),
        "ancestral": (_pred.Ancestral, "ancestral sampling (DDPM for VP, SMLD for VE, any affine path)"),
        "none": (_pred.NoPredictor, "no predictor (identity step)"),
    }
)
CORRECTORS = _table(
    {
        "langevin": (_corr.Langevin, "Langevin corrector, step from snr and score/noise norms (Song et al. 2021, Alg. 4-5), snr 0.16"),
        "langevin_per_sample": (lambda **kw: _corr.Langevin(norm="per_sample", **kw),
                                "Langevin corrector with each sample's own norms (batch-independent samples), snr 0.16"),
        "ald": (_corr.AnnealedLangevin, "annealed Langevin dynamics, step from snr and sigma(t) (Song & Ermon 2019), snr 0.16"),
        "none": (_corr.NoCorrector, "no corrector"),
    }
)


def make_predictor(name_or_obj) -> _pred.Predictor:
    """A predictor from its name (or as given)."""
    if isinstance(name_or_obj, _pred.Predictor):
        return name_or_obj
    return lookup(PREDICTORS, name_or_obj, "predictor")()


def make_corrector(name_or_obj, *, snr: float | None = None, n_steps: int | None = None) -> _corr.Corrector:
    """A corrector from its name with the options given (each is passed on; ``none`` takes none)."""
    opts = {k: v for k, v in (("snr", snr), ("n_steps", n_steps)) if v is not None}
    if isinstance(name_or_obj, _corr.Corrector):
        if opts:
            raise ValueError(f"snr / n_corrector_steps configure a corrector given by name; set them on {name_or_obj!r} itself")
        return name_or_obj
    ctor = lookup(CORRECTORS, name_or_obj, "corrector")
    if ctor is _corr.NoCorrector and opts:
        given = ", ".join(f"{'n_corrector_steps' if k == 'n_steps' else k}={v!r}" for k, v in opts.items())
        raise ValueError(f"corrector 'none' takes no options, got {given}; choose corrector='langevin' or 'ald'")
    return ctor(**opts)


# --- grids ---------------------------------------------------------------------------------------
def _endpoints(path, steps, eps, t_max=None):
    t_max = float(path.t_max) if t_max is None else float(t_max)
    return torch.tensor([t_max, float(eps)], dtype=torch.float64)


GRIDS = _table(
    {
        "uniform": (lambda path, steps, eps, t_max=None, rho=None: _grids.uniform_time_grid(steps, eps, path.t_max if t_max is None else t_max),
                    "uniform in t (the PC sampler's grid)"),
        "karras": (lambda path, steps, eps, t_max=None, rho=7.0: _grids.karras_grid(path, steps, eps, rho=7.0 if rho is None else rho, t_max=t_max),
                   "Karras et al. 2022 rho-schedule in sigma-tilde (rho=7)"),
        "logsnr": (lambda path, steps, eps, t_max=None, rho=None: _grids.logsnr_grid(path, steps, eps, t_max=t_max),
                   "uniform in the half log-SNR lambda (DPM-Solver); geometric in sigma-tilde"),
        "geometric": (lambda path, steps, eps, t_max=None, rho=None: _grids.geometric_noise_grid(path, steps, eps, t_max=t_max),
                      "geometric noise levels (annealed Langevin dynamics); the same as logsnr"),
        "endpoints": (lambda path, steps, eps, t_max=None, rho=None: _endpoints(path, steps, eps, t_max),
                      "just [t_max, eps] (adaptive solvers choose their own steps)"),
        "quadratic": (lambda path, steps, eps, t_max=None, rho=None: _grids.quadratic_time_grid(path, steps, eps, t_max=t_max),
                      "quadratic in the step index (DDIM)"),
    }
)
_HEUN_GRIDS = {"karras": "karras", "uniform_t": "uniform", "log_sigma": "logsnr"}
_DPM_GRIDS = {"logsnr": "logsnr", "time": "uniform"}


def _grid(kind, path, steps, eps, t_max, rho=None):
    return lookup(GRIDS, kind, "grid")(path, steps, eps, t_max, rho)


# --- solvers: factory(path, steps, eps, t_max, **options) -> (solver, grid) -------------------------
def _pc(path, steps, eps, t_max, *, predictor="reverse_diffusion", corrector="langevin", snr=None,
        n_corrector_steps=None, denoise=True, final=None):
    final = final if final is not None else ("tweedie" if denoise else "none")
    solver = _sampling.PredictorCorrector(make_predictor(predictor),
                                          make_corrector(corrector, snr=snr, n_steps=n_corrector_steps), final)
    return solver, lambda: _grid("logsnr", path, steps, eps, t_max)


def _ald(path, steps, eps, t_max, *, snr=None, n_corrector_steps=None, denoise=True):
    opts = {k: v for k, v in (("snr", snr), ("n_steps", n_corrector_steps)) if v is not None}
    return _sampling.AnnealedLangevinDynamics(denoise=denoise, **opts), lambda: _grid("geometric", path, steps, eps, t_max)


def _ode(path, steps, eps, t_max, *, rtol=1e-5, atol=1e-5, method="RK45", denoise=True):
    return _sampling.ProbabilityFlowODE(rtol=rtol, atol=atol, method=method, denoise=denoise), lambda: _endpoints(path, steps, eps, t_max)


def _sdeint(path, steps, eps, t_max, *, method="euler", adaptive=False, rtol=1e-5, atol=1e-5, brownian="interval",
            denoise=True):
    solver = _sampling.ReverseSDE(method=method, adaptive=adaptive, rtol=rtol, atol=atol, brownian=brownian, denoise=denoise)
    return solver, lambda: _grid("uniform", path, steps, eps, t_max)


def _heun(path, steps, eps, t_max, *, schedule="karras", rho=7.0, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"),
          s_noise=1.0, denoise=True):
    if schedule not in _HEUN_GRIDS:
        raise ValueError(f"unknown schedule {schedule!r}; valid choices: {', '.join(_HEUN_GRIDS)}")
    solver = _fast.Heun(s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise, denoise=denoise)
    levels = steps if denoise else steps + 1  # v1: `steps` noise levels, the last step to 0 being the denoiser
    if levels == 1:
        return solver, lambda: _endpoints(path, steps, eps, t_max)[:1]
    return solver, lambda: _grid(_HEUN_GRIDS[schedule], path, levels - 1, eps, t_max, rho)


def _dpm(path, steps, eps, t_max, *, order=3, spacing="logsnr", denoise=True):
    if spacing not in _DPM_GRIDS:
        raise ValueError(f"unknown spacing {spacing!r}; valid choices: {', '.join(_DPM_GRIDS)}")
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"dpm_solver: unknown order {order!r}; valid choices: 1, 2, 3")
    orders = _fast.dpm_solver_orders(steps, order)  # `steps` is the NFE budget
    solver = _fast.DPMSolver(order=order, last_order=orders[-1], denoise=denoise)
    return solver, lambda: _grid(_DPM_GRIDS[spacing], path, len(orders), eps, t_max)


def _dpmpp(path, steps, eps, t_max, *, spacing="logsnr", order=2, lower_order_final=None, third_order="exact",
           denoise=True):
    if spacing not in _DPM_GRIDS:
        raise ValueError(f"unknown spacing {spacing!r}; valid choices: {', '.join(_DPM_GRIDS)}")
    solver = _fast.DPMSolverPP(order=order, lower_order_final=lower_order_final, third_order=third_order, denoise=denoise)
    return solver, lambda: _grid(_DPM_GRIDS[spacing], path, steps, eps, t_max)


def _on_grid(cls, grid_kind):
    """A factory for a solver whose ``steps`` are its grid's intervals (default grid ``grid_kind``)."""

    def factory(path, steps, eps, t_max, **options):
        return cls(**options), lambda: _grid(grid_kind, path, steps, eps, t_max)

    return factory


def _dpm_adaptive(path, steps, eps, t_max, **options):
    return _ms.AdaptiveDPMSolver(**options), lambda: _endpoints(path, steps, eps, t_max)


def _adaptive(path, steps, eps, t_max, **options):
    return _fast.AdaptiveSDE(**options), lambda: _endpoints(path, steps, eps, t_max)


_ADAPTIVE_OPTIONS = ("abs_tol", "rel_tol", "h_init", "safety", "exponent", "extrapolate", "error_norm", "max_iters", "denoise")

SOLVERS = _table(
    {
        "pc": (_pc, "predictor-corrector sampler (any predictor x corrector); steps = intervals, uniform in log-SNR"),
        "ode": (_ode, "probability-flow ODE with scipy solve_ivp (adaptive, float64)"),
        "sdeint": (_sdeint, "reverse SDE with torchsde (euler, milstein, srk; fixed/adaptive)"),
        "ald": (_ald, "annealed Langevin dynamics (Song & Ermon 2019), snr 0.35, n_corrector_steps per level"),
        "heun": (_heun, "Heun 2nd-order sigma-form ODE + optional churn (Karras et al. 2022, Alg. 2); NFE 2*steps-1"),
        "dpm_solver": (_dpm, "DPM-Solver-1/2/3 single-step (Lu et al. 2022a); steps = NFE budget"),
        "dpm_solver_pp": (_dpmpp, "DPM-Solver++(2M/3M) multistep, data prediction (Lu et al. 2022b); NFE = steps + 1"),
        "adaptive": (_adaptive, "adaptive reverse-SDE EM/improved-Euler pair (Jolicoeur-Martineau et al. 2021)"),
        "dpm_solver_pp_sde": (_on_grid(_ms.DPMSolverPPSDE, "karras"),
                              "DPM-Solver++(2M) SDE with eta (Lu et al. 2022b); steps = intervals, karras grid"),
        "euler_ancestral": (_on_grid(_ms.EulerAncestral, "karras"), "Euler-ancestral with eta (k-diffusion); karras grid"),
        "unipc": (_on_grid(_ms.UniPC, "logsnr"), "UniPC: UniP-p + UniC corrector, bh1/bh2, orders 1-3 (Zhao et al. 2023)"),
        "deis": (_on_grid(_ms.DEIS, "logsnr"), "DEIS tAB / rhoAB multistep, orders 1-3 (Zhang & Chen 2023)"),
        "dpm_adaptive": (_dpm_adaptive, "adaptive DPM-Solver-12/23 ODE solver (Lu et al. 2022a, Alg. 4), rtol/atol"),
    }
)

_OPTIONS = {
    "pc": ("predictor", "corrector", "snr", "n_corrector_steps", "denoise", "final"),
    "ode": ("rtol", "atol", "method", "denoise"),
    "sdeint": ("method", "adaptive", "rtol", "atol", "brownian", "denoise"),
    "ald": ("snr", "n_corrector_steps", "denoise"),
    "heun": ("schedule", "rho", "s_churn", "s_tmin", "s_tmax", "s_noise", "denoise"),
    "dpm_solver": ("order", "spacing", "denoise"),
    "dpm_solver_pp": ("spacing", "order", "lower_order_final", "third_order", "denoise"),
    "adaptive": _ADAPTIVE_OPTIONS,
    "dpm_solver_pp_sde": ("order", "eta", "s_noise", "solver_type", "lower_order_final", "denoise"),
    "euler_ancestral": ("eta", "s_noise", "denoise"),
    "unipc": ("order", "variant", "prediction", "corrector", "lower_order_final", "denoise"),
    "deis": ("order", "variable", "lower_order_final", "denoise"),
    "dpm_adaptive": ("order", "prediction", "rtol", "atol", "h_init", "safety", "error_norm", "max_iters", "denoise"),
}


# the grid each named solver builds for `steps` when none is given (sde_lab.sample; `sde-lab solvers` prints it)
DEFAULT_GRIDS = MappingProxyType({
    "pc": "logsnr", "ode": "endpoints", "sdeint": "uniform", "ald": "geometric", "heun": "karras (rho=7, EDM)",
    "dpm_solver": "logsnr (Lu et al.)", "dpm_solver_pp": "logsnr (Lu et al.)", "adaptive": "endpoints",
    "dpm_solver_pp_sde": "karras (rho=7)", "euler_ancestral": "karras (rho=7)", "unipc": "logsnr", "deis": "logsnr",
    "dpm_adaptive": "endpoints",
})


def solver_options(name: str) -> tuple[str, ...]:
    """The options the named solver takes."""
    lookup(SOLVERS, name, "solver")
    return _OPTIONS[name]


def _show(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"<tensor of shape {tuple(value.shape)}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def make_solver(name: str, path, steps: int, eps: float, t_max: float | None = None, **options):
    """``(solver, default_grid)`` for the named solver with ``options`` (``default_grid()`` builds the solver's
    grid for ``steps``); an option it does not take is an error naming the options it takes."""
    factory = lookup(SOLVERS, name, "solver")
    allowed = _OPTIONS[name]
    for key, value in options.items():
        if key not in allowed:
            raise ValueError(f"solver {name!r} does not take option {key}={_show(value)}; it takes: {', '.join(allowed)}")
    return factory(path, steps, eps, t_max, **options)


# --- likelihood (divergence estimators, probes) ---------------------------------------------------
DIVERGENCES = _table(
    {
        "exact": (_lik.ExactDivergence, "trace of the drift's Jacobian by autograd (O(D) passes; low-dim data, checks)"),
        "hutchinson": (_lik.HutchinsonDivergence, "Hutchinson-Skilling estimate v^T J v, probes fixed along the ODE"),
    }
)
PROBES = tuple(_lik.PROBES)  # probe distributions of HutchinsonDivergence: rademacher (default), gaussian

# --- loss weightings ------------------------------------------------------------------------------
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
        "flow_matching": (_losses.FlowMatchingWeighting, "velocity MSE (flow matching), t uniform or logit-normal"),
        "edm": (_losses.EDMWeighting, "EDM: log-normal sigma, lambda = (sigma^2 + sigma_d^2)/(sigma sigma_d)^2 on the denoiser"),
        "v": (_losses.VPredictionWeighting, "v-prediction MSE (Salimans & Ho 2022), t ~ U"),
        "min_snr": (_losses.MinSNRWeighting, "min-SNR-gamma (Hang et al. 2023), t ~ U"),
    }
)

# --- datasets and metrics -----------------------------------------------------------------------
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
