r"""A small LeNet-style image classifier: features for FID-LeNet / IS-LeNet, and noise-conditional guidance.

``Classifier(in_channels, n_classes, image_size)`` is a 4-conv, 2-pool network (LeCun et al. 1998 in
spirit) whose penultimate layer (``features``, 128-D after ReLU) plays the role Inception's pool3
plays for FID on MNIST-scale data. With ``time_conditional=True`` every conv block adds a learned
per-channel bias from a sinusoidal embedding of ``t`` (Ho et al. 2020), and :func:`train_classifier`
trains it on perturbed data ``x_t = α(t) x + σ(t) z``, ``t ~ U(ε, 1)`` from the SDE's perturbation
kernel — the time-dependent classifier ``p_t(y | x_t)`` of Song et al. 2021, §5 / Appendix I, for
class-conditional sampling with ``∇_x log p_t(y | x)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .nets.embeddings import sinusoidal_embedding
from .sde import SAMPLING_EPS, SDE
from .utils import append_dims, randn_like

__all__ = ["Classifier", "train_classifier", "evaluate_classifier", "save_classifier", "load_classifier", "perturb", "default_classifier_path"]


class _Block(nn.Module):
    """conv3×3 → (+ time bias) → GroupNorm → ReLU."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int | None):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm = nn.GroupNorm(min(8, c_out), c_out)
        self.time = nn.Linear(emb_dim, c_out) if emb_dim else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv(x)
        if self.time is not None:
            h = h + self.time(emb)[:, :, None, None]
        return F.relu(self.norm(h))


