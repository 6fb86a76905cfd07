r"""Models: what every solver, loss and likelihood routine sees — the ONE parametrization adapter.

A *model* is anything with a path and the four predictions of the clean data and the noise in
``x = α(t) x_0 + σ(t) ε`` that the samplers need (:class:`DiffusionModel`):

==============  =====================================================  ==============================
method          meaning                                                in terms of the score ``s``
==============  =====================================================  ==============================
``score``       ``∇_x log p_t(x)``                                     ``s``
``eps``         ``E[ε | x_t = x]``                                     ``−σ s``
``x0``          ``E[x_0 | x_t = x]`` (Tweedie; alias ``denoise``)      ``(x + σ² s) / α``
``velocity``    probability-flow velocity ``E[α' x_0 + σ' ε | x]``     ``f x − ½ g² s``
==============  =====================================================  ==============================

:class:`Model` wraps a network ``net(x, label[, y])`` whose output is one *prediction target*
(:class:`Parametrization`): the score, the σ-scaled score, the noise ε, the data x_0, ``v = α ε − σ x_0``
(Salimans & Ho 2022), the flow velocity ``α' x_0 + σ' ε`` (Lipman et al. 2023; Liu et al. 2023) or EDM's
preconditioned denoiser ``D = c_skip x̃ + c_out F(c_in x̃; c_noise)`` on ``x̃ = x/α`` (Karras et al. 2022,
Table 1). With ``x = α x_0 + σ ε`` each target is an affine function of ``(x_0, ε)`` given ``x``, so each
method is one affine map of the output — resolved when the model is built, never by comparing strings
on a call. The network's time input is a named convention (``t``, ``999t``, ``sigma``, ``sigma_tilde``,
``quarter_log_sigma``, ``index``, ``reversed_index``) or a callable ``t -> label``.

Losses are written on the network's own target (:meth:`Parametrization.target`): because the score is
``s = a(t) x + c(t) · out``, ``λ(t) ‖s_θ − s*‖² = λ(t) c(t)² ‖out − out*‖²``
(:meth:`Parametrization.score_gain`), so weighted denoising score matching with any ``λ`` is an MSE on
the output with weight ``λ c²`` — ``‖ε_θ − ε‖²`` for an ε-network under σ² weighting.

A plain score function ``s(x, t)`` becomes a model with :func:`as_model` (:class:`ScoreFunctionModel`),
and the analytic oracle offers the same methods exactly (:meth:`sde_lab.analytic.GaussianMixture.model`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from .sde import SDE
from .utils import append_dims

__all__ = [
    "ScoreFn",
    "DiffusionModel",
    "ScoreFunctionModel",
    "Model",
    "ScoreModel",
    "Coefficients",
    "Parametrization",
    "ScoreTarget",
    "ScaledScoreTarget",
    "NoiseTarget",
    "DataTarget",
    "VTarget",
    "VelocityTarget",
    "EDMPreconditioning",
    "TimeInput",
    "ContinuousTime",
    "SigmaTime",
    "SigmaTildeTime",
    "QuarterLogSigmaTime",
    "DiscreteIndexTime",
    "ReversedIndexTime",
    "CallableTime",
    "PARAMETRIZATIONS",
    "TIME_INPUTS",
    "PREDICTIONS",
    "TIME_LABELS",
    "make_parametrization",
    "make_time_input",
    "as_model",
    "CountingModel",
    "MappedModel",
    "PathChangedModel",
    "change_path",
]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A score function ``s(x, t)``: ``x`` of shape ``(B, ...)``, ``t`` of shape ``(B,)``, returns shape of ``x``."""


