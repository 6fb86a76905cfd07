r"""The score adapter: the ONE place where a network's output becomes a score ``s(x, t) ≈ ∇_x log p_t(x)``.

A noise-conditional network is called as ``net(x, label)``; two conventions decide what it means:

* the **time label** it was trained with — ``"t"`` (continuous time), ``"999t"`` (score_sde's VP/sub-VP
  DDPM++ models: ``label = 999 t``), ``"sigma"`` (score_sde's VE NCSN++ models: ``label = σ(t)``),
  ``"index"`` (DDPM-trained models: ``label = i = round(t (N-1)/T)``, :func:`sde_lab.sde.discrete_index`)
  or ``"reversed_index"`` (SMLD/NCSN-trained models: ``label = round((T - t)(N-1)/T) = N-1-i``, so label 0
  is the *largest* noise level — score_sde's ``get_score_fn`` for a discrete VESDE and its ``smld_loss``
  index ``flip(discrete_sigmas)``, the NCSN ordering σ_max → σ_min);
* the **prediction** — ``"noise"``: the network predicts ε in ``x_t = α x_0 + σ ε``, so
  ``s = -net / σ(t)`` (Ho et al. 2020; Song et al. 2021, score_sde ``get_score_fn`` for VP/sub-VP);
  ``"score"``: ``s = net``; ``"scaled_score"``: the network predicts ``σ(t) s``, so ``s = net / σ(t)``
  (NCSN++ with ``scale_by_sigma``, Song & Ermon 2020, Technique 3).

Every conversion is linear in the network output, ``s = c(t) · net`` (:meth:`ScoreModel.output_scale`);
:meth:`ScoreModel.output_from_score` is its inverse and gives the losses the output a network *should*
produce for a target score, so no loss repeats this logic. ``σ(t)`` is the SDE's marginal std, or, for
networks trained on a discrete chain, the chain's own per-index std (``sigmas``: ``VESDE.smld_sigmas(N)``,
``sqrt(1 - ᾱ_i)`` from ``VPSDE.ddpm_schedule(N)``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .sde import SDE, discrete_index
from .utils import append_dims

__all__ = ["ScoreFn", "ScoreModel", "PREDICTIONS", "TIME_LABELS"]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A score function ``s(x, t)``: ``x`` of shape ``(B, ...)``, ``t`` of shape ``(B,)``, returns shape of ``x``."""

PREDICTIONS = ("noise", "score", "scaled_score")
TIME_LABELS = ("t", "999t", "sigma", "index", "reversed_index")