class Classifier(nn.Module):
    """LeNet-style classifier ``x (B, C, H, W) [, t (B,)] → logits (B, n_classes)``.

    Args:
        in_channels, n_classes, image_size: data geometry (square images).
        time_conditional: add a time input for noise-conditional classification (guidance).
        width: channels of the first two convs (doubled after the first pooling).
        feature_dim: size of the penultimate layer returned by :meth:`features`.
    """

    def __init__(self, in_channels: int, n_classes: int, image_size: int, time_conditional: bool = False, *, width: int = 32, feature_dim: int = 128):
        super().__init__()
        if in_channels < 1 or n_classes < 2 or image_size < 4:
            raise ValueError(f"need in_channels >= 1, n_classes >= 2, image_size >= 4; got {in_channels}, {n_classes}, {image_size}")
        self.in_channels, self.n_classes, self.image_size = in_channels, n_classes, image_size
        self.time_conditional, self.width, self.feature_dim = time_conditional, width, feature_dim
        emb = 4 * width if time_conditional else None
        if time_conditional:
            self.embed = nn.Sequential(nn.Linear(width, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.blocks = nn.ModuleList([_Block(in_channels, width, emb), _Block(width, width, emb), _Block(width, 2 * width, emb), _Block(2 * width, 2 * width, emb)])
        self.pool_size = min(4, image_size // 4)
        self.fc = nn.Linear(2 * width * self.pool_size**2, feature_dim)
        self.head = nn.Linear(feature_dim, n_classes)

    def config(self) -> dict[str, Any]:
        return dict(in_channels=self.in_channels, n_classes=self.n_classes, image_size=self.image_size, time_conditional=self.time_conditional, width=self.width, feature_dim=self.feature_dim)

    def _time_embedding(self, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor | None:
        if not self.time_conditional:
            if t is not None:
                raise ValueError("this classifier is not time-conditional; call it without t")
            return None
        if t is None:  # clean data
            t = torch.zeros(x.shape[0], device=x.device)
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        return self.embed(sinusoidal_embedding(999 * t, self.width))

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """Penultimate activations ``(B, feature_dim)`` (after ReLU): the FID-LeNet feature space."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        emb = self._time_embedding(x, t)
        h = self.blocks[1](self.blocks[0](x, emb), emb)
        h = F.max_pool2d(h, 2)
        h = self.blocks[3](self.blocks[2](h, emb), emb)
        h = F.max_pool2d(h, 2)
        h = F.adaptive_avg_pool2d(h, self.pool_size).flatten(1)
        return F.relu(self.fc(h))

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, t))


def perturb(sde: SDE, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x_t = α(t) x + σ(t) z``, ``z ~ N(0, I)``: a draw from the SDE's perturbation kernel (Song et al. 2021, eq. (29))."""
    alpha, sigma = sde.marginal(t)
    return append_dims(alpha, x.ndim) * x + append_dims(sigma, x.ndim) * randn_like(x, generator)


def train_classifier(
    model: Classifier,
    dataset: torch.utils.data.Dataset,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    sde: SDE | None = None,
    eps: float = SAMPLING_EPS,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[float]:
    """Train with cross-entropy and Adam (cosine learning-rate decay); returns the mean loss per epoch.

    ``dataset`` yields ``(x, y)`` with ``x`` in the model's range. If ``model.time_conditional``, each
    batch is perturbed by ``sde`` at ``t ~ U(eps, 1)`` (``sde`` is then required).
    """
    if model.time_conditional and sde is None:
        raise ValueError("a time-conditional classifier trains on perturbed data: pass sde=")
    if not model.time_conditional and sde is not None:
        raise ValueError("sde= given but the classifier is not time-conditional (Classifier(..., time_conditional=True))")
    if epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    device = torch.device(device)
    model.to(device).train()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) > batch_size, generator=generator)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(loader))
    history = []
    for epoch in range(epochs):
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"classifier epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for batch in bar:
            if len(batch) < 2:
                raise ValueError("the dataset has no labels; a classifier needs (x, y) items")
            x, y = batch[0].to(device), batch[1].to(device)
            t = None
            if model.time_conditional:
                t = eps + (1 - eps) * torch.rand(x.shape[0], generator=generator).to(device)
                x = perturb(sde, x, t, generator=generator)
            loss = F.cross_entropy(model(x, t), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(x)
            count += len(x)
            bar.set_postfix(loss=f"{total / count:.4f}")
        history.append(total / max(count, 1))
    model.eval()
    return history


@torch.no_grad()
def evaluate_classifier(
    model: Classifier, dataset: torch.utils.data.Dataset, *, t: float | None = None, sde: SDE | None = None, batch_size: int = 500, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
) -> float:
    """Accuracy on ``dataset``; for a time-conditional model, on data perturbed by ``sde`` at time ``t``."""
    model.to(device).eval()
    correct = n = 0
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        x, y = batch[0].to(device), batch[1].to(device)
        tt = None
        if t is not None:
            if sde is None:
                raise ValueError("evaluating at a time t needs the sde that perturbs the data")
            tt = torch.full((x.shape[0],), float(t), device=device)
            x = perturb(sde, x, tt, generator=generator)
        correct += (model(x, tt).argmax(1) == y).sum().item()
        n += len(y)
    return correct / max(n, 1)


def save_classifier(path: str | os.PathLike, model: Classifier, **meta: Any) -> None:
    """Save weights, architecture and metadata (dataset, centered, image_size, sde, accuracy, ...)."""
    from .workdir import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"kind": "sde_lab.classifier", "config": model.config(), "state_dict": model.state_dict(), "meta": meta}
    atomic_write(path, lambda f: torch.save(blob, f))


def load_classifier(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """``(model in eval mode, metadata)`` from a file written by :func:`save_classifier`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no classifier at {path}; train one with `sde-lab train-classifier --dataset NAME --out {path}`")
    from .training.checkpoint import check_map_location, describe_load_error

    hint = "train one with `sde-lab train-classifier --dataset NAME` (add --noise-conditional for guidance)"
    check_map_location(map_location)
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(describe_load_error(path, e).replace("checkpoint ", "classifier ", 1).split("; pass")[0] + f"; {hint}") from None
    if not isinstance(blob, dict) or blob.get("kind") != "sde_lab.classifier":
        what = "an sde_lab training checkpoint" if isinstance(blob, dict) and "format" in blob else "not an sde_lab classifier"
        raise ValueError(f"{path} is {what} (a classifier is written by `sde-lab train-classifier`); {hint}")
    try:
        cfg = dict(blob["config"])
        model = Classifier(cfg.pop("in_channels"), cfg.pop("n_classes"), cfg.pop("image_size"), cfg.pop("time_conditional"), **cfg)
        model.load_state_dict(blob["state_dict"])
        meta = dict(blob["meta"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise ValueError(f"classifier {path} is damaged or from another version ({type(e).__name__}: {str(e).splitlines()[0][:160]}); {hint}") from None
    return model.eval(), meta


def default_classifier_path(dataset: str, *, image_size: int | None = None, time_conditional: bool = False, sde_name: str | None = None) -> Path:
    """Where ``sde-lab train-classifier`` writes by default and ``sde-lab eval`` looks for FID-LeNet/IS-LeNet:
    ``$SDE_LAB_CLASSIFIERS`` or ``~/.cache/sde_lab/classifiers``, file ``<dataset>[_<size>][_t_<sde>].pt``."""
    env = os.environ.get("SDE_LAB_CLASSIFIERS")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "sde_lab" / "classifiers"
    name = dataset + (f"_{image_size}" if image_size else "") + (f"_t_{sde_name or 'sde'}" if time_conditional else "")
    return base / f"{name}.pt"