# --------------------------------------------------------------------------------------------------
# path coefficients at a batch of times, broadcast to the data
# --------------------------------------------------------------------------------------------------
class Coefficients:
    """``α, σ`` (and, on first use, ``α', σ', f, g²``) at times ``t``, shaped ``(B, 1, ..., 1)``.

    Computed lazily, so a conversion that needs only ``α`` and ``σ`` never differentiates the path.
    A discrete chain (``alpha``/``sigma`` given) replaces the path's ``α(t), σ(t)``.
    """

    __slots__ = ("path", "t", "ndim", "_alpha", "_sigma", "_deriv", "_f", "_g2")

    def __init__(self, path: SDE, t: torch.Tensor, ndim: int, *, alpha=None, sigma=None):
        self.path, self.t, self.ndim = path, t, ndim
        if alpha is None or sigma is None:
            a, s = path.marginal(t)
            alpha = a if alpha is None else alpha
            sigma = s if sigma is None else sigma
        self._alpha, self._sigma = append_dims(alpha, ndim), append_dims(sigma, ndim)
        self._deriv = self._f = self._g2 = None

    @property
    def alpha(self) -> torch.Tensor:
        return self._alpha

    @property
    def sigma(self) -> torch.Tensor:
        return self._sigma

    def _derivatives(self):
        if self._deriv is None:
            da, ds = self.path.marginal_derivatives(self.t)
            self._deriv = (append_dims(da.to(self._alpha.dtype), self.ndim), append_dims(ds.to(self._alpha.dtype), self.ndim))
        return self._deriv

    @property
    def dalpha(self) -> torch.Tensor:
        return self._derivatives()[0]

    @property
    def dsigma(self) -> torch.Tensor:
        return self._derivatives()[1]

    @property
    def f(self) -> torch.Tensor:
        if self._f is None:
            self._f = append_dims(self.path.drift_coef(self.t).to(self._alpha.dtype), self.ndim)
        return self._f

    @property
    def g2(self) -> torch.Tensor:
        if self._g2 is None:
            self._g2 = append_dims(self.path.diffusion(self.t).to(self._alpha.dtype) ** 2, self.ndim)
        return self._g2


