r"""Controllable generation with one unconditional score model (Song et al. 2021, §5 and Appendix I).

Two kinds of condition:

* **Constraints** change the sampler, not the score. :func:`inpaint` (Appendix I.2) runs the
  predictor-corrector sampler on the whole state and, after every step, replaces the known part by a
  fresh forward-perturbed observation ``x_known(t) = α(t) y + σ(t) z`` (``sde.marginal``); the last
  step denoises the generated part and sets the known part exactly to ``y``. It is approximate: the
  unknown part can commit to a mode while the noisy observation is still uninformative (measured on the
  oracle: up to 10x the SW2 noise floor). :func:`smc_inpaint` (SMCDiff, Trippe et al. 2022) is the
  asymptotically exact alternative at ``particles`` times the cost. :func:`colorize`
  (Appendix I.3) is inpainting in the orthogonally decoupled colour space, where the grey image is the
  first channel.
* **Guidance** changes the score, not the sampler. :class:`ClassifierGuidance` adds
  ``γ ∇_x log p_t(y | x)`` from a noise-conditional classifier (Song et al. 2021, eq. (14); Dhariwal &
  Nichol 2021); :class:`ClassifierFreeGuidance` mixes a conditional score model,
  ``(1 + w) s(x, t, y) - w s(x, t, ∅)`` (Ho & Salimans 2022, eq. (6)). Any sde_lab network becomes such a
  model with ``config.model.num_classes = K`` (a class embedding with a null label ``K``); the trainer
  then drops labels with probability ``training.label_dropout`` (:func:`drop_labels`' rule) and the
  :class:`~sde_lab.score.ScoreModel` is called as ``model(x, t, y)`` — pass it as ``cond_score_fn`` with
  ``null_label=K`` (``configs/vp/mnist_cfg.py``, ``experiments/mnist_cfg.py``).

Every condition object offers ``score_fn(base_score_fn) -> score_fn`` and
``sample(sde, score_fn, shape, **sample_kwargs) -> SampleResult``; :func:`conditional_sample` applies a
condition (or a list: any number of guidances plus at most one constraint).

Guidance scale, precisely: ``s + γ ∇ log p_t(y | x) = ∇ log p_t(x) p_t(y | x)^γ``. For ``γ = 1`` this is
exactly the conditional score ``∇ log p_t(x | y)``; for ``γ ≠ 1`` it is the score of a tilted density at
every ``t``, but those tilted densities are *not* the marginals of one diffusion, so the samples only
approximate ``∝ p(x) p(y | x)^γ`` at ``t ≈ 0`` (measured in ``experiments/controllable.py``).
Classifier-free guidance with weight ``w`` equals classifier guidance with ``γ = 1 + w`` when the
classifier is the Bayes classifier of the score model, ``∇ log p_t(y | x) = s(x, t, y) - s(x, t, ∅)``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, Union, runtime_checkable

import torch
from tqdm.auto import tqdm

from .correctors import Corrector
from .predictors import Predictor
from .sampling import CountingScore, SampleResult, denoise_step, sample, uniform_time_grid
from .score import ScoreFn
from .sde import SAMPLING_EPS, SDE
from .utils import append_dims, randn_like

__all__ = [
    "ScoreFn",
    "ClassifierFn",
    "ConditionalScoreFn",
    "Condition",
    "Inpainting",
    "Colorization",
    "ClassifierGuidance",
    "ClassifierFreeGuidance",
    "inpaint",
    "smc_inpaint",
    "colorize",
    "conditional_sample",
    "drop_labels",
    "check_mask",
    "decouple_colors",
    "couple_colors",
    "COLOR_DECOUPLING",
]

ClassifierFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A noise-conditional classifier ``(x, t) -> logits`` of shape ``(B, n_classes)``."""
ConditionalScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""A class-conditional score model ``(x, t, y) -> score`` (``y``: ``(B,)`` integer labels)."""


# --- masks and labels --------------------------------------------------------------------------


def check_mask(mask: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Validate an inpainting mask (1 / ``True`` = known) and return it as a bool tensor of ``shape``.

    The mask may have any shape that broadcasts to ``shape`` (e.g. the event shape ``(2,)`` for a batch of
    points, ``(1, 8, 8)`` or ``(8, 8)`` for images, or a per-sample ``(B, ...)`` mask). Its dtype must be
    bool, integer or floating point, with every entry 0 or 1.
    """
    shape = tuple(shape)
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a torch.Tensor (bool or 0/1 values), got {type(mask).__name__}")
    if mask.is_complex():
        raise ValueError(f"mask must be bool, integer or real floating point, got dtype {mask.dtype}")
    try:
        bshape = torch.broadcast_shapes(mask.shape, shape)
    except RuntimeError:
        bshape = None
    if bshape != shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the data shape {shape}; use the event shape "
            f"{shape[1:]}, a per-sample shape {shape}, or any shape that broadcasts to it"
        )
    if mask.dtype != torch.bool:
        ok = (mask == 0) | (mask == 1)
        if not bool(ok.all()):
            bad = mask[~ok].flatten()[:3].tolist()
            raise ValueError(f"mask entries must be 0 or 1 (1 = known), got values such as {bad}")
        mask = mask != 0
    return mask.expand(shape)


