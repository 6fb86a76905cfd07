"""Other libraries' samplers on sde_lab models: diffusers' schedulers and k-diffusion's samplers.

Benchmark and test tooling (the ``bench`` extra; nothing in ``sde_lab`` imports these libraries). Each
runner takes an sde_lab model (a network model or the exact oracle) and a prior draw ``x_T`` and returns
``(samples, nfe)`` with the peer's own algorithm, in its own conventions:

* **diffusers** schedulers are variance-preserving and discrete: :func:`diffusers_scheduler` builds one whose
  ``ᾱ_k`` is the sde_lab path's ``α(t_k)²`` at ``t_k = (k + 1)/1000`` (``trained_betas``), so its noise levels
  ``σ_k = √((1 − ᾱ_k)/ᾱ_k)`` are the path's σ̃ and every α, σ, λ it uses equals the path's. The model is
  called at the time with that σ̃. VP-type paths only (``α² + σ² = 1``: VP, cosine); VE and sub-VP are not
  expressible (:func:`diffusers_supports`).
* **k-diffusion** samplers work in the σ-form ``x̂ = x/α`` with a denoiser ``D(x̂, σ̃)``: :class:`KDenoiser`
  wraps any sde_lab model on any path (as k-diffusion's own ``VDenoiser`` / ``CompVisDenoiser`` do for VP
  models), so every path runs natively there.

k-diffusion's package ``__init__`` imports its training stack (CLIP, wandb, clean-fid, …; and pins
numpy < 2 through ``dctorch``); its samplers need only ``k_diffusion.sampling``, which
:func:`k_diffusion_sampling` loads on its own: ``pip install --no-deps k-diffusion`` is enough.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import types

import torch

from sde_lab.interop import KDiffusionDenoiser

N_TRAIN = 1000  # diffusers' num_train_timesteps


# --- k-diffusion ------------------------------------------------------------------------------------------
def k_diffusion_sampling():
    """``k_diffusion.sampling`` without the package's heavy ``__init__``; ``None`` if k-diffusion is absent."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        return None
    if "k_diffusion" not in sys.modules:
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = pkg
    return importlib.import_module("k_diffusion.sampling")


# an sde_lab model as k-diffusion's D(x̂, σ̃) on the σ-form state x̂ = x/α (counts its evaluations in .nfe)
KDenoiser = KDiffusionDenoiser