# --------------------------------------------------------------------------------------------------
# the model interface
# --------------------------------------------------------------------------------------------------
class DiffusionModel(abc.ABC):
    """What solvers, likelihoods and guidance need: a path and ``score``, ``eps``, ``x0``, ``velocity``.

    A subclass implements :meth:`score` at least; the others default to the conversions through the score
    (module docstring). Calling the model is its score, so a model is also a :data:`ScoreFn`.
    """

    path: SDE
    num_classes: int = 0
    #: whether :meth:`velocity` stays finite at ``T`` where the path is singular (``α(T) = 0``): true for a
    #: network that predicts the velocity and for closed forms, false for ε / x0 / score outputs, whose
    #: conversion to the velocity divides by ``α``.
    velocity_defined_at_T: bool = False

    @abc.abstractmethod
    def score(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``∇_x log p_t(x)`` (of ``p_t(x | y)`` for class labels ``y``)."""

    def eps(self, x, t, y=None) -> torch.Tensor:
        """``E[ε | x_t = x] = −σ s``."""
        return -append_dims(self.path.marginal(t)[1].to(x.dtype), x.ndim) * self.score(x, t, y)

    def x0(self, x, t, y=None) -> torch.Tensor:
        """Tweedie's ``E[x_0 | x_t = x] = (x + σ² s) / α``."""
        c = Coefficients(self.path, t, x.ndim)
        return (x + c.sigma.to(x.dtype) ** 2 * self.score(x, t, y)) / c.alpha.to(x.dtype)

    def denoise(self, x, t, y=None) -> torch.Tensor:
        """Alias of :meth:`x0`."""
        return self.x0(x, t, y)

    def velocity(self, x, t, y=None) -> torch.Tensor:
        """Probability-flow velocity ``f x − ½ g² s`` (Song et al. 2021, eq. (13))."""
        return self.path.probability_flow_drift(x, t, self.score(x, t, y))

    def __call__(self, x, t, y=None):
        return self.score(x, t, y)


class ScoreFunctionModel(DiffusionModel):
    """A plain score function ``s(x, t)`` (or ``s(x, t, y)``) on a path, as a model."""

    def __init__(self, path: SDE, score_fn: Callable, num_classes: int = 0):
        if not isinstance(path, SDE):
            raise ValueError(f"path must be an SDE / GaussianPath object (e.g. VPSDE()), got {type(path).__name__}")
        if not callable(score_fn):
            raise ValueError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
        self.path, self.score_fn, self.num_classes = path, score_fn, int(num_classes)

    def score(self, x, t, y=None):
        return self.score_fn(x, t) if y is None else self.score_fn(x, t, y)

    def __repr__(self) -> str:
        return f"ScoreFunctionModel({self.path!r}, {self.score_fn!r})"


def as_model(path: SDE | None, model) -> DiffusionModel:
    """``model`` as a :class:`DiffusionModel` on ``path``: a model passes through, a score function is wrapped.

    A model that carries its own path must carry this one: a sub-VP model cannot sample with a VP SDE.
    ``path=None`` takes the model's own path.
    """
    if isinstance(model, DiffusionModel):
        if path is not None and model.path != path:
            raise ValueError(
                f"the model belongs to the path {model.path!r} but was paired with {path!r}; pass the model's own "
                "path (model.path), or retrain / rebuild the model for this one"
            )
        return model
    if path is None:
        raise ValueError(f"{type(model).__name__} carries no path: pass the SDE it belongs to, or a DiffusionModel")
    if isinstance(model, nn.Module) and hasattr(model, "sde") and isinstance(model.sde, SDE) and model.sde != path:
        raise ValueError(f"the module belongs to the SDE {model.sde!r} but was paired with {path!r}")
    return ScoreFunctionModel(path, model, int(getattr(model, "num_classes", 0) or 0))


class MappedModel(DiffusionModel):
    """A model seen through a map of its inputs and outputs: every prediction is ``out(model.<pred>(into(x), t, y), x)``.

    Serves linear changes of coordinates that commute with the path's isotropic noise (colorization's
    orthogonal colour decoupling) and changes of dtype (evaluating a float32 network for a float64 state).
    """

    def __init__(self, model: DiffusionModel, into: Callable, out: Callable, what: str = ""):
        self.model, self.path, self.num_classes = model, model.path, model.num_classes
        self.into, self.out, self.what = into, out, what

    def _map(self, name, x, t, y):
        xi = self.into(x)
        return self.out(getattr(self.model, name)(xi, t.to(xi.dtype) if t.is_floating_point() else t, y), x)

    @property
    def velocity_defined_at_T(self) -> bool:
        return self.model.velocity_defined_at_T

    def score(self, x, t, y=None):
        return self._map("score", x, t, y)

    def eps(self, x, t, y=None):
        return self._map("eps", x, t, y)

    def x0(self, x, t, y=None):
        return self._map("x0", x, t, y)

    def velocity(self, x, t, y=None):
        return self._map("velocity", x, t, y)

    def __repr__(self) -> str:
        return f"MappedModel({self.what or self.model!r})"


class PathChangedModel(DiffusionModel):
    r"""A model of path A used on path B: the change of variables through the noise level σ̃ (or λ).

    Where ``σ̃_A(t_A) = σ̃_B(t)``, the two perturbed data are the same up to scale, ``x_B = k x_A`` with
    ``k = α_B(t)/α_A(t_A)``, so ``E[x_0 | x_B] = x0_A(x_B/k, t_A)``, ``E[ε | x_B] = eps_A(x_B/k, t_A)`` and
    ``∇ log p_B(x) = score_A(x/k, t_A)/k``; the velocity follows on path B. The probability-flow ODE is
    therefore exact on any grid of path B (Meta flow_matching's scheduler change; DDIM across schedules);
    the reverse SDEs of B use A's predictions at the matching noise level. Path B's noise levels must lie in
    A's range ``[σ̃_A(0), σ̃_A(T_A)]``.
    """

    def __init__(self, model: DiffusionModel, path: SDE):
        if not isinstance(model, DiffusionModel) or not isinstance(path, SDE):
            raise ValueError("change_path(model, path) takes a DiffusionModel and an SDE / GaussianPath")
        self.model, self.path, self.num_classes = model, path, model.num_classes
        a = model.path
        ends = torch.tensor([0.0, float(a.T)], dtype=torch.float64)
        self._range = a.sigma_tilde(ends).tolist()

    def _map(self, x, t):
        st = self.path.sigma_tilde(t).to(torch.float64)
        lo, hi = self._range
        if t.device.type == "cpu" and bool(((st < lo * (1 - 1e-9)) | (st > hi * (1 + 1e-9))).any()):
            raise ValueError(
                f"path {self.path!r} reaches noise levels σ̃ in [{st.min().item():.4g}, {st.max().item():.4g}] outside the "
                f"range [{lo:.4g}, {hi:.4g}] of the model's path {self.model.path!r}; sample with eps / t_max inside it"
            )
        ta = self.model.path.t_from_sigma_tilde(st).clamp(0.0, float(self.model.path.T))
        k = self.path.marginal(t)[0].to(torch.float64) / self.model.path.marginal(ta)[0].to(torch.float64)
        return ta.to(t.dtype), append_dims(k.to(x.dtype), x.ndim)

    def score(self, x, t, y=None):
        ta, k = self._map(x, t)
        return self.model.score(x / k, ta, y) / k

    def eps(self, x, t, y=None):
        ta, k = self._map(x, t)
        return self.model.eps(x / k, ta, y)

    def x0(self, x, t, y=None):
        ta, k = self._map(x, t)
        return self.model.x0(x / k, ta, y)

    def velocity(self, x, t, y=None):
        ta, k = self._map(x, t)
        x0, eps = self.model.x0(x / k, ta, y), self.model.eps(x / k, ta, y)
        da, ds = (append_dims(v.to(x.dtype), x.ndim) for v in self.path.marginal_derivatives(t))
        return da * x0 + ds * eps

    def __repr__(self) -> str:
        return f"PathChangedModel({self.model!r} on {self.path!r})"


def change_path(model: DiffusionModel, path: SDE) -> DiffusionModel:
    """``model`` (trained on its own path) as a model on ``path`` (:class:`PathChangedModel`)."""
    if model.path == path:
        return model
    return PathChangedModel(model, path)


class CountingModel(DiffusionModel):
    """Counts network evaluations of a model: every call of ``score``/``eps``/``x0``/``velocity`` is one NFE."""

    def __init__(self, model: DiffusionModel):
        self.model, self.path, self.num_classes, self.nfe = model, model.path, model.num_classes, 0

    @property
    def velocity_defined_at_T(self) -> bool:
        return self.model.velocity_defined_at_T

    def score(self, x, t, y=None):
        self.nfe += 1
        return self.model.score(x, t, y)

    def eps(self, x, t, y=None):
        self.nfe += 1
        return self.model.eps(x, t, y)

    def x0(self, x, t, y=None):
        self.nfe += 1
        return self.model.x0(x, t, y)

    def velocity(self, x, t, y=None):
        self.nfe += 1
        return self.model.velocity(x, t, y)


# --------------------------------------------------------------------------------------------------
# parametrizations: what the network output means
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Parametrization(abc.ABC):
    r"""The meaning of a network output ``out`` at ``(x, t)`` as an affine function of ``(x_0, ε)``.

    Each target gives the four predictions from ``out`` (:meth:`score`, :meth:`eps`, :meth:`x0`,
    :meth:`velocity`), the output the network should produce for the true pair (:meth:`target`), the
    gain ``c = ∂s/∂out`` (:meth:`score_gain`) and the network input (:meth:`net_input`; ``x`` except for
    EDM's ``c_in x / α``). ``c`` is a :class:`Coefficients` at the batch's times.
    """

    name: ClassVar[str]
    default_time_input: ClassVar[str] = "t"

    def net_input(self, x: torch.Tensor, c: Coefficients) -> torch.Tensor:
        return x

    @abc.abstractmethod
    def x0(self, out, x, c) -> torch.Tensor: ...

    @abc.abstractmethod
    def eps(self, out, x, c) -> torch.Tensor: ...

    def score(self, out, x, c) -> torch.Tensor:
        return -self.eps(out, x, c) / c.sigma

    def velocity(self, out, x, c) -> torch.Tensor:
        return c.dalpha * self.x0(out, x, c) + c.dsigma * self.eps(out, x, c)

    @abc.abstractmethod
    def target(self, x0, eps, x, c) -> torch.Tensor:
        """The output for data ``x0`` and noise ``eps`` with ``x = α x0 + σ eps``."""

    @abc.abstractmethod
    def score_gain(self, c) -> torch.Tensor:
        """``c(t)`` with ``s = a(t) x + c(t) out``, shaped like ``c.alpha``."""


@dataclass(frozen=True)
class ScoreTarget(Parametrization):
    """The network predicts the score, ``s = out``."""

    name: ClassVar[str] = "score"

    def score(self, out, x, c):
        return out

    def eps(self, out, x, c):
        return -c.sigma * out

    def x0(self, out, x, c):
        return (x + c.sigma**2 * out) / c.alpha

    def velocity(self, out, x, c):
        return c.f * x - 0.5 * c.g2 * out

    def target(self, x0, eps, x, c):
        return -eps / c.sigma

    def score_gain(self, c):
        return torch.ones_like(c.sigma)


@dataclass(frozen=True)
class ScaledScoreTarget(Parametrization):
    """The network predicts ``σ(t) s`` (NCSN++ ``scale_by_sigma``; Song & Ermon 2020, Technique 3)."""

    name: ClassVar[str] = "scaled_score"

    def score(self, out, x, c):
        return out / c.sigma

    def eps(self, out, x, c):
        return -out

    def x0(self, out, x, c):
        return (x + c.sigma * out) / c.alpha

    def velocity(self, out, x, c):
        return c.f * x - 0.5 * c.g2 * out / c.sigma

    def target(self, x0, eps, x, c):
        return -eps

    def score_gain(self, c):
        return 1.0 / c.sigma


@dataclass(frozen=True)
class NoiseTarget(Parametrization):
    """The network predicts the noise ε (Ho et al. 2020), ``s = −out/σ``."""

    name: ClassVar[str] = "eps"

    def score(self, out, x, c):
        return -out / c.sigma

    def eps(self, out, x, c):
        return out

    def x0(self, out, x, c):
        return (x - c.sigma * out) / c.alpha

    def velocity(self, out, x, c):
        return c.f * x + 0.5 * c.g2 * out / c.sigma

    def target(self, x0, eps, x, c):
        return eps

    def score_gain(self, c):
        return -1.0 / c.sigma


@dataclass(frozen=True)
class DataTarget(Parametrization):
    """The network predicts the clean data ``x_0``, ``s = (α out − x)/σ²``."""

    name: ClassVar[str] = "x0"

    def x0(self, out, x, c):
        return out

    def eps(self, out, x, c):
        return (x - c.alpha * out) / c.sigma

    def score(self, out, x, c):
        return (c.alpha * out - x) / c.sigma**2

    def target(self, x0, eps, x, c):
        return x0

    def score_gain(self, c):
        return c.alpha / c.sigma**2


@dataclass(frozen=True)
class VTarget(Parametrization):
    """``v = α ε − σ x_0`` (Salimans & Ho 2022): ``x_0 = (α x − σ v)/(α² + σ²)``, ``ε = (σ x + α v)/(α² + σ²)``."""

    name: ClassVar[str] = "v"

    def x0(self, out, x, c):
        return (c.alpha * x - c.sigma * out) / (c.alpha**2 + c.sigma**2)

    def eps(self, out, x, c):
        return (c.sigma * x + c.alpha * out) / (c.alpha**2 + c.sigma**2)

    def target(self, x0, eps, x, c):
        return c.alpha * eps - c.sigma * x0

    def score_gain(self, c):
        return -c.alpha / ((c.alpha**2 + c.sigma**2) * c.sigma)


@dataclass(frozen=True)
class VelocityTarget(Parametrization):
    r"""The flow velocity ``u = α' x_0 + σ' ε`` (flow matching): with ``det = α σ' − σ α'``,
    ``x_0 = (σ' x − σ u)/det`` and ``ε = (α u − α' x)/det``; ``u`` is the probability-flow ODE's velocity."""

    name: ClassVar[str] = "velocity"

    def _det(self, c):
        return c.alpha * c.dsigma - c.sigma * c.dalpha

    def x0(self, out, x, c):
        return (c.dsigma * x - c.sigma * out) / self._det(c)

    def eps(self, out, x, c):
        return (c.alpha * out - c.dalpha * x) / self._det(c)

    def velocity(self, out, x, c):
        return out

    def target(self, x0, eps, x, c):
        return c.dalpha * x0 + c.dsigma * eps

    def score_gain(self, c):
        return -c.alpha / (self._det(c) * c.sigma)


@dataclass(frozen=True)
class EDMPreconditioning(Parametrization):
    r"""EDM's preconditioned denoiser (Karras et al. 2022, Table 1 and eq. (7)) on the scaled state ``x̃ = x/α``:

        D(x̃; σ̃) = c_skip x̃ + c_out F(c_in x̃; c_noise),   c_skip = σ_d²/(σ̃² + σ_d²),
        c_out = σ̃ σ_d / sqrt(σ̃² + σ_d²),   c_in = 1/sqrt(σ̃² + σ_d²),   c_noise = ¼ log σ̃,

    and ``x_0 = D``. The network ``F`` sees ``c_in x̃``; its default time input is ``c_noise``.
    """

    sigma_data: float = 0.5
    name: ClassVar[str] = "edm"
    default_time_input: ClassVar[str] = "quarter_log_sigma"

    def __post_init__(self):
        if isinstance(self.sigma_data, bool) or not (isinstance(self.sigma_data, (int, float)) and self.sigma_data > 0):
            raise ValueError(f"sigma_data must be a positive number, got {self.sigma_data!r}")

    def _c(self, c):
        st = c.sigma / c.alpha
        sd2 = self.sigma_data**2
        norm = torch.sqrt(st**2 + sd2)
        return sd2 / (st**2 + sd2), st * self.sigma_data / norm, 1.0 / norm  # c_skip, c_out, c_in

    def net_input(self, x, c):
        return self._c(c)[2] * (x / c.alpha)

    def x0(self, out, x, c):
        c_skip, c_out, _ = self._c(c)
        return c_skip * (x / c.alpha) + c_out * out

    def eps(self, out, x, c):
        return (x - c.alpha * self.x0(out, x, c)) / c.sigma

    def score(self, out, x, c):
        return (c.alpha * self.x0(out, x, c) - x) / c.sigma**2

    def target(self, x0, eps, x, c):
        c_skip, c_out, _ = self._c(c)
        return (x0 - c_skip * (x / c.alpha)) / c_out

    def score_gain(self, c):
        return c.alpha * self._c(c)[1] / c.sigma**2


PARAMETRIZATIONS: dict[str, type[Parametrization]] = {
    "score": ScoreTarget,
    "scaled_score": ScaledScoreTarget,
    "eps": NoiseTarget,
    "noise": NoiseTarget,
    "x0": DataTarget,
    "data": DataTarget,
    "sample": DataTarget,
    "v": VTarget,
    "velocity": VelocityTarget,
    "edm": EDMPreconditioning,
}
"""Names of the prediction targets (with the aliases ``noise``, ``data``, ``sample`` of other toolkits)."""

PREDICTIONS = tuple(PARAMETRIZATIONS)


def make_parametrization(target: str | Parametrization) -> Parametrization:
    """A :class:`Parametrization` from its name (see :data:`PARAMETRIZATIONS`) or as given."""
    if isinstance(target, Parametrization):
        return target
    try:
        return PARAMETRIZATIONS[target]()
    except (KeyError, TypeError):
        raise ValueError(f"unknown prediction target {target!r}; valid choices: {', '.join(PARAMETRIZATIONS)}") from None


# --------------------------------------------------------------------------------------------------
# time inputs: what label the network is conditioned on
# --------------------------------------------------------------------------------------------------
class TimeInput(abc.ABC):
    """``t -> label`` for the network; discrete conventions also give the chain index of ``t``."""

    discrete: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, path: SDE, t: torch.Tensor) -> torch.Tensor: ...

    def index(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - discrete conventions override
        raise NotImplementedError


@dataclass(frozen=True)
class ContinuousTime(TimeInput):
    """``label = scale · t`` (``t``; score_sde's VP/sub-VP DDPM++ models use ``999 t``)."""

    scale: float = 1.0

    def __call__(self, path, t):
        return t if self.scale == 1.0 else self.scale * t


@dataclass(frozen=True)
class SigmaTime(TimeInput):
    """``label = σ(t)`` (score_sde's VE NCSN++ models)."""

    def __call__(self, path, t):
        return path.marginal(t)[1]


@dataclass(frozen=True)
class SigmaTildeTime(TimeInput):
    """``label = σ̃(t) = σ/α`` (k-diffusion's σ)."""

    def __call__(self, path, t):
        return path.sigma_tilde(t)


@dataclass(frozen=True)
class QuarterLogSigmaTime(TimeInput):
    """``label = ¼ log σ̃(t)`` (EDM's ``c_noise``)."""

    def __call__(self, path, t):
        return 0.25 * torch.log(path.sigma_tilde(t))


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"a discrete time input needs n_discrete, the number of noise levels (an integer >= 2), got {n!r}")
    return n


