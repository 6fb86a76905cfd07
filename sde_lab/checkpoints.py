r"""Loading the published score_sde_pytorch checkpoints (Song et al. 2021) as a score model.

A published file (``checkpoint_<n>.pth`` in e.g. ``vp/cifar10_ddpmpp_continuous``) is a ``torch.save``\d
dict::

    {'model': state_dict,                       # every key prefixed 'module.' (DataParallel)
     'ema': {'decay', 'num_updates', 'shadow_params'},
     'optimizer': ..., 'step': int}

``ema['shadow_params']`` is a positional list over the parameters with ``requires_grad=True`` in
registration order (so the fixed Fourier-feature ``W`` is not in it); those EMA weights are the ones
the paper samples with. :func:`load_official_checkpoint` rebuilds the network from the config, loads the
weights strictly and wraps the network in a :class:`~sde_lab.score.ScoreModel` with the conventions of
the published models (:func:`score_model_from_config`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .config import build_model, build_network, build_sde
from .model import ScoreModel
from .training import CheckpointError

__all__ = [
    "CheckpointError",
    "load_official_checkpoint",
    "load_network_weights",
    "score_model_from_config",
    "sde_from_config",
]

_DOWNLOAD_HINT = (
    "the published score_sde_pytorch checkpoints (folders vp/cifar10_ddpmpp_continuous, "
    "subvp/cifar10_ddpmpp_continuous, ve/cifar10_ncsnpp_continuous, files checkpoint_<n>.pth) are linked from "
    "the README of https://github.com/yang-song/score_sde_pytorch; download the .pth file and pass its path "
    "together with the matching config from configs/"
)


def sde_from_config(config) -> Any:
    """The forward SDE named ``config.training.sde`` (``ve``, ``vp``, ``subvp``) with the model's σ/β range."""
    return build_sde(config)


def score_model_from_config(net: nn.Module, config) -> ScoreModel:
    """Wrap ``net`` with the path and conventions the config describes (:func:`sde_lab.config.model_conventions`).

    VP/sub-VP DDPM++ (cont.): ``prediction="noise"`` (``s = -net/σ(t)``), ``time_label="999t"``.
    VE NCSN++ (cont.): ``prediction="scaled_score"`` (``s = net/σ(t)``), ``time_label="sigma"``.
    Discrete-time VP (``vp/cifar10_ddpmpp``): label ``t (N − 1)``, ``σ_i = √(1 − ᾱ_i)`` at ``⌊t (N − 1)⌋``;
    discrete-time VE (``ve/cifar10_ncsnpp``): label ``round((T − t)(N − 1))``, the SMLD level ``σ_i``.
    ``config.model.prediction`` / ``config.model.time_label`` override the defaults.
    """
    return build_model(config, net=net)


def _read(path: str | os.PathLike, trusted: bool = False) -> Mapping[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} not found; {_DOWNLOAD_HINT}")
    try:
        # weights_only: tensors and plain containers only, no arbitrary code from the pickle.
        ckpt = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as err:  # torch raises several types for truncated / non-torch files
        import zipfile

        if ("weights only" in str(err).lower() or "weights_only" in str(err)) and zipfile.is_zipfile(path):
            raise CheckpointError(
                f"checkpoint {str(path)!r} contains Python objects other than tensors and plain containers, "
                "which are not unpickled by default (they could run code); if you trust the file, load it in "
                "Python with load_official_checkpoint(..., trusted=True)"
            ) from None
        if "CUDA" in str(err) and "deserialize" in str(err):
            raise CheckpointError(f"checkpoint {str(path)!r} holds CUDA tensors and CUDA is not available here") from None
        first = "not a PyTorch file" if "weights_only" in str(err) else f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
        raise CheckpointError(
            f"could not read checkpoint {str(path)!r} ({first}); "
            f"the file is corrupt, truncated or not a PyTorch checkpoint — download it again. {_DOWNLOAD_HINT}"
        ) from None
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(ckpt).__name__}, expected a dict with 'model' and 'ema'")
    return ckpt


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _list(keys, limit: int = 10) -> str:
    keys = list(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_network_weights(net: nn.Module, state: Mapping[str, torch.Tensor], ema_params=None, *,
                         source: str = "checkpoint") -> nn.Module:
    """Load ``state`` into ``net`` strictly, then (if given) the positional EMA list onto its trainable params.

    Raises :class:`CheckpointError` naming every missing or unexpected key, every shape mismatch, and a
    wrong EMA list length or shape.
    """
    state = _strip_prefix(state)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_list(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches ({len(wrong)}): {_list(wrong)}")
    if problems:
        raise CheckpointError(f"{source} does not match the network built from the config — " + "; ".join(problems)
                              + ". Check that the config matches the checkpoint (model name, nf, ch_mult, "
                              "num_res_blocks, embedding_type, fir, progressive*, ...).")
    net.load_state_dict(state, strict=True)

    if ema_params is not None:
        trainable = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
        ema_params = list(ema_params)
        if len(ema_params) != len(trainable):
            raise CheckpointError(
                f"{source}: the EMA list has {len(ema_params)} tensors but the network has {len(trainable)} "
                "trainable parameters; the checkpoint was saved from a different architecture"
            )
        bad = [f"{name}: EMA {tuple(e.shape)} vs network {tuple(p.shape)}"
               for (name, p), e in zip(trainable, ema_params) if tuple(e.shape) != tuple(p.shape)]
        if bad:
            raise CheckpointError(f"{source}: EMA shape mismatches ({len(bad)}): {_list(bad)}")
        with torch.no_grad():
            for (_, p), e in zip(trainable, ema_params):
                p.copy_(e)
    return net


def load_official_checkpoint(path: str | os.PathLike, config, *, use_ema: bool = True,
                             device: str | torch.device = "cpu", trusted: bool = False) -> ScoreModel:
    """A score model ``(x, t) -> s(x, t)`` from a published score_sde_pytorch checkpoint and its config.

    Builds the network from ``config`` (:func:`sde_lab.nets.build_network`), loads ``ckpt['model']``
    (``module.`` prefix stripped) strictly, then the EMA weights ``ckpt['ema']['shadow_params']`` onto the
    trainable parameters in registration order (``use_ema=False`` keeps the raw training weights), and
    wraps it with :func:`score_model_from_config`. Returned in eval mode (dropout off) on ``device``.
    The file is read with ``torch.load(weights_only=True)`` unless ``trusted=True``.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` (a ``ValueError``) for an
    unreadable file or any key / shape mismatch, with a message saying what to do.
    """
    ckpt = _read(path, trusted)
    source = f"checkpoint {str(path)!r}"
    if "model" not in ckpt:
        raise CheckpointError(f"{source} has no 'model' entry (keys: {_list(map(str, ckpt))}); expected the "
                              "score_sde layout {'model', 'ema', 'optimizer', 'step'}")
    ema_params = None
    if use_ema:
        ema = ckpt.get("ema")
        if not isinstance(ema, Mapping) or "shadow_params" not in ema:
            raise CheckpointError(f"{source} has no EMA weights (ckpt['ema']['shadow_params']); "
                                  "load the raw training weights with --no-ema (Python: use_ema=False)")
        ema_params = ema["shadow_params"]
    net = build_network(config)
    load_network_weights(net, ckpt["model"], ema_params, source=source)
    return score_model_from_config(net, config).to(device).eval()