def k_sigmas(path, n: int, eps: float, kind: str = "karras", rho: float = 7.0) -> torch.Tensor:
    """``n`` σ̃ levels from σ̃(t_max) to σ̃(eps) (k-diffusion's ``karras`` or ``exponential``) and a final 0."""
    t = torch.tensor([float(path.t_max), float(eps)], dtype=torch.float64)
    s_max, s_min = path.sigma_tilde(t).tolist()
    if kind == "karras":
        r = torch.linspace(0, 1, n, dtype=torch.float64)
        s = (s_max ** (1 / rho) + r * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    else:
        s = torch.linspace(math.log(s_max), math.log(s_min), n, dtype=torch.float64).exp()
    return torch.cat([s, s.new_zeros(1)])


class _Noise:
    """k-diffusion ``noise_sampler(σ, σ_next)`` from a generator (standard normal, like its default)."""

    def __init__(self, like: torch.Tensor, generator: torch.Generator):
        self.like, self.g = like, generator

    def __call__(self, sigma, sigma_next):
        return torch.randn(self.like.shape, generator=self.g, dtype=self.like.dtype)


K_SAMPLERS = {  # name -> (k-diffusion function, extra kwargs, model evaluations per σ interval)
    "k:euler": ("sample_euler", {}, 1),
    "k:heun": ("sample_heun", {}, 2),
    "k:dpm_2": ("sample_dpm_2", {}, 2),
    "k:lms": ("sample_lms", {}, 1),
    "k:dpmpp_2m": ("sample_dpmpp_2m", {}, 1),
    "k:dpmpp_3m": ("sample_dpmpp_3m_sde", {"eta": 0.0}, 1),
    "k:euler_ancestral": ("sample_euler_ancestral", {}, 1),
    "k:dpmpp_2m_sde": ("sample_dpmpp_2m_sde", {}, 1),
    "k:dpmpp_3m_sde": ("sample_dpmpp_3m_sde", {}, 1),
}


def run_k_diffusion(name: str, model, x_T: torch.Tensor, nfe: int, eps: float, *, sigmas: str = "karras",
                    generator: torch.Generator | None = None, **kwargs):
    """k-diffusion sampler ``name`` (:data:`K_SAMPLERS`) at an NFE budget; ``(samples, nfe)``. The last σ
    interval ends at 0 (k-diffusion's denoising step)."""
    ks = k_diffusion_sampling()
    fn_name, extra, per = K_SAMPLERS[name]
    n = nfe if per == 1 else (nfe + 1) // 2  # heun / dpm_2: 2 per interval, 1 for the last one (to σ = 0)
    den = KDenoiser(model)
    path = model.path
    sig = k_sigmas(path, n, eps, sigmas)
    x_hat = x_T.double() / float(path.marginal(torch.tensor([float(path.t_max)], dtype=torch.float64))[0])
    kw = {**extra, **kwargs}
    if "sde" in fn_name or "ancestral" in fn_name:
        if not ("eta" in kw and kw["eta"] == 0.0):
            kw["noise_sampler"] = _Noise(x_hat, generator or torch.Generator().manual_seed(0))
    x = getattr(ks, fn_name)(den, x_hat, sig.to(x_hat.dtype), disable=True, **kw)
    return x, den.nfe


def run_k_adaptive(model, x_T: torch.Tensor, eps: float, *, order: int = 3, rtol: float = 0.05, atol: float = 0.0078):
    """k-diffusion's ``sample_dpm_adaptive`` (Lu et al. 2022a, §4.2, PID-controlled) from σ̃(t_max) to σ̃(eps)."""
    ks = k_diffusion_sampling()
    den = KDenoiser(model)
    path = model.path
    s_max, s_min = path.sigma_tilde(torch.tensor([float(path.t_max), float(eps)], dtype=torch.float64)).tolist()
    x_hat = x_T.double() / float(path.marginal(torch.tensor([float(path.t_max)], dtype=torch.float64))[0])
    x, info = ks.sample_dpm_adaptive(den, x_hat, s_min, s_max, order=order, rtol=rtol, atol=atol, disable=True,
                                     return_info=True)
    return x, den.nfe


# --- diffusers --------------------------------------------------------------------------------------------
def diffusers_supports(path) -> bool:
    """diffusers' schedulers assume ``α² + σ² = 1`` (VP-type paths)."""
    t = torch.linspace(0.01, 0.99, 7, dtype=torch.float64)
    a, s = path.marginal(t)
    return bool(torch.allclose(a**2 + s**2, torch.ones_like(a), atol=1e-9))


def trained_betas(path) -> list[float]:
    t = torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / N_TRAIN
    t = t.clamp(max=float(path.t_max))
    abar = path.marginal(t)[0] ** 2
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return (1 - abar / prev).clamp(1e-12, 0.999).tolist()


SCHEDULERS = {  # name -> (diffusers class, config, whether the scheduler's state is the σ-form)
    "d:dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, False),
    "d:dpmpp_3m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}, False),
    "d:dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, False),
    "d:unipc_2": ("UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh2"}, False),
    "d:unipc_3": ("UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh2"}, False),
    "d:unipc_2_bh1": ("UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh1"}, False),
    "d:deis_2": ("DEISMultistepScheduler", {"solver_order": 2}, False),
    "d:deis_3": ("DEISMultistepScheduler", {"solver_order": 3}, False),
    "d:euler_ancestral": ("EulerAncestralDiscreteScheduler", {}, True),
    "d:heun": ("HeunDiscreteScheduler", {}, True),
}


def diffusers_scheduler(name: str, path, **config):
    import diffusers

    cls_name, base, sigma_form = SCHEDULERS[name]
    cls = getattr(diffusers, cls_name)
    return cls(num_train_timesteps=N_TRAIN, trained_betas=trained_betas(path), prediction_type="epsilon",
               **{**base, **config}), sigma_form


def run_diffusers(name: str, model, x_T: torch.Tensor, steps: int, *, generator: torch.Generator | None = None,
                  **config):
    """diffusers scheduler ``name`` (:data:`SCHEDULERS`) with ``steps`` inference steps on an sde_lab model of a
    VP-type path; the loop of diffusers' pipelines (``scale_model_input``, ``step``); ``(samples, nfe)``."""
    path = model.path
    if not diffusers_supports(path):
        raise ValueError(f"diffusers' schedulers assume a variance-preserving path; {path!r} is not")
    sch, sigma_form = diffusers_scheduler(name, path, **config)
    sch.set_timesteps(steps)
    sigmas = sch.sigmas.double()  # aligned with the model calls (Heun interleaves its two evaluations)
    x = x_T.double()
    if sigma_form:  # these schedulers step x̂ = x/α, α = 1/√(1 + σ̃²)
        x = x * math.sqrt(1.0 + float(sigmas[0]) ** 2)
    takes_generator = "generator" in inspect.signature(sch.step).parameters
    g = generator or torch.Generator().manual_seed(0)
    nfe = 0
    for i, ts in enumerate(sch.timesteps):
        inp = sch.scale_model_input(x, ts) if sigma_form else x
        t = path.t_from_sigma_tilde(sigmas[i].reshape(1)).clamp(0.0, float(path.T)).expand(x.shape[0])
        eps = model.eps(inp.double(), t.double())
        nfe += 1
        x = sch.step(eps.to(x.dtype), ts, x, return_dict=False, **({"generator": g} if takes_generator else {}))[0]
    return x, nfe