def _check_labels(y, batch_size: int, device, name: str = "y") -> torch.Tensor:
    """Integer class labels as a ``(B,)`` long tensor (an int or 0-d tensor is broadcast)."""
    y_t = torch.as_tensor(y, device=device)
    if y_t.dtype == torch.bool or y_t.is_floating_point() or y_t.is_complex():
        raise ValueError(f"{name} must hold integer class labels, got dtype {y_t.dtype}")
    if y_t.ndim == 0:
        y_t = y_t.expand(batch_size)
    if y_t.shape != (batch_size,):
        raise ValueError(f"{name} must be an int or have shape ({batch_size},) (one label per sample), got {tuple(y_t.shape)}")
    if y_t.numel() and int(y_t.min()) < 0:
        raise ValueError(f"{name} must be non-negative class labels, got {int(y_t.min())}")
    return y_t.long()


def _check_static_labels(y, name: str = "y") -> None:
    y_t = torch.as_tensor(y)
    if y_t.dtype == torch.bool or y_t.is_floating_point() or y_t.is_complex() or y_t.ndim > 1:
        raise ValueError(f"{name} must be an int or a (B,) tensor of integer class labels, got {y!r}")
    if y_t.numel() and int(y_t.min()) < 0:
        raise ValueError(f"{name} must be non-negative class labels, got {y_t.tolist()}")


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def drop_labels(y: torch.Tensor, p: float, null_label: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by ``null_label`` with probability ``p`` (label dropout; Ho & Salimans 2022, Alg. 1).

    Training a conditional score model ``s(x, t, y)`` with dropped labels makes the same network the
    unconditional model ``s(x, t, ∅) = s(x, t, null_label)`` that classifier-free guidance needs.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"label dropout probability p must lie in [0, 1], got {p!r}")
    if isinstance(null_label, bool) or not isinstance(null_label, int) or null_label < 0:
        raise ValueError(f"null_label must be a non-negative int (conventionally n_classes), got {null_label!r}")
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise ValueError(f"y must be a (B,) tensor of integer labels, got shape {tuple(y.shape)} and dtype {y.dtype}")
    gen_device = generator.device if generator is not None else y.device
    drop = (torch.rand(y.shape, generator=generator, device=gen_device) < p).to(y.device)
    return torch.where(drop, torch.full_like(y, null_label), y)


# --- inpainting (Song et al. 2021, Appendix I.2) ---------------------------------------------


def _pc_steps(predictor, corrector, snr: float, n_corrector_steps: int) -> tuple[Predictor, Corrector]:
    """Resolve predictor/corrector names (as :func:`sde_lab.sampling.sample` does) and check the objects."""
    from .registry import CORRECTORS, PREDICTORS, lookup

    if isinstance(predictor, str):
        predictor = lookup(PREDICTORS, predictor, "predictor")()
    if isinstance(corrector, str):
        ctor = lookup(CORRECTORS, corrector, "corrector")
        params = inspect.signature(ctor).parameters
        corrector = ctor(**{k: v for k, v in {"snr": snr, "n_steps": n_corrector_steps}.items() if k in params})
    if not isinstance(predictor, Predictor) or not isinstance(corrector, Corrector):
        raise ValueError(
            f"predictor and corrector must be Predictor/Corrector objects or names (predictors: "
            f"{', '.join(sorted(PREDICTORS))}; correctors: {', '.join(sorted(CORRECTORS))}), got {predictor!r} and {corrector!r}"
        )
    return predictor, corrector



