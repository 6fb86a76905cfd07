"""Exponential moving average of a model's parameters (Song & Ermon 2020, Technique 5)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    r"""``θ̄ ← d θ̄ + (1 − d) θ``.

    With ``warmup=True`` the decay is ``min(d, (1 + n)/(10 + n))`` after ``n`` updates (score_sde's
    ``ExponentialMovingAverage(use_num_updates=True)``), so early averages do not remember the random init.
    :meth:`store` / :meth:`copy_to` / :meth:`restore` swap the averaged weights in and out of a model;
    :meth:`average_of` is a context manager doing the three.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, *, warmup: bool = True):
        if isinstance(decay, bool) or not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay!r}")
        self.decay, self.warmup, self.num_updates = float(decay), bool(warmup), 0
        self.shadow = [p.detach().clone() for p in model.parameters()]
        self._backup: list[torch.Tensor] | None = None

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        params = list(model.parameters())
        if len(params) != len(self.shadow) or any(p.shape != s.shape for p, s in zip(params, self.shadow)):
            raise ValueError("the model's parameters do not match the EMA's shadow parameters")
        return params

    @torch.no_grad()
    def update(self, model: nn.Module | list[torch.Tensor]) -> None:
        """One averaging step; ``model`` may be the module or its parameter list (cached by a hot loop)."""
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates)) if self.warmup else self.decay
        params = model if isinstance(model, list) else self._params(model)
        torch._foreach_lerp_(self.shadow, [p.detach() for p in params], 1.0 - d)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for p, s in zip(self._params(model), self.shadow):
            p.copy_(s)

    @torch.no_grad()
    def store(self, model: nn.Module) -> None:
        self._backup = [p.detach().clone() for p in self._params(model)]

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        if self._backup is None:
            raise RuntimeError("EMA.restore called without a preceding EMA.store")
        for p, b in zip(self._params(model), self._backup):
            p.copy_(b)
        self._backup = None

    @contextlib.contextmanager
    def average_of(self, model: nn.Module):
        """Temporarily load the averaged weights into ``model``."""
        self.store(model)
        self.copy_to(model)
        try:
            yield model
        finally:
            self.restore(model)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates, "shadow": list(self.shadow)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow) or any(a.shape != b.shape for a, b in zip(shadow, self.shadow)):
            raise ValueError("EMA state does not match the model's parameters")
        self.decay, self.warmup, self.num_updates = float(state["decay"]), bool(state["warmup"]), int(state["num_updates"])
        self.shadow = [s.to(device=b.device, dtype=b.dtype).clone() for s, b in zip(shadow, self.shadow)]
