r"""Models from and for other libraries: diffusers in, safetensors out and in, k-diffusion / EDM denoisers both ways.

* :func:`from_diffusers` — a diffusers ``UNet2DModel`` (or any module whose ``forward(sample, timestep)``
  returns ``.sample``) and its scheduler config as an sde_lab :class:`~sde_lab.model.Model`. DDPM-type
  schedulers (``DDPMScheduler``, ``DDIMScheduler``, ``DPMSolverMultistepScheduler``, ``PNDMScheduler``, …:
  anything with ``beta_schedule``) become the :class:`~sde_lab.sde.DiscreteVP` path through their
  ``alphas_cumprod`` (computed as diffusers does, in float32) with the network label ``t (N − 1)``;
  ``prediction_type`` ``epsilon`` / ``sample`` / ``v_prediction`` maps to the targets ``eps`` / ``x0`` / ``v``.
  The score-SDE VE scheduler (``ScoreSdeVeScheduler``) becomes :class:`~sde_lab.sde.VESDE` with the network
  conditioned on ``σ`` and predicting the score (its NCSN++ port divides by σ itself).
  :func:`load_diffusers` reads a folder in the hub layout (``unet/``, ``scheduler/``) or ``hf://org/name``
  (through ``huggingface_hub``, online only).
* safetensors out and in — :mod:`sde_lab.export` (it builds models from configs, so it sits at the edge with
  :mod:`sde_lab.config`).
* :func:`to_k_diffusion` — an sde_lab model on any path as k-diffusion's / EDM's denoiser ``D(x̂, σ)`` on the
  σ-form state ``x̂ = x/α`` (their samplers run on it); :func:`from_denoiser` — such a denoiser as an sde_lab
  model on a path of your choice (default :class:`~sde_lab.sde.EDMPath`), so sde_lab's solvers and
  likelihood run on it.

diffusers, safetensors and huggingface_hub are the optional extra ``interop``; they are imported only
inside these functions, never at ``import sde_lab``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .model import DiffusionModel, Model
from .sde import SDE, VESDE, DiscreteVP, EDMPath
from .utils import append_dims

__all__ = [
    "from_diffusers",
    "load_diffusers",
    "is_diffusers_folder",
    "diffusers_alphas_cumprod",
    "DiffusersNet",
    "KDiffusionDenoiser",
    "to_k_diffusion",
    "DenoiserModel",
    "from_denoiser",
]

PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


def _need(module: str, extra: str = "interop"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this needs {module.split('.')[0]}: pip install 'sde_lab[{extra}]'") from None


# --------------------------------------------------------------------------------------------------
# diffusers in
# --------------------------------------------------------------------------------------------------
class DiffusersNet(nn.Module):
    """``net(x, labels[, y]) = unet(x, labels[, class_labels=y]).sample``: a diffusers UNet as an sde_lab network."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        cfg = getattr(unet, "config", {}) or {}
        self.num_classes = int((cfg.get("num_class_embeds") if hasattr(cfg, "get") else None) or 0)

    def forward(self, x, labels, y=None):
        out = self.unet(x, labels, class_labels=y) if y is not None else self.unet(x, labels)
        return out.sample if hasattr(out, "sample") else (out[0] if isinstance(out, tuple) else out)


def _scheduler_config(scheduler_config) -> dict[str, Any]:
    if hasattr(scheduler_config, "config") and not isinstance(scheduler_config, Mapping):
        scheduler_config = scheduler_config.config
    if isinstance(scheduler_config, (str, os.PathLike)):
        p = Path(scheduler_config)
        if p.is_dir():
            p = p / "scheduler_config.json" if (p / "scheduler_config.json").is_file() else p / "scheduler" / "scheduler_config.json"
        if not p.is_file():
            raise FileNotFoundError(f"no diffusers scheduler config at {p}")
        scheduler_config = json.loads(p.read_text())
    if not isinstance(scheduler_config, Mapping):
        raise ValueError(f"scheduler_config must be a dict, a diffusers scheduler or a scheduler_config.json path, "
                         f"got {type(scheduler_config).__name__}")
    return dict(scheduler_config)