@dataclass(frozen=True)
class DiscreteIndexTime(TimeInput):
    r"""score_sde's discrete VP convention (``get_score_fn(continuous=False)``): ``label = t (N − 1)/T``
    (not rounded) and chain index ``i = ⌊t (N − 1)/T⌋`` (``labels.long()``), to within ``1e-6`` of an
    integer so that the levels ``t_i = i T/(N − 1)`` of the DDPM loss map to ``i``."""

    n: int
    T: float = 1.0
    discrete: ClassVar[bool] = True

    def __post_init__(self):
        _check_n(self.n)

    def __call__(self, path, t):
        return t * ((self.n - 1) / self.T)

    def index(self, t):
        return torch.floor(t.double() * ((self.n - 1) / self.T) + 1e-6).long().clamp(0, self.n - 1)


@dataclass(frozen=True)
class ReversedIndexTime(TimeInput):
    r"""score_sde's discrete VE (SMLD/NCSN) convention: ``label = round((T − t)(N − 1)/T)``, so label 0 is the
    largest noise level (NCSN orders σ_max → σ_min); chain index ``i = N − 1 − label``."""

    n: int
    T: float = 1.0
    discrete: ClassVar[bool] = True

    def __post_init__(self):
        _check_n(self.n)

    def _label(self, t):
        return torch.round((self.T - t.double()) * ((self.n - 1) / self.T)).long().clamp(0, self.n - 1)

    def __call__(self, path, t):
        return self._label(t).to(t.dtype)

    def index(self, t):
        return self.n - 1 - self._label(t)