class ScoreModel(nn.Module):
    """``s(x, t) = c(t) · net(x, label(t))`` for one parametrization and one time-label convention.

    Args:
        net: a module called as ``net(x, labels)`` with ``labels`` of shape ``(B,)`` (and as
            ``net(x, labels, y)`` with class labels ``y`` when it is class-conditional, ``net.num_classes > 0``).
        sde: the forward SDE; provides ``σ(t)`` through :meth:`SDE.marginal`.
        prediction: ``"noise"`` (``s = -net/σ``), ``"score"`` (``s = net``), ``"scaled_score"`` (``s = net/σ``).
        time_label: ``"t"``, ``"999t"``, ``"sigma"``, ``"index"`` or ``"reversed_index"`` (see module docstring).
        n_discrete: number of discrete noise levels ``N``; required for the index labels and for ``sigmas``.
        sigmas: optional ``(N,)`` per-index stds of a discrete chain, in increasing-``t`` order; when given,
            ``σ(t) = sigmas[discrete_index(t, N)]`` replaces the SDE's continuous ``σ(t)`` in the conversion.
    """

    def __init__(
        self,
        net: nn.Module,
        sde: SDE,
        *,
        prediction: str = "noise",
        time_label: str = "t",
        n_discrete: int | None = None,
        sigmas: torch.Tensor | None = None,
    ):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; valid choices: {', '.join(PREDICTIONS)}")
        if time_label not in TIME_LABELS:
            raise ValueError(f"unknown time_label {time_label!r}; valid choices: {', '.join(TIME_LABELS)}")
        if time_label in ("index", "reversed_index") or sigmas is not None:
            if not isinstance(n_discrete, int) or n_discrete < 2:
                raise ValueError(
                    f"time_label={time_label!r} (or discrete sigmas) needs n_discrete, the number of discrete "
                    f"noise levels (an integer >= 2), got {n_discrete!r}"
                )
        if sigmas is not None:
            sigmas = torch.as_tensor(sigmas).flatten()
            sigmas = sigmas if sigmas.is_floating_point() else sigmas.double()
            if sigmas.shape != (n_discrete,) or not torch.all(sigmas > 0):
                raise ValueError(f"sigmas must be {n_discrete} positive stds, got shape {tuple(sigmas.shape)}")
        self.net = net
        self.sde = sde
        self.prediction = prediction
        self.time_label = time_label
        self.n_discrete = n_discrete
        # A buffer (moves with .to(device)) but not persistent: the schedule is rebuilt from the config.
        self.register_buffer("sigmas", sigmas, persistent=False)

    def extra_repr(self) -> str:
        return f"prediction={self.prediction!r}, time_label={self.time_label!r}, n_discrete={self.n_discrete}"

    # --- conventions --------------------------------------------------------------------------
    def time_labels(self, t: torch.Tensor) -> torch.Tensor:
        """The label ``net`` is conditioned on at time ``t`` (shape ``(B,)``, float)."""
        if self.time_label == "t":
            return t
        if self.time_label == "999t":
            return 999.0 * t
        if self.time_label == "sigma":
            return self.sde.marginal(t)[1]
        T = self.sde.T
        if self.time_label == "index":
            return discrete_index(t, self.n_discrete, T).to(t.dtype)
        return discrete_index(T - t, self.n_discrete, T).to(t.dtype)  # reversed_index

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The std ``σ(t)`` used by the conversion: the SDE's marginal std or the discrete chain's."""
        if self.sigmas is not None:
            return self.sigmas.to(t.dtype)[discrete_index(t, self.n_discrete, self.sde.T)]
        return self.sde.marginal(t)[1]

    def output_scale(self, t: torch.Tensor) -> torch.Tensor:
        """``c(t)`` with ``s = c(t) · net``, shape ``(B,)``: ``-1/σ``, ``1`` or ``1/σ``."""
        if self.prediction == "score":
            return torch.ones_like(t)
        inv = 1.0 / self.sigma(t)
        return -inv if self.prediction == "noise" else inv

    def score_from_output(self, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``s = c(t) · out``."""
        return append_dims(self.output_scale(t).to(out.dtype), out.ndim) * out

    def output_from_score(self, score: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`score_from_output`: what the network should output for ``score``.

        For the DSM target ``-z/σ`` this is ``z`` (noise), ``-z/σ`` (score) or ``-z`` (scaled score).
        """
        if self.prediction == "score":
            return score
        sig = append_dims(self.sigma(t).to(score.dtype), score.ndim)
        return -sig * score if self.prediction == "noise" else sig * score

    # --- evaluation ---------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes of a class-conditional network (0: unconditional); its null label is this number."""
        return int(getattr(self.net, "num_classes", 0) or 0)

    def _net(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``net(x, label(t)[, y])`` evaluated in the network's parameter dtype, returned in ``x``'s dtype
        (float64 solvers may call a float32 network)."""
        if y is not None and not self.num_classes:
            raise ValueError(
                "class labels y were given to an unconditional score model; train with model.num_classes > 0 "
                "(e.g. configs/vp/mnist_cfg.py) for class-conditional sampling, or use classifier guidance"
            )
        param = next(self.net.parameters(), None)
        xin = x.to(param.dtype) if param is not None and x.is_floating_point() and param.is_floating_point() else x
        out = self.net(xin, self.time_labels(t)) if y is None else self.net(xin, self.time_labels(t), y)
        return out.to(x.dtype)

    def output(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The raw network output ``net(x, label(t)[, y])``."""
        t = self.sde._check(x, t)
        return self._net(x, t, y)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The score ``s(x, t)`` (``s(x, t, y)`` for a class-conditional model; ``y=None`` is ∅), shape of ``x``."""
        t = self.sde._check(x, t)
        out = self._net(x, t, y)
        if out.shape != x.shape:
            raise ValueError(f"the network returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}")
        return self.score_from_output(out, t)