def diffusers_alphas_cumprod(config: Mapping[str, Any]) -> torch.Tensor:
    """``alphas_cumprod`` of a diffusers DDPM-type scheduler config, computed as diffusers does (float32)."""
    n = int(config.get("num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    schedule = config.get("beta_schedule", "linear")
    start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float32)
    elif schedule == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float32)
    elif schedule == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2
    elif schedule == "squaredcos_cap_v2":
        def abar(u):
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=torch.float32)
    elif schedule == "sigmoid":
        betas = torch.sigmoid(torch.linspace(-6, 6, n)) * (end - start) + start
    else:
        raise ValueError(f"unknown diffusers beta_schedule {schedule!r}; valid: linear, scaled_linear, squaredcos_cap_v2, "
                         "sigmoid (or trained_betas)")
    if config.get("rescale_betas_zero_snr"):
        raise ValueError("rescale_betas_zero_snr gives ᾱ = 0 at the last level (infinite noise); not a path sde_lab samples")
    return torch.cumprod(1.0 - betas, dim=0).double()


def from_diffusers(unet: nn.Module, scheduler_config, *, device=None) -> Model:
    """An sde_lab model from a diffusers UNet and its scheduler config (a dict, a scheduler, or a json path).

    DDPM-type schedulers: path :class:`~sde_lab.sde.DiscreteVP` (their ``alphas_cumprod``), label
    ``t (N − 1)`` (``time_input="index"``), target from ``prediction_type``. ``ScoreSdeVeScheduler``:
    :class:`~sde_lab.sde.VESDE(sigma_min, sigma_max)`, label ``σ(t)``, target ``score``. The model's output
    equals ``unet(x, timestep).sample`` at the matching timestep.
    """
    cfg = _scheduler_config(scheduler_config)
    cls = str(cfg.get("_class_name", ""))
    net = DiffusersNet(unet)
    if "ScoreSdeVe" in cls or ("sigma_max" in cfg and "beta_schedule" not in cfg):
        path = VESDE(float(cfg.get("sigma_min", 0.01)), float(cfg.get("sigma_max", 1348.0)))
        model = Model(net, path, target="score", time_input="sigma")
    else:
        ptype = cfg.get("prediction_type", "epsilon")
        if ptype not in PREDICTION_TYPES:
            raise ValueError(f"unknown diffusers prediction_type {ptype!r}; valid choices: {', '.join(PREDICTION_TYPES)}")
        abar = diffusers_alphas_cumprod(cfg)
        model = Model(net, DiscreteVP(abar), target=PREDICTION_TYPES[ptype], time_input="index", n_discrete=len(abar))
    model.diffusers_scheduler = cls or "unknown"
    model.diffusers_config = cfg
    model.data_range = [-1.0, 1.0]  # diffusers' image models are trained on [-1, 1]
    return model.to(device) if device is not None else model


def is_diffusers_folder(path) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / "unet" / "config.json").is_file() or (p / "model_index.json").is_file()
                           or ((p / "config.json").is_file() and (p / "scheduler_config.json").is_file()))


def load_diffusers(spec: str | os.PathLike, *, device=None) -> Model:
    """:func:`from_diffusers` on a saved pipeline: a local folder in the hub layout (``unet/``, ``scheduler/``;
    or ``config.json`` + weights + ``scheduler_config.json`` side by side) or ``hf://org/name`` (downloaded with
    ``huggingface_hub``; needs the network)."""
    diffusers = _need("diffusers")
    s = str(spec)
    if s.startswith("hf://"):
        hub = _need("huggingface_hub")
        repo = s[len("hf://"):].strip("/")
        try:
            folder = Path(hub.snapshot_download(repo, allow_patterns=["*.json", "unet/*", "scheduler/*", "*.safetensors", "*.bin"]))
        except Exception as e:
            raise ValueError(f"could not download {repo!r} from the Hugging Face hub ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:160]}); offline, pass a local folder in the hub layout") from None
    else:
        folder = Path(s).expanduser()
    if not is_diffusers_folder(folder):
        raise ValueError(f"{folder} is not a diffusers model folder (expected unet/config.json and scheduler/scheduler_config.json)")
    sub = "unet" if (folder / "unet" / "config.json").is_file() else None
    unet = diffusers.UNet2DModel.from_pretrained(str(folder), subfolder=sub)
    sched = folder / "scheduler" / "scheduler_config.json"
    if not sched.is_file():
        sched = folder / "scheduler_config.json"
    model = from_diffusers(unet.eval(), sched, device=device)
    model.event_shape = (int(unet.config.in_channels), int(unet.config.sample_size), int(unet.config.sample_size))
    return model.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# k-diffusion / EDM denoisers both ways