@dataclass(frozen=True)
class CallableTime(TimeInput):
    """``label = fn(t)`` for a user-given function."""

    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, path, t):
        return self.fn(t)


TIME_INPUTS = ("t", "999t", "sigma", "sigma_tilde", "quarter_log_sigma", "index", "reversed_index")
TIME_LABELS = TIME_INPUTS


def make_time_input(spec: str | TimeInput | Callable, n_discrete: int | None = None, T: float = 1.0) -> TimeInput:
    """A :class:`TimeInput` from a name (:data:`TIME_INPUTS`), an object, or a callable ``t -> label``."""
    if isinstance(spec, TimeInput):
        return spec
    if isinstance(spec, str):
        if spec == "t":
            return ContinuousTime()
        if spec == "999t":
            return ContinuousTime(999.0)
        if spec == "sigma":
            return SigmaTime()
        if spec == "sigma_tilde":
            return SigmaTildeTime()
        if spec == "quarter_log_sigma":
            return QuarterLogSigmaTime()
        if spec == "index":
            return DiscreteIndexTime(_check_n(n_discrete), T)
        if spec == "reversed_index":
            return ReversedIndexTime(_check_n(n_discrete), T)
        raise ValueError(f"unknown time input {spec!r}; valid choices: {', '.join(TIME_INPUTS)} (or a callable t -> label)")
    if callable(spec):
        return CallableTime(spec)
    raise ValueError(f"unknown time input {spec!r}; valid choices: {', '.join(TIME_INPUTS)} (or a callable t -> label)")