def inpaint(
    sde: SDE,
    score_fn: ScoreFn,
    observed: torch.Tensor,
    mask: torch.Tensor,
    *,
    predictor: str | Predictor = "reverse_diffusion",
    corrector: str | Corrector = "langevin",
    snr: float = 0.16,
    n_corrector_steps: int = 1,
    steps: int = 1000,
    eps: float = SAMPLING_EPS,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SampleResult:
    r"""Sample the unknown part of ``observed`` given its known part ``mask == 1`` (Song et al. 2021, App. I.2).

    Predictor-corrector sampling of the full state from the prior (at each grid time ``t_i`` a corrector
    step at ``t_i``, then a predictor step to ``t_{i+1}``, as in :func:`sde_lab.sampling.pc_sample`), where
    after the initial draw and after every step (now at time ``t``) the known part is replaced by a fresh
    draw of the forward-perturbed observation,

        x_known(t) = α(t) y + σ(t) z,    z ~ N(0, I),    (α(t), σ(t)) = sde.marginal(t),

    so the unknown part follows the reverse SDE of ``p_t(x_unknown, x_known)`` along noisy observations.
    At ``t = eps`` the whole state is denoised with :func:`sde_lab.sampling.denoise_step` (Tweedie's
    formula, one extra score evaluation) when ``denoise`` is set, and the known part is set exactly to
    ``y``. This is the reference algorithm and an approximation of ``p(x_unknown | y)``: its score at the
    unknown coordinates sees a freshly noised ``y``, so they can commit to a mode before the observation is
    informative (exact when the parts are independent; on the oracle ring with x = 2 observed it puts
    ~0.65 instead of 0.973 on the right mode). :func:`smc_inpaint` is asymptotically exact.

    Args:
        observed: ``(B, *event)``; values at unknown positions are ignored (may be NaN).
        mask: 1 / ``True`` = known; any shape broadcastable to ``observed`` (see :func:`check_mask`).
        predictor, corrector: step objects from :mod:`sde_lab.predictors` / :mod:`sde_lab.correctors`, or
            their registry names as in :func:`sde_lab.sampling.sample` (a named corrector is built with
            ``snr`` and ``n_corrector_steps``); the defaults are the paper's PC sampler.
        steps: predictor steps on the uniform grid from ``T`` to ``eps``.

    Returns:
        :class:`SampleResult` with the completed samples (known part equal to ``observed``), the number of
        score evaluations and ``info`` (``mask``, ``steps``, ``eps``, predictor and corrector).
    """
    predictor, corrector = _pc_steps(predictor, corrector, snr, n_corrector_steps)
    if not isinstance(observed, torch.Tensor) or observed.ndim < 2 or not observed.is_floating_point():
        raise ValueError(
            "observed must be a floating-point tensor of shape (B, *event) (batch first), got "
            + (f"shape {tuple(observed.shape)} and dtype {observed.dtype}" if isinstance(observed, torch.Tensor) else type(observed).__name__)
        )
    known = check_mask(mask, observed.shape).to(observed.device)
    if not bool(torch.isfinite(observed[known]).all()):
        raise ValueError("observed must be finite at the known positions (mask == 1)")
    y = torch.where(known, observed, torch.zeros_like(observed))
    shape, device, dtype = observed.shape, observed.device, observed.dtype
    B, nd = shape[0], observed.ndim
    grid = uniform_time_grid(steps, eps, sde.T, device=device, dtype=dtype)
    score = CountingScore(score_fn)

    def replace_known(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = sde.marginal(t)
        y_t = append_dims(alpha, nd) * y + append_dims(sigma, nd) * randn_like(y, generator)
        return torch.where(known, y_t, x)

    x = replace_known(sde.prior_sample(shape, generator, device=device, dtype=dtype), grid[0].expand(B))
    with torch.no_grad():
        for i in tqdm(range(steps), desc="inpaint", disable=not progress, leave=False):
            t, t_next = grid[i].expand(B), grid[i + 1].expand(B)
            x = replace_known(corrector.step(sde, score, x, t, t_next, generator=generator)[0], t)
            x = replace_known(predictor.step(sde, score, x, t, t_next, generator=generator)[0], t_next)
        if denoise:
            x = denoise_step(sde, score, x, grid[-1].expand(B))
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(
            f"inpaint({type(predictor).__name__}, {type(corrector).__name__}, steps={steps}) produced non-finite "
            "samples; the score returned NaN/inf or the step is unstable — try more steps, a smaller snr or a larger eps"
        )
    samples = torch.where(known, observed, x)
    info = {"mask": known, "steps": steps, "eps": eps, "predictor": predictor, "corrector": corrector, "denoise": denoise}
    return SampleResult(samples, score.nfe, info)


def _resample_indices(logw: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Systematic resampling of each row of ``logw`` ``(B, P)``: ancestor indices ``(B, P)``."""
    B, P = logw.shape
    w = torch.softmax(logw.double(), 1)
    gen_device = generator.device if generator is not None else logw.device
    u = (torch.rand(B, 1, generator=generator, device=gen_device, dtype=torch.float64).to(logw.device)
         + torch.arange(P, device=logw.device, dtype=torch.float64)) / P
    cdf = torch.cumsum(w, 1)
    cdf[:, -1] = 1.0
    return torch.searchsorted(cdf, u).clamp_max(P - 1)


def smc_inpaint(
    sde: SDE,
    score_fn: ScoreFn,
    observed: torch.Tensor,
    mask: torch.Tensor,
    *,
    particles: int = 256,
    steps: int = 1000,
    eps: float = SAMPLING_EPS,
    denoise: bool = True,
    resample_threshold: float = 0.5,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SampleResult:
    r"""Inpainting by sequential Monte Carlo (SMCDiff: Trippe et al. 2022, Algorithm 2): asymptotically exact.

    :func:`inpaint` is biased: its score for the unknown part sees a freshly noised observation, so the
    unknown part commits to a mode before the observation is informative. SMCDiff fixes one forward path
    of the known part, ``y_{t_N} = α(eps) y + σ(eps) z`` and ``y_{t_i} = a y_{t_{i+1}} + σ_{ts} z`` with
    ``(a, σ_ts) = sde.transition(t_{i+1}, t_i)``, and runs a particle filter whose hidden state is the
    unknown part and whose observations are that path. With the Gaussian ancestral reverse kernel
    (any SDE; see :class:`sde_lab.predictors.Ancestral`)

        p(x_{t_{i+1}} | x_{t_i}) = N((x + σ_ts² s(x, t_i)) / a, (σ_ts σ(t_{i+1}) / σ(t_i))² I),

    each particle is weighted by the kernel's density of the next known value ``y_{t_{i+1}}``, particles are
    resampled (systematic) when the effective sample size drops below ``resample_threshold · particles``,
    and the unknown part moves by the kernel. As ``particles → ∞`` (and the steps shrink) the particles
    are distributed as ``p(x_unknown | y)`` for an exact score. Cost: ``particles`` score evaluations per
    observation and step (batched).

    Args:
        observed: ``(B, *event)``, ``B`` independent observations (unknown values ignored; may be NaN).
        mask: 1 / ``True`` = known, broadcastable to ``observed``.
        particles: particles per observation.

    Returns:
        :class:`SampleResult` with one completion per observation drawn from its final particle set,
        shape ``(B, *event)``; ``info["particles"]`` holds all ``(B, particles, *event)`` equally weighted
        completions and ``info["ess"]`` the effective sample size (fraction of ``particles``) per step.
    """
    if not isinstance(observed, torch.Tensor) or observed.ndim < 2 or not observed.is_floating_point():
        raise ValueError("observed must be a floating-point tensor of shape (B, *event) (batch first)")
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
        raise ValueError(f"particles must be a positive integer, got {particles!r}")
    if not 0.0 <= resample_threshold <= 1.0:
        raise ValueError(f"resample_threshold must lie in [0, 1], got {resample_threshold!r}")
    known = check_mask(mask, observed.shape).to(observed.device)
    if not bool(torch.isfinite(observed[known]).all()):
        raise ValueError("observed must be finite at the known positions (mask == 1)")
    B, event, P = observed.shape[0], observed.shape[1:], particles
    device, dtype = observed.device, observed.dtype
    # work on (B * P, *event): particle p of observation b is row b * P + p
    known_p = known.repeat_interleave(P, 0)
    y = torch.where(known, observed, torch.zeros_like(observed)).repeat_interleave(P, 0)
    nd = y.ndim
    grid = uniform_time_grid(steps, eps, sde.T, device=device, dtype=dtype)
    BP = B * P
    score = CountingScore(score_fn)

    def full(t):
        return t.expand(BP)

    # one forward path of the known part (shared by the particles of an observation), from eps up to T
    path = [None] * (steps + 1)
    alpha, sigma = sde.marginal(full(grid[-1]))
    z = randn_like(observed, generator).repeat_interleave(P, 0)
    path[steps] = append_dims(alpha, nd) * y + append_dims(sigma, nd) * z
    for i in range(steps - 1, -1, -1):
        a, s_ts = sde.transition(full(grid[i + 1]), full(grid[i]))
        z = randn_like(observed, generator).repeat_interleave(P, 0)
        path[i] = append_dims(a, nd) * path[i + 1] + append_dims(s_ts, nd) * z

    x = torch.where(known_p, path[0], sde.prior_sample(y.shape, generator, device=device, dtype=dtype))
    logw = torch.zeros(B, P, device=device, dtype=torch.float64)
    ess_hist = []
    with torch.no_grad():
        for i in tqdm(range(steps), desc="smc inpaint", disable=not progress, leave=False):
            t, t_next = full(grid[i]), full(grid[i + 1])
            a, s_ts = sde.transition(t_next, t)
            _, sigma_s = sde.marginal(t_next)
            _, sigma_t = sde.marginal(t)
            std = append_dims(s_ts * sigma_s / sigma_t, nd)
            mean = (x + append_dims(s_ts, nd) ** 2 * score(x, t)) / append_dims(a, nd)
            # weight: density of the next known value under each particle's reverse kernel
            r = torch.where(known_p, (path[i + 1] - mean) / std, torch.zeros_like(mean))
            logw = logw + (-0.5 * r.double() ** 2).flatten(1).sum(1).reshape(B, P)
            w = torch.softmax(logw, 1)
            ess = 1.0 / (w**2).sum(1) / P
            ess_hist.append(float(ess.min()))
            if bool((ess < resample_threshold).any()):
                idx = _resample_indices(logw, generator)
                rows = (idx + torch.arange(B, device=device)[:, None] * P).flatten()
                redo = (ess < resample_threshold).repeat_interleave(P)
                rows = torch.where(redo, rows, torch.arange(BP, device=device))
                mean = mean[rows]
                logw = torch.where((ess < resample_threshold)[:, None], torch.zeros_like(logw), logw)
            x = torch.where(known_p, path[i + 1], mean + std * randn_like(mean, generator))
        if denoise:
            x = denoise_step(sde, score, x, full(grid[-1]))
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(f"smc_inpaint(steps={steps}) produced non-finite samples")
    x = torch.where(known_p, observed.repeat_interleave(P, 0), x)
    # equal weights: resample the final population once more
    idx = _resample_indices(logw, generator)
    pop = x.reshape(B, P, *event)[torch.arange(B, device=device)[:, None], idx]
    pick = torch.randint(P, (B,), generator=generator, device=generator.device if generator is not None else device).to(device)
    info = {"particles": pop, "ess": ess_hist, "mask": known, "steps": steps, "eps": eps, "denoise": denoise}
    return SampleResult(pop[torch.arange(B, device=device), pick], score.nfe, info)


# --- colorization (Song et al. 2021, Appendix I.3) -------------------------------------------

COLOR_DECOUPLING = torch.tensor(
    [
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
        [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
        [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)],
    ],
    dtype=torch.float64,
)
"""Orthogonal ``M`` mixing RGB channels, first row ``(1, 1, 1)/√3``: decoupled channel 0 is ``√3 ×`` grey."""


def _mix_channels(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if x.ndim < 2 or x.shape[1] != 3:
        raise ValueError(f"colour images must have shape (B, 3, ...) (RGB channels second), got {tuple(x.shape)}")
    return torch.einsum("ij,bj...->bi...", M.to(x.device, x.dtype), x)


def decouple_colors(x: torch.Tensor) -> torch.Tensor:
    """``M x`` channel-wise: RGB ``(B, 3, ...)`` → decoupled channels (grey·√3, two colour-difference channels)."""
    return _mix_channels(COLOR_DECOUPLING, x)


def couple_colors(u: torch.Tensor) -> torch.Tensor:
    """``Mᵀ u`` channel-wise: the inverse of :func:`decouple_colors` (``M`` is orthogonal)."""
    return _mix_channels(COLOR_DECOUPLING.T, u)


def _grey_observation(grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoupled observation and mask for a grey image ``(B, 1, ...)`` (channel mean) or ``(B, 3, ...)`` (its mean)."""
    if not isinstance(grey, torch.Tensor) or grey.ndim < 2 or grey.shape[1] not in (1, 3) or not grey.is_floating_point():
        got = f"shape {tuple(grey.shape)}, dtype {grey.dtype}" if isinstance(grey, torch.Tensor) else type(grey).__name__
        raise ValueError(f"grey must be a floating-point tensor of shape (B, 1, ...) (or (B, 3, ...), averaged), got {got}")
    g = grey.mean(1, keepdim=True)
    observed = torch.cat([math.sqrt(3) * g, torch.zeros_like(g), torch.zeros_like(g)], 1)
    mask = torch.zeros((3,) + (1,) * (grey.ndim - 2), dtype=torch.bool, device=grey.device)
    mask[0] = True
    return observed, mask


def colorize(sde: SDE, score_fn: ScoreFn, grey: torch.Tensor, **inpaint_kwargs) -> SampleResult:
    r"""Colour images whose channel mean is ``grey`` (Song et al. 2021, Appendix I.3).

    With the orthogonal channel mixing ``u = M x`` (:data:`COLOR_DECOUPLING`), the grey image is the first
    decoupled channel ``u_0 = √3 · mean_c(x)``. ``M`` is orthogonal, so the forward SDE (isotropic noise)
    commutes with it and the decoupled score is ``M s(Mᵀ u, t)``; colorization is :func:`inpaint` in
    ``u``-space with channel 0 known, mapped back by ``x = Mᵀ u``. The result's channel mean equals
    ``grey`` exactly. ``inpaint_kwargs`` are those of :func:`inpaint`.
    """
    observed, mask = _grey_observation(grey)

    def decoupled_score(u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return decouple_colors(score_fn(couple_colors(u), t))

    res = inpaint(sde, decoupled_score, observed, mask, **inpaint_kwargs)
    return SampleResult(couple_colors(res.samples), res.nfe, {**res.info, "decoupled_mask": res.info["mask"]})


# --- condition objects ---------------------------------------------------------------------------


@runtime_checkable
class Condition(Protocol):
    """What :func:`conditional_sample` needs: a score transform and a sampling routine."""

    def score_fn(self, base_score_fn: ScoreFn) -> ScoreFn: ...

    def sample(self, sde: SDE, score_fn: ScoreFn, shape: Sequence[int], **sample_kwargs) -> SampleResult: ...


class _Guidance:
    """Guidance conditions change the score only and sample with :func:`sde_lab.sampling.sample`."""

    is_constraint = False

    def score_fn(self, base_score_fn: ScoreFn) -> ScoreFn:  # pragma: no cover - overridden
        raise NotImplementedError

    def sample(self, sde: SDE, score_fn: ScoreFn, shape: Sequence[int], **sample_kwargs) -> SampleResult:
        return sample(sde, self.score_fn(score_fn), shape, **sample_kwargs)


@dataclass(frozen=True, eq=False)
class ClassifierGuidance(_Guidance):
    r"""Classifier guidance: ``s(x, t) + γ ∇_x log p_t(y | x)`` (Song et al. 2021, eq. (14); Dhariwal & Nichol 2021).

    ``classifier(x, t) -> logits`` is a noise-conditional classifier (e.g.
    ``sde_lab.classifier.Classifier(..., time_conditional=True)`` or the oracle's
    ``GaussianMixture.classifier_fn(sde)``); ``log p_t(y | x)`` is the log-softmax of its logits and its
    gradient is taken by autograd (one classifier forward/backward per score call). ``scale`` ``γ = 1``
    gives the conditional score ``∇ log p_t(x | y)`` exactly; ``γ > 1`` sharpens toward
    ``∝ p(x) p(y | x)^γ``.

    Args:
        y: an int class or a ``(B,)`` tensor of labels (one per sample).
        scale: the guidance scale ``γ`` (finite; 0 = unconditional).
    """

    classifier: ClassifierFn
    y: Union[int, torch.Tensor]
    scale: float = 1.0

    def __post_init__(self):
        if not callable(self.classifier):
            raise ValueError(f"classifier must be callable as classifier(x, t) -> logits, got {type(self.classifier).__name__}")
        _check_static_labels(self.y)
        object.__setattr__(self, "scale", _finite("guidance scale", self.scale))

    def log_prob_grad(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``∇_x log p_t(y | x)`` by autograd through the classifier."""
        y = _check_labels(self.y, x.shape[0], x.device)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = self.classifier(xg, t)
            if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
                raise ValueError(f"classifier must return logits of shape (B={x.shape[0]}, n_classes), got {tuple(logits.shape)}")
            n_classes = logits.shape[1]
            if int(y.max()) >= n_classes:
                raise ValueError(f"class label {int(y.max())} is out of range for a classifier with {n_classes} classes (valid: 0..{n_classes - 1})")
            log_p = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).sum()
            (grad,) = torch.autograd.grad(log_p, xg)
        return grad.to(x.dtype)

    def score_fn(self, base_score_fn: ScoreFn) -> ScoreFn:
        def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            s = base_score_fn(x, t)
            if self.scale == 0.0:
                return s
            return s + self.scale * self.log_prob_grad(x, t)

        return guided


@dataclass(frozen=True, eq=False)
class ClassifierFreeGuidance(_Guidance):
    r"""Classifier-free guidance: ``(1 + w) s(x, t, y) - w s(x, t, ∅)`` (Ho & Salimans 2022, eq. (6)).

    ``cond_score_fn(x, t, y)`` is a class-conditional score model trained with label dropout
    (:func:`drop_labels`); its unconditional score is ``cond_score_fn(x, t, null_label)``, evaluated in
    the same batched call as the conditional one. With ``null_label=None`` the unconditional score is
    the ``base_score_fn`` handed to :meth:`score_fn` (a separately trained model). ``w = 0`` is plain
    conditional sampling; weight ``w`` equals classifier guidance with scale ``γ = 1 + w`` under the
    model's implicit classifier.
    """

    cond_score_fn: ConditionalScoreFn
    y: Union[int, torch.Tensor]
    w: float = 1.0
    null_label: int | None = None

    def __post_init__(self):
        if not callable(self.cond_score_fn):
            raise ValueError(f"cond_score_fn must be callable as cond_score_fn(x, t, y), got {type(self.cond_score_fn).__name__}")
        _check_static_labels(self.y)
        object.__setattr__(self, "w", _finite("guidance weight w", self.w))
        if self.null_label is not None:
            if isinstance(self.null_label, bool) or not isinstance(self.null_label, int) or self.null_label < 0:
                raise ValueError(f"null_label must be a non-negative int or None, got {self.null_label!r}")
            if bool((torch.as_tensor(self.y) == self.null_label).any()):
                raise ValueError(f"y must not contain the null label {self.null_label} (it means 'no class')")

    def score_fn(self, base_score_fn: ScoreFn | None = None) -> ScoreFn:
        if self.null_label is None and base_score_fn is None and self.w != 0.0:
            raise ValueError("ClassifierFreeGuidance needs an unconditional score: set null_label or pass base_score_fn")

        def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            B = x.shape[0]
            y = _check_labels(self.y, B, x.device)
            if self.w == 0.0:
                return self.cond_score_fn(x, t, y)
            if self.null_label is None:
                s_cond, s_uncond = self.cond_score_fn(x, t, y), base_score_fn(x, t)
            else:
                null = torch.full_like(y, self.null_label)
                s = self.cond_score_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
                s_cond, s_uncond = s[:B], s[B:]
            return (1.0 + self.w) * s_cond - self.w * s_uncond

        return guided


_ODE_OPTION_DEFAULTS = {"rtol": 1e-5, "atol": 1e-5, "method": "RK45"}  # sde_lab.sampling.sample's defaults


def _pop_pc_options(sample_kwargs: dict) -> Any:
    """Constraints run their own PC loop: accept ``solver="pc"`` and ``device``, refuse other solvers.

    ``sample(..., condition=...)`` forwards all of its options; ODE-only options are dropped when they are
    at ``sample``'s defaults and refused otherwise.
    """
    solver = sample_kwargs.pop("solver", "pc")
    if solver != "pc":
        raise ValueError(f"inpainting and colorization run the predictor-corrector sampler; solver must be 'pc', got {solver!r}")
    for name, default in _ODE_OPTION_DEFAULTS.items():
        if name in sample_kwargs and sample_kwargs.pop(name) != default:
            raise ValueError(f"inpainting and colorization use the PC sampler and do not take option {name!r}")
    return sample_kwargs.pop("device", None)


@dataclass(frozen=True, eq=False)
class Inpainting:
    """Constraint: the positions ``mask == 1`` are ``observed``; sampled by :func:`inpaint`.

    ``observed`` has shape ``(B, *event)`` or ``(1, *event)`` / ``event``-shaped (broadcast to the batch
    to draw many completions of one observation); ``mask`` broadcasts to the data shape.
    """

    observed: torch.Tensor
    mask: torch.Tensor

    is_constraint = True

    def __post_init__(self):
        if not isinstance(self.observed, torch.Tensor) or not self.observed.is_floating_point():
            raise ValueError(f"observed must be a floating-point tensor, got {self.observed!r:.80}")
        if isinstance(self.mask, torch.Tensor):
            try:
                shape = torch.broadcast_shapes(self.mask.shape, self.observed.shape)
            except RuntimeError:
                raise ValueError(
                    f"mask of shape {tuple(self.mask.shape)} does not broadcast with observed of shape {tuple(self.observed.shape)}"
                ) from None
        else:
            shape = ()
        check_mask(self.mask, shape)

    def score_fn(self, base_score_fn: ScoreFn) -> ScoreFn:
        return base_score_fn

    def sample(self, sde: SDE, score_fn: ScoreFn, shape: Sequence[int], **sample_kwargs) -> SampleResult:
        shape = tuple(shape)
        try:
            observed = self.observed.expand(shape)
        except RuntimeError:
            raise ValueError(f"observed of shape {tuple(self.observed.shape)} does not broadcast to the sample shape {shape}") from None
        device = _pop_pc_options(sample_kwargs)
        if device is not None:
            observed = observed.to(device)
        return inpaint(sde, score_fn, observed.contiguous(), self.mask.to(observed.device), **sample_kwargs)


@dataclass(frozen=True, eq=False)
class Colorization:
    """Constraint: the channel mean of the RGB samples is ``grey`` ``(B | 1, 1, ...)``; sampled by :func:`colorize`."""

    grey: torch.Tensor

    is_constraint = True

    def __post_init__(self):
        _grey_observation(self.grey)  # validates

    def score_fn(self, base_score_fn: ScoreFn) -> ScoreFn:
        return base_score_fn

    def sample(self, sde: SDE, score_fn: ScoreFn, shape: Sequence[int], **sample_kwargs) -> SampleResult:
        shape = tuple(shape)
        if len(shape) < 2 or shape[1] != 3:
            raise ValueError(f"colorization samples RGB images of shape (B, 3, ...), got shape {shape}")
        grey = self.grey.mean(1, keepdim=True)
        try:
            grey = grey.expand((shape[0], 1) + shape[2:])
        except RuntimeError:
            raise ValueError(f"grey of shape {tuple(self.grey.shape)} does not match the sample shape {shape}") from None
        device = _pop_pc_options(sample_kwargs)
        if device is not None:
            grey = grey.to(device)
        return colorize(sde, score_fn, grey.contiguous(), **sample_kwargs)


def conditional_sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: Sequence[int],
    condition: Condition | Sequence[Condition],
    **sample_kwargs,
) -> SampleResult:
    """Sample under ``condition``: guidance conditions transform the score, a constraint picks the sampler.

    ``condition`` is one condition object or a sequence of them (e.g. ``[ClassifierGuidance(...),
    Inpainting(...)]`` for class-guided inpainting): every score transform is applied in order, then the
    single constraint (if any) samples, otherwise :func:`sde_lab.sampling.sample` with ``sample_kwargs``.
    """
    conditions = list(condition) if isinstance(condition, (list, tuple)) else [condition]
    if not conditions:
        raise ValueError("condition must be a condition object or a non-empty sequence of them")
    for c in conditions:
        if not isinstance(c, Condition):
            raise ValueError(
                f"unknown condition {c!r}; valid conditions: Inpainting, Colorization, ClassifierGuidance, "
                "ClassifierFreeGuidance (or any object with score_fn(base) and sample(sde, score_fn, shape, **kw))"
            )
    constraints = [c for c in conditions if getattr(c, "is_constraint", False)]
    if len(constraints) > 1:
        raise ValueError(f"at most one constraint (Inpainting / Colorization) can be applied, got {len(constraints)}")
    for c in conditions:
        score_fn = c.score_fn(score_fn)
    if constraints:
        return constraints[0].sample(sde, score_fn, shape, **sample_kwargs)
    return sample(sde, score_fn, shape, **sample_kwargs)