# --------------------------------------------------------------------------------------------------
class KDiffusionDenoiser(nn.Module):
    r"""An sde_lab model as k-diffusion's / EDM's denoiser ``D(x̂, σ) = E[x_0 | x̂]`` on the σ-form state
    ``x̂ = x/α(t)`` at noise level ``σ = σ̃(t)`` (``t = path.t_from_sigma_tilde(σ)``), for any path. Counts its
    calls in ``nfe``; k-diffusion's samplers take it as ``model`` with σ levels from ``sigma_min`` /
    ``sigma_max`` (the path's σ̃ range)."""

    def __init__(self, model: DiffusionModel):
        super().__init__()
        if not isinstance(model, DiffusionModel):
            raise ValueError(f"model must be an sde_lab DiffusionModel, got {type(model).__name__}")
        self.model, self.path, self.nfe = model, model.path, 0
        lim = torch.tensor([1e-5, float(self.path.t_max)], dtype=torch.float64)
        self.sigma_min, self.sigma_max = (float(v) for v in self.path.sigma_tilde(lim))

    def t_of(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.path.t_from_sigma_tilde(sigma.double()).clamp(0.0, float(self.path.T))

    def forward(self, x_hat, sigma, **kwargs):
        self.nfe += 1
        sigma = torch.as_tensor(sigma, device=x_hat.device).reshape(-1).expand(x_hat.shape[0])
        t = self.t_of(sigma)
        alpha = append_dims(self.path.marginal(t)[0].to(x_hat.dtype), x_hat.ndim)
        return self.model.x0(alpha * x_hat, t.to(x_hat.dtype), kwargs.get("y"))


def to_k_diffusion(model: DiffusionModel) -> KDiffusionDenoiser:
    """``D(x̂, σ)`` of an sde_lab model (:class:`KDiffusionDenoiser`): ``k_diffusion.sampling.sample_dpmpp_2m(D,
    x_T/α(T), sigmas)`` samples it."""
    return KDiffusionDenoiser(model)


class DenoiserModel(DiffusionModel):
    r"""A denoiser ``D(x̂, σ)`` (k-diffusion / EDM convention: ``x̂ = x_0 + σ n``) as an sde_lab model on ``path``:
    ``x̂_0(x, t) = D(x/α(t), σ̃(t))`` and the score, ε and velocity from it. ``sigma_of`` maps the path's σ̃ to
    the denoiser's own σ (default the identity)."""

    def __init__(self, denoiser: Callable, path: SDE, *, sigma_of: Callable | None = None, num_classes: int = 0):
        if not callable(denoiser):
            raise ValueError(f"denoiser must be callable as D(x, sigma), got {type(denoiser).__name__}")
        if not isinstance(path, SDE):
            raise ValueError(f"path must be an sde_lab path (e.g. EDMPath()), got {type(path).__name__}")
        self.denoiser, self.path, self.sigma_of, self._classes = denoiser, path, sigma_of, int(num_classes)

    @property
    def num_classes(self) -> int:
        return self._classes

    def x0(self, x, t, y=None):
        t = self.path._check(x, t)
        alpha = append_dims(self.path.marginal(t)[0].to(x.dtype), x.ndim)
        s = self.path.sigma_tilde(t).to(x.dtype)
        if self.sigma_of is not None:
            s = self.sigma_of(s)
        out = self.denoiser(x / alpha, s) if y is None else self.denoiser(x / alpha, s, y)
        return torch.as_tensor(out).to(x.dtype)

    def eps(self, x, t, y=None):
        alpha, sigma = (append_dims(v.to(x.dtype), x.ndim) for v in self.path.marginal(self.path._check(x, t)))
        return (x - alpha * self.x0(x, t, y)) / sigma

    def score(self, x, t, y=None):
        sigma = append_dims(self.path.marginal(self.path._check(x, t))[1].to(x.dtype), x.ndim)
        return -self.eps(x, t, y) / sigma

    def __repr__(self) -> str:
        return f"DenoiserModel({getattr(self.denoiser, '__name__', type(self.denoiser).__name__)}, {self.path!r})"


def from_denoiser(denoiser: Callable, *, path: SDE | None = None, sigma_min: float = 0.002, sigma_max: float = 80.0,
                  sigma_of: Callable | None = None, num_classes: int = 0) -> DenoiserModel:
    """A k-diffusion / EDM denoiser ``D(x̂, σ)`` as an sde_lab model; default path ``EDMPath(sigma_min,
    sigma_max)`` (``α = 1``, ``σ(t) = t``: sde_lab's Heun on a Karras grid is EDM's Algorithm 2)."""
    return DenoiserModel(denoiser, path if path is not None else EDMPath(sigma_min, sigma_max), sigma_of=sigma_of,
                         num_classes=num_classes)