# --------------------------------------------------------------------------------------------------
# the network model
# --------------------------------------------------------------------------------------------------
class Model(nn.Module, DiffusionModel):
    """A network and its parametrization on a path: ``score``, ``eps``, ``x0`` and ``velocity`` from one output.

    Args:
        net: a module called as ``net(x, labels)`` with ``labels`` of shape ``(B,)`` (and as
            ``net(x, labels, y)`` with class labels ``y`` when it is class-conditional, ``net.num_classes > 0``).
        path: the Gaussian path / SDE the network was trained on.
        target: what the network predicts — a :class:`Parametrization` or one of :data:`PARAMETRIZATIONS`
            (``eps``, ``score``, ``scaled_score``, ``x0``, ``v``, ``velocity``, ``edm``).
        time_input: the label convention — a :class:`TimeInput`, a name from :data:`TIME_INPUTS` or a callable
            ``t -> label``; default: the target's own (``t``; EDM: ``quarter_log_sigma``).
        n_discrete: number of levels ``N`` of a discrete chain (needed by ``index`` / ``reversed_index``).
        sigmas, alphas: optional ``(N,)`` per-level ``σ_i`` (and ``α_i``) of a discrete chain in increasing-noise
            order; the conversions then use the chain's coefficients at the level of ``t`` (the time input's
            index, or the nearest level) instead of the path's ``σ(t)`` (and ``α(t)``).

    The network runs in its parameter dtype (a float64 solver may call a float32 network); every method returns
    ``x``'s dtype. Calling the model is its score.
    """

    def __init__(
        self,
        net: nn.Module,
        path: SDE,
        *,
        target: str | Parametrization = "eps",
        time_input: str | TimeInput | Callable | None = None,
        n_discrete: int | None = None,
        sigmas: torch.Tensor | None = None,
        alphas: torch.Tensor | None = None,
    ):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ValueError(f"net must be a torch.nn.Module called as net(x, labels), got {type(net).__name__}")
        if not isinstance(path, SDE):
            raise ValueError(f"path must be an SDE / GaussianPath object (e.g. VPSDE()), got {type(path).__name__}")
        param = make_parametrization(target)
        tin = make_time_input(time_input if time_input is not None else param.default_time_input, n_discrete, path.T)
        if sigmas is not None or alphas is not None:
            _check_n(n_discrete)
        self.net, self.path, self.parametrization, self.time_input = net, path, param, tin
        self.n_discrete = n_discrete
        # buffers (move with .to(device)) but not persistent: the chain is rebuilt from the config
        self.register_buffer("sigmas", _chain("sigmas", sigmas, n_discrete), persistent=False)
        self.register_buffer("alphas", _chain("alphas", alphas, n_discrete), persistent=False)
        self._chain_index = tin.index if tin.discrete else (lambda t: torch.round(t.double() * (n_discrete - 1) / path.T).long())

    # compatibility with code that knows the model by its SDE
    @property
    def sde(self) -> SDE:
        return self.path

    def extra_repr(self) -> str:
        return f"target={self.parametrization!r}, time_input={self.time_input!r}, n_discrete={self.n_discrete}"

    @property
    def num_classes(self) -> int:
        """Number of classes of a class-conditional network (0: unconditional); its null label is this number."""
        return int(getattr(self.net, "num_classes", 0) or 0)

    # --- coefficients and the network call ------------------------------------------------------
    def coefficients(self, x: torch.Tensor, t: torch.Tensor) -> Coefficients:
        """The path's (or the discrete chain's) coefficients at ``t`` for data shaped like ``x``."""
        t = self.path._check(x, t)
        alpha = sigma = None
        if self.sigmas is not None or self.alphas is not None:
            i = self._chain_index(t).clamp(0, self.n_discrete - 1)
            sigma = None if self.sigmas is None else self.sigmas.to(x.dtype)[i]
            alpha = None if self.alphas is None else self.alphas.to(x.dtype)[i]
        return Coefficients(self.path, t.to(x.dtype) if t.is_floating_point() else t, x.ndim, alpha=alpha, sigma=sigma)

    def labels(self, t: torch.Tensor) -> torch.Tensor:
        """The label the network is conditioned on at time ``t``."""
        return self.time_input(self.path, t)

    def _forward_net(self, x, t, c, y) -> torch.Tensor:
        if y is not None and not self.num_classes:
            raise ValueError(
                "class labels y were given to an unconditional model; train with model.num_classes > 0 "
                "(e.g. configs/vp/mnist_cfg.py) for class-conditional sampling, or use classifier guidance"
            )
        xin = self.parametrization.net_input(x, c)
        labels = self.labels(t)
        p = next(self.net.parameters(), None)
        if p is not None and p.is_floating_point():
            if xin.is_floating_point():
                xin = xin.to(p.dtype)
            if labels.is_floating_point():
                labels = labels.to(p.dtype)
        out = self.net(xin, labels) if y is None else self.net(xin, labels, y)
        if out.shape != x.shape:
            raise ValueError(f"the network returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}")
        return out

    def output(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The raw network output at ``(x, t)`` (in the network's dtype)."""
        return self._forward_net(x, t, self.coefficients(x, t), y)

    def _eval(self, x, t, y):
        c = self.coefficients(x, t)
        return self._forward_net(x, t, c, y).to(x.dtype), c

    @property
    def velocity_defined_at_T(self) -> bool:
        return isinstance(self.parametrization, VelocityTarget)

    # --- the four predictions -------------------------------------------------------------------
    def score(self, x, t, y=None):
        out, c = self._eval(x, t, y)
        return self.parametrization.score(out, x, c)

    def eps(self, x, t, y=None):
        out, c = self._eval(x, t, y)
        return self.parametrization.eps(out, x, c)

    def x0(self, x, t, y=None):
        out, c = self._eval(x, t, y)
        return self.parametrization.x0(out, x, c)

    def velocity(self, x, t, y=None):
        out, c = self._eval(x, t, y)
        return self.parametrization.velocity(out, x, c)

    def forward(self, x, t, y=None):
        """The score ``s(x, t)`` (``s(x, t, y)`` for a class-conditional model; ``y=None`` is the null label)."""
        return self.score(x, t, y)

    __call__ = nn.Module.__call__

    # --- what a loss needs ----------------------------------------------------------------------
    def output_target(self, x0: torch.Tensor, eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The output the network should give at ``x = α x0 + σ eps``."""
        return self.parametrization.target(x0, eps, x, self.coefficients(x, t))

    def output_weight(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``c(t)²``, the weight turning ``‖s − s*‖²`` into ``‖out − out*‖²``, shape ``(B,)``."""
        return self.parametrization.score_gain(self.coefficients(like, t)).flatten(1)[:, 0] ** 2


def _chain(name: str, values, n) -> torch.Tensor | None:
    if values is None:
        return None
    v = torch.as_tensor(values).flatten()
    v = v if v.is_floating_point() else v.double()
    if v.shape != (n,) or not torch.all(v > 0):
        raise ValueError(f"{name} must be {n} positive values (one per discrete level), got shape {tuple(v.shape)}")
    return v


# v1 names of the targets and labels
_V1_PREDICTIONS = {"noise": "eps", "score": "score", "scaled_score": "scaled_score"}


class ScoreModel(Model):
    """The v1 adapter: ``ScoreModel(net, sde, prediction=..., time_label=..., n_discrete=..., sigmas=...)``.

    ``prediction`` is any name of :data:`PARAMETRIZATIONS` (v1: ``noise``, ``score``, ``scaled_score``);
    ``time_label`` any of :data:`TIME_INPUTS`. Equal to :class:`Model` with ``target`` / ``time_input``.
    """

    def __init__(self, net, sde, *, prediction="noise", time_label="t", n_discrete=None, sigmas=None, alphas=None):
        super().__init__(net, sde, target=prediction, time_input=time_label, n_discrete=n_discrete, sigmas=sigmas,
                         alphas=alphas)
        self.prediction = prediction if isinstance(prediction, str) else self.parametrization.name
        self.time_label = time_label if isinstance(time_label, str) else "custom"

