"""Safetensors out and in: an sde_lab training run's weights and config, read back without pickle.

:func:`export_safetensors` writes ``model.safetensors`` (the EMA weights by default) and ``sde_lab.json``
(the config — path, parametrization, network — with the step, data range and tensor shapes);
:func:`load_exported` rebuilds the model from that config and loads the tensors strictly (a missing,
unexpected or reshaped tensor is refused by name). :func:`load_run_model` is what the command line's
``--ckpt`` goes through: an export folder, or a training checkpoint file / workdir. Builds models from
configs, so this module sits at the edge with :mod:`sde_lab.config`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoints import _list
from .interop import _need
from .config import build_model, config_from_checkpoint, config_from_dict, config_to_dict, load_checkpoint_score
from .model import Model
from .training.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint

__all__ = ["EXPORT_FORMAT", "export_safetensors", "load_exported", "is_export_folder", "load_run_model"]

EXPORT_FORMAT = "sde_lab.export/1"
EXPORT_CONFIG = "sde_lab.json"
EXPORT_WEIGHTS = "model.safetensors"


# --------------------------------------------------------------------------------------------------
def is_export_folder(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / EXPORT_CONFIG).is_file() and (p / EXPORT_WEIGHTS).is_file()


def export_safetensors(ckpt, out, *, ema: bool = True, overwrite: bool = False) -> Path:
    """Write a training run's weights (EMA by default) to ``out/model.safetensors`` and its config to
    ``out/sde_lab.json``; returns ``out``. Loads with :func:`load_exported` (or ``--ckpt out``), no pickle."""
    st = _need("safetensors.torch")
    from .workdir import atomic_write, check_output_dir

    out = check_output_dir(out, flag="--out", outputs=(EXPORT_WEIGHTS, EXPORT_CONFIG), overwrite=overwrite)
    path = resolve_checkpoint(ckpt)
    config = config_from_checkpoint(path)
    model = load_checkpoint_score(path, config, ema=ema)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    step = int(load_checkpoint(path)["step"])
    meta = {"format": EXPORT_FORMAT, "config": config_to_dict(config), "weights": "ema" if ema else "raw", "step": step,
            "source": str(path), "path": repr(model.path), "parametrization": repr(model.parametrization),
            "time_input": repr(model.time_input), "data_range": getattr(model, "data_range", None),
            "tensors": {k: list(v.shape) for k, v in state.items()}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / EXPORT_WEIGHTS, lambda f: f.write(st.save(state, metadata={"format": EXPORT_FORMAT})))
    atomic_write(out / EXPORT_CONFIG, lambda f: f.write(json.dumps(meta, indent=1).encode()))
    return out


def load_exported(folder, *, device="cpu") -> Model:
    """The model of an :func:`export_safetensors` folder, in eval mode: built from ``sde_lab.json``'s config,
    weights from ``model.safetensors`` (no pickle), strictly — every missing, unexpected or reshaped tensor is
    named in the error."""
    st = _need("safetensors.torch")
    folder = Path(folder)
    if not is_export_folder(folder):
        raise CheckpointError(f"{folder} is not an sde_lab export (expected {EXPORT_CONFIG} and {EXPORT_WEIGHTS}; "
                              "write one with `sde-lab export --ckpt RUN --format safetensors --out DIR`)")
    try:
        meta = json.loads((folder / EXPORT_CONFIG).read_text())
    except ValueError as e:
        raise CheckpointError(f"{folder / EXPORT_CONFIG} is not valid JSON ({e})") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{folder / EXPORT_CONFIG} has format {meta.get('format')!r}, expected {EXPORT_FORMAT!r}")
    try:
        state = st.load_file(str(folder / EXPORT_WEIGHTS), device="cpu")
    except Exception as e:
        raise CheckpointError(f"{folder / EXPORT_WEIGHTS} is not a readable safetensors file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160]}); export it again") from None
    model = build_model(config_from_dict(meta["config"]))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = ([f"missing tensors ({len(missing)}): {_list(missing)}"] if missing else []) + \
               ([f"unexpected tensors ({len(unexpected)}): {_list(unexpected)}"] if unexpected else []) + \
               ([f"shape mismatches ({len(wrong)}): {_list(wrong)}"] if wrong else [])
    if problems:
        raise CheckpointError(f"{folder / EXPORT_WEIGHTS} does not match the model of its {EXPORT_CONFIG} — "
                              + "; ".join(problems) + "; the export is damaged or was edited: export it again")
    model.load_state_dict(state, strict=True)
    model.data_range = meta.get("data_range")
    model._sde_lab_config = config_from_dict(meta["config"])
    return model.eval().requires_grad_(False).to(device)




def load_run_model(path, *, map_location="cpu", ema: bool = True):
    """``(model, config)`` of what ``--ckpt`` names: an :func:`export_safetensors` folder (its exported weights),
    or a training checkpoint file / workdir (EMA weights unless ``ema=False``)."""
    if is_export_folder(path):
        model = load_exported(path, device=map_location)
        return model, model._sde_lab_config
    config = config_from_checkpoint(path)
    return load_checkpoint_score(path, config, ema=ema, map_location=map_location), config
