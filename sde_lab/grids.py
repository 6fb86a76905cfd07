r"""Where a solver steps: explicit time grids, built from a path or given by the user.

Every solver takes its grid as an argument — a 1-D tensor of times, strictly decreasing from ``t_max``
(default ``T``) to ``t_min`` — and never owns a step count. A grid of ``n + 1`` times has ``n`` intervals.
The builders place the points uniformly in a chosen variable and map them back to times through the
path's own inverses (closed form for VE, VP and sub-VP; bisection for any other path):

* :func:`uniform_time_grid` — uniform in ``t`` (Song et al. 2021's PC sampler);
* :func:`karras_grid` — ``σ̃_i = (σ̃_max^{1/ρ} + i/n (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ`` (Karras et al. 2022, eq. (5));
* :func:`logsnr_grid` — uniform in the half log-SNR ``λ`` (Lu et al. 2022a, §3.3), i.e. geometric in ``σ̃``
  (:func:`geometric_noise_grid`, Song & Ermon 2019's annealing levels);
* :func:`quadratic_time_grid` — ``t`` quadratic in the step index (Song et al. 2020, DDIM);
* :func:`times_from_sigmas` / :func:`times_from_log_snr` — any user levels of ``σ̃`` or ``λ``.

Grids are float64 and start at the path's ``t_max`` (``T``, or just below a singular end: rectified flow and
the cosine schedule start at 0.995) unless given. A path whose ``σ̃`` is infinite at the start needs
``t_max < T`` for the σ̃ and λ grids; the builders say so.
"""

from __future__ import annotations

import math

import torch

from .sde import SAMPLING_EPS, SDE

__all__ = [
    "uniform_time_grid",
    "karras_sigmas",
    "karras_grid",
    "logsnr_grid",
    "geometric_noise_grid",
    "quadratic_time_grid",
    "times_from_sigmas",
    "times_from_log_snr",
    "check_grid",
]


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return steps


def _ends(path: SDE | None, eps: float, t_max: float | None, T: float = 1.0) -> tuple[float, float]:
    T = float(path.T) if path is not None else float(T)
    if t_max is None:
        t_max = path.t_max if path is not None else T
    if isinstance(t_max, bool) or not isinstance(t_max, (int, float)) or not 0 < t_max <= T:
        raise ValueError(f"t_max must lie in (0, T={T}], got {t_max!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < t_max:
        raise ValueError(f"eps must lie in [0, t_max={t_max}) (the last time of the grid), got {eps!r}")
    return float(eps), float(t_max)


def uniform_time_grid(steps: int, eps: float = SAMPLING_EPS, T: float = 1.0, *, device=None,
                      dtype=torch.float64) -> torch.Tensor:
    """``steps + 1`` times from ``T`` (or any ``t_max``) down to ``eps``, uniform in ``t``."""
    _check_steps(steps)
    if isinstance(T, bool) or not isinstance(T, (int, float)) or T <= 0:
        raise ValueError(f"T must be a positive number, got {T!r}")
    eps, t_max = _ends(None, eps, None, T)
    return torch.linspace(t_max, eps, steps + 1, dtype=dtype, device=device)


def quadratic_time_grid(path: SDE, steps: int, eps: float = SAMPLING_EPS, *, t_max: float | None = None,
                        device=None, dtype=torch.float64) -> torch.Tensor:
    """``t_i = eps + (t_max − eps) (1 − i/steps)²``: dense near ``eps`` (Song et al. 2020, DDIM's quadratic spacing)."""
    _check_steps(steps)
    eps, t_max = _ends(path, eps, t_max)
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    g = eps + (t_max - eps) * u**2
    g[0], g[-1] = t_max, eps
    return g.to(device=device, dtype=dtype)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """``n`` noise levels ``(σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ`` (Karras et al. 2022, eq. (5))."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(rho, bool) or not (isinstance(rho, (int, float)) and rho > 0):
        raise ValueError(f"rho must be a positive number, got {rho!r}")
    if not (0 < sigma_min < sigma_max < math.inf):
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    u = torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    s = (sigma_max ** (1 / rho) + u * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    s[0] = sigma_max
    if n > 1:
        s[-1] = sigma_min
    return s.to(dtype=dtype, device=device)


def _finite_sigma_ends(path: SDE, eps: float, t_max: float) -> tuple[float, float]:
    s_max, s_min = path.sigma_tilde(torch.tensor([t_max, eps], dtype=torch.float64)).tolist()
    if not math.isfinite(s_max):
        raise ValueError(
            f"the path's noise level σ̃ = σ/α is infinite at t_max={t_max} (α = 0 there); pass t_max < T, e.g. "
            f"t_max={t_max - 1e-3:g}, or use uniform_time_grid"
        )
    if not s_min > 0:
        raise ValueError(f"the path's noise level σ̃ is 0 at eps={eps}; pass eps > 0")
    return s_min, s_max


def times_from_sigmas(path: SDE, sigmas: torch.Tensor) -> torch.Tensor:
    """The times at which the path has the noise levels ``σ̃`` ``sigmas`` (float64)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    return path.t_from_sigma_tilde(sigmas).clamp(0.0, float(path.T))


def times_from_log_snr(path: SDE, lams: torch.Tensor) -> torch.Tensor:
    """The times at which the path has the half log-SNRs ``λ`` ``lams`` (float64)."""
    lams = torch.as_tensor(lams, dtype=torch.float64)
    return path.t_from_log_snr(lams).clamp(0.0, float(path.T))


def karras_grid(path: SDE, steps: int, eps: float = SAMPLING_EPS, *, rho: float = 7.0, t_max: float | None = None,
                device=None, dtype=torch.float64) -> torch.Tensor:
    """``steps + 1`` times whose ``σ̃`` follow Karras et al.'s ρ-schedule from ``σ̃(t_max)`` to ``σ̃(eps)``."""
    _check_steps(steps)
    eps, t_max = _ends(path, eps, t_max)
    s_min, s_max = _finite_sigma_ends(path, eps, t_max)
    t = times_from_sigmas(path, karras_sigmas(steps + 1, s_min, s_max, rho))
    t[0], t[-1] = t_max, eps
    return t.to(device=device, dtype=dtype)


def logsnr_grid(path: SDE, steps: int, eps: float = SAMPLING_EPS, *, t_max: float | None = None, device=None,
                dtype=torch.float64) -> torch.Tensor:
    """``steps + 1`` times uniform in ``λ = log α − log σ`` from ``λ(t_max)`` to ``λ(eps)`` (geometric ``σ̃``)."""
    _check_steps(steps)
    eps, t_max = _ends(path, eps, t_max)
    s_min, s_max = _finite_sigma_ends(path, eps, t_max)
    lam = torch.linspace(-math.log(s_max), -math.log(s_min), steps + 1, dtype=torch.float64)
    t = times_from_log_snr(path, lam)
    t[0], t[-1] = t_max, eps
    return t.to(device=device, dtype=dtype)


def geometric_noise_grid(path: SDE, steps: int, eps: float = SAMPLING_EPS, *, t_max: float | None = None, device=None,
                         dtype=torch.float64) -> torch.Tensor:
    """Times whose ``σ̃`` form a geometric sequence (Song & Ermon 2019's levels): the same as :func:`logsnr_grid`."""
    return logsnr_grid(path, steps, eps, t_max=t_max, device=device, dtype=dtype)


def check_grid(path: SDE, grid, *, decreasing: bool = True, name: str = "grid") -> torch.Tensor:
    """Validate a time grid: 1-D, finite, strictly monotone, within ``[0, T]``.

    A grid of one point has no intervals (a solver then only applies its final step, e.g. denoising).
    """
    if not isinstance(grid, torch.Tensor):
        try:
            grid = torch.as_tensor(grid, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a 1-D tensor of times, got {type(grid).__name__}") from None
    if grid.ndim != 1 or grid.numel() < 1:
        raise ValueError(f"{name} must be a 1-D tensor of times (t_max first), got shape {tuple(grid.shape)}")
    if not grid.is_floating_point():
        grid = grid.double()
    g = grid.detach().cpu().double()
    if not bool(torch.isfinite(g).all()):
        raise ValueError(f"{name} must be finite")
    d = g[1:] - g[:-1]
    ok = bool((d < 0).all()) if decreasing else bool((d > 0).all())
    if not ok:
        raise ValueError(f"{name} must be strictly {'decreasing (from t_max down to t_min)' if decreasing else 'increasing'}; "
                         f"got {g[:4].tolist()}{' ...' if len(g) > 4 else ''}")
    T = float(path.T)
    if g.min() < -1e-12 or g.max() > T * (1 + 1e-12):
        raise ValueError(f"{name} times must lie in [0, T={T}], got values in [{g.min().item():.6g}, {g.max().item():.6g}]")
    return grid
