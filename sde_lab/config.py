"""The edge where names become objects: configs → objects, and the :func:`sample` entry point.

:func:`sample` (``sample(model, shape, solver=..., grid=...)`` or the v1 ``sample(sde, score_fn, shape, ...)``)
draws samples: ``solver`` is a :class:`~sde_lab.sampling.Solver` object or a name of
:data:`sde_lab.registry.SOLVERS`; ``grid`` a tensor of times, a name of :data:`sde_lab.registry.GRIDS`, or
``None`` for the solver's default grid built from ``steps``. Every option given for a named solver is
honoured (none is dropped for equalling a default); an option the solver does not take is an error that
names the options it does take. ``condition`` applies guidance (a transform of the model) and at most one
constraint (inpainting, colorization: hooks of the predictor–corrector loop).

Configs → objects: the one builder shared by training, sampling and the published checkpoints.

An ml-collections config (``configs/``, field names as in score_sde) describes a run. This module turns it
into the library's objects — the path (:func:`build_sde`), the network and its parametrization
(:func:`build_model`, with the one set of defaults for the prediction target, time input and discrete
chain), the objective (:func:`build_objective`), the data (:func:`dataset_from_config`), the trainer
(:func:`build_trainer`) — and runs the config's sampler (:func:`sample_from_config`). It also reads config
files (:func:`load_config`), applies ``--set key=value`` overrides (:func:`apply_overrides`) and rebuilds
a model from an sde_lab training checkpoint (:func:`load_checkpoint_score`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from . import losses as L
from .conditional import Constraint, Guidance, constrained_sample
from .model import ScoreModel, as_model
from .noise import as_noise
from .registry import GRIDS, SDES, SOLVERS, lookup, make_solver
from .sampling import Solver, _check_eps, _check_shape, _device, _in_dtype, progress_callback, prior_state
from .sde import SAMPLING_EPS, SDE
from .training import EMA, CheckpointError, Trainer, TrainResult, load_checkpoint, make_optimizer, resolve_device

__all__ = [
    "sample",
    "conditional_sample",
    "split_conditions",
    "load_config",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "data_shape",
    "build_sde",
    "build_network",
    "model_conventions",
    "build_model",
    "build_score_model",
    "build_objective",
    "dataset_from_config",
    "build_trainer",
    "train",
    "sample_from_config",
    "sampling_options",
    "load_checkpoint_score",
    "config_from_checkpoint",
]


# --------------------------------------------------------------------------------------------------
# the sampling entry point
# --------------------------------------------------------------------------------------------------
def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return steps


def split_conditions(condition) -> tuple[list[Guidance], Constraint | None]:
    """The guidances (applied in order) and the single constraint of ``condition`` (an object or a sequence)."""
    conditions = list(condition) if isinstance(condition, (list, tuple)) else [condition]
    if not conditions:
        raise ValueError("condition must be a condition object or a non-empty sequence of them")
    for c in conditions:
        if not isinstance(c, (Guidance, Constraint)):
            raise ValueError(
                f"unknown condition {c!r}; valid conditions: Inpainting, Colorization, ClassifierGuidance, "
                "ClassifierFreeGuidance (sde_lab.conditional)"
            )
    constraints = [c for c in conditions if isinstance(c, Constraint)]
    if len(constraints) > 1:
        raise ValueError(f"at most one constraint (Inpainting / Colorization) can be applied, got {len(constraints)}")
    return [c for c in conditions if isinstance(c, Guidance)], (constraints[0] if constraints else None)


def sample(
    model,
    shape_or_score=None,
    shape=None,
    *,
    solver: str | Solver = "pc",
    steps: int | None = None,
    grid=None,
    eps: float = SAMPLING_EPS,
    t_max: float | None = None,
    generator: torch.Generator | None = None,
    noise=None,
    device=None,
    dtype: torch.dtype | None = None,
    x_init: torch.Tensor | None = None,
    condition=None,
    callback=None,
    progress: bool = False,
    score_dtype: torch.dtype | None = None,
    **options,
) -> SampleResult:
    """Draw ``shape[0]`` samples of shape ``shape[1:]``.

    Args:
        model: a :class:`~sde_lab.model.DiffusionModel` (then ``sample(model, shape, ...)``), or an SDE followed
            by a score function or model (``sample(sde, score_fn, shape, ...)``, the v1 form).
        solver: a solver object, or a name of ``sde_lab.registry.SOLVERS`` (``pc``, ``ode``, ``sdeint``, ``ald``,
            ``heun``, ``dpm_solver``, ``dpm_solver_pp``, ``dpm_solver_pp_sde``, ``euler_ancestral``, ``unipc``, ``deis``,
            ``adaptive``, ``dpm_adaptive``) configured by ``**options``.
        steps: the default grid's size (default 1000): intervals for objects; for names the v1 meaning per
            solver (see ``sde_lab.registry``). Not together with an explicit ``grid`` tensor.
        grid: a 1-D tensor of decreasing times, or a grid name (``uniform``, ``karras``, ``logsnr``, ``geometric``,
            ``quadratic``, ``endpoints``; ``rho`` for ``karras``), or ``None`` for the solver's default.
        eps, t_max: the last and first time of a built grid (default ``t_max = T``); ``rho=`` sets the
            karras grid's ρ (as an option of ``heun``, or with ``grid="karras"``).
        generator / noise: the randomness (a ``torch.Generator`` or a :class:`~sde_lab.noise.Noise`); the prior
            draw uses ``generator``, or, without one, a noise object's ``prior`` — with
            :class:`~sde_lab.noise.PerSampleNoise` sample ``i`` then depends on ``(seed, i)`` alone.
        dtype: the state's dtype (default: the solver's — float64 for the ODE solvers — else float32).
        x_init: the initial state instead of a prior draw.
        condition: guidance / constraint objects from :mod:`sde_lab.conditional`.
        callback: ``callback(i, t, x, x0_hat)`` after every step; ``progress`` shows a tqdm bar.
        score_dtype: evaluate the model in this dtype (e.g. float32 for a float64 ODE state).

    ``.info["wall_time"]`` is the solver's wall time in seconds. Runs under ``torch.no_grad()``.
    """
    if isinstance(model, SDE):
        path = model
        if shape_or_score is None:
            raise ValueError("sample(sde, score_fn, shape): give the score function (or model) after the SDE")
        model = as_model(path, shape_or_score)
    else:
        if shape is not None:
            raise ValueError("sample(model, shape, ...) takes a model and a shape; the v1 form is sample(sde, score_fn, shape)")
        shape = shape_or_score
        model = as_model(None, model)
        path = model.path
    if shape is None:
        raise ValueError("give the sample shape, e.g. (1000, 2) or (16, 3, 32, 32)")
    shape = _check_shape(shape)
    _check_eps(path, eps)
    if isinstance(grid, torch.Tensor) and steps is not None:
        raise ValueError("give either steps (a grid is built) or an explicit grid tensor, not both")
    steps = 1000 if steps is None else _check_steps(steps)

    guidances, constraint = split_conditions(condition) if condition is not None else ([], None)
    for g in guidances:
        model = g.apply(model)
    if score_dtype is not None:
        model = _in_dtype(model, score_dtype)

    builds_karras = grid == "karras" or (grid is None and isinstance(solver, Solver) and solver.default_grid == "karras")
    rho = options.pop("rho", None) if builds_karras else None
    if isinstance(solver, Solver):
        if options:
            raise ValueError(
                f"options {', '.join(sorted(options))} configure a solver given by name; set them on the solver "
                f"object {solver!r} instead"
            )
        obj, default = solver, None
    elif isinstance(solver, str):
        obj, default = make_solver(solver, path, steps, eps, t_max, **options)
    else:
        raise ValueError(f"solver must be a Solver object or one of {', '.join(sorted(SOLVERS))}, got {solver!r}")
    if isinstance(grid, torch.Tensor):
        times = grid
    elif grid is None and default is not None:
        times = default()
    else:
        kind = grid if grid is not None else obj.default_grid
        times = lookup(GRIDS, kind, "grid")(path, steps, eps, t_max, rho)

    device = _device(device, generator)
    state_dtype = dtype or obj.state_dtype or (constraint.dtype if constraint is not None else torch.float32)
    total = None if obj.default_grid == "endpoints" else len(times) - 1  # adaptive solvers: the steps are not known
    cb = progress_callback(total, f"{solver if isinstance(solver, str) else type(obj).__name__}", callback) \
        if progress else callback
    start = time.perf_counter()
    try:
        if constraint is not None:
            if x_init is not None:
                raise ValueError("x_init is not supported with an inpainting / colorization constraint")
            result = constrained_sample(model, constraint, shape, obj, times, noise=noise, generator=generator,
                                        device=device, dtype=state_dtype, callback=cb)
        else:
            if x_init is None and generator is None and hasattr(noise, "prior"):  # e.g. PerSampleNoise: x_T from (seed, i) too
                x_init = path.prior_std * noise.prior(shape, device=device, dtype=state_dtype)
            x = prior_state(path, shape, generator, device=device, dtype=state_dtype, x_init=x_init)
            result = obj(model, x, times, noise=as_noise(noise if noise is not None else generator), callback=cb)
    finally:
        if progress:
            cb.close()
    result.info["wall_time"] = time.perf_counter() - start
    return result


def conditional_sample(sde: SDE, score_fn, shape: Sequence[int], condition, **sample_kwargs) -> SampleResult:
    """:func:`sample` under ``condition`` (one condition or a list: guidances applied in order, at most one
    constraint): ``sample(sde, score_fn, shape, condition=condition, **sample_kwargs)``."""
    return sample(sde, score_fn, tuple(shape), condition=condition, **sample_kwargs)


# --------------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------------
def _get(section, key: str, default=None):
    return section.get(key, default) if hasattr(section, "get") else getattr(section, key, default)


# --------------------------------------------------------------------------------------------------
# config files and overrides
# --------------------------------------------------------------------------------------------------
class ConfigFileError(ValueError):
    """A config file that does not exist, fails to import, or defines no ``get_config()``."""


def load_config(path):
    """Import an ml-collections config file by path and return its ``get_config()``.

    Config files share base configs with ``from configs.default import ...``. Inside a ``configs/`` folder,
    the directory above it is put on ``sys.path`` while importing; a file anywhere else sees a ``configs``
    package made of its own folder first and then the project's ``configs/`` (so a copied config next to a
    copied ``default.py`` uses that copy, and one on its own uses the project's). Errors in the file are
    reported with its name, the line and the error (:class:`ConfigFileError`).
    """
    import importlib.util
    import traceback
    import types

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigFileError(f"config file {p} does not exist; configs live in configs/<sde>/<name>.py")
    root = next((a.parent for a in p.resolve().parents if a.name == "configs"), None)
    saved = {k: v for k, v in sys.modules.items() if k == "configs" or k.startswith("configs.")}
    added = None
    if root is not None:
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
            added = str(root)
    else:  # a ``configs`` package: the file's own folder, then the project's configs/
        for k in saved:
            sys.modules.pop(k, None)
        pkg = types.ModuleType("configs")
        project = Path(__file__).resolve().parents[1] / "configs"
        try:
            has_project = project.is_dir()
        except OSError:  # an install this user cannot read: the file's own folder only
            has_project = False
        pkg.__path__ = [str(p.resolve().parent)] + ([str(project)] if has_project else [])
        sys.modules["configs"] = pkg
    try:
        spec = importlib.util.spec_from_file_location(f"_sde_lab_config_{abs(hash(str(p.resolve())))}", p)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "get_config", None)):
            raise ConfigFileError(f"config file {p} defines no get_config() function")
        return module.get_config()
    except ConfigFileError:
        raise
    except SyntaxError as e:
        raise ConfigFileError(f"config file {e.filename or p}, line {e.lineno}: {e.msg}: {(e.text or '').strip()!r}") from None
    except Exception as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith(str(Path(__file__).parent))
                  and "importlib" not in f.filename]
        where = f"{frames[-1].filename}, line {frames[-1].lineno}" if frames else str(p)
        hint = ""
        if isinstance(e, ModuleNotFoundError) and (e.name or "").startswith("configs"):
            hint = (f"; the base config {e.name!r} was looked for next to {p.name} and in the project's configs/ folder: "
                    "copy it beside the file or import it by its own name")
        raise ConfigFileError(f"config file {p} failed to load at {where}: {type(e).__name__}: {e}{hint}") from None
    finally:
        if added is not None and added in sys.path:
            sys.path.remove(added)
        if root is None:
            for k in [k for k in sys.modules if k == "configs" or k.startswith("configs.")]:
                sys.modules.pop(k, None)
            sys.modules.update(saved)


def _parse_value(text: str):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.lower()
        return {"true": True, "false": False, "none": None}.get(low, text)


def apply_overrides(config, assignments) -> Any:
    """Apply ``key.sub=value`` strings (values parsed as Python literals) to ``config`` in place.

    Unknown keys and values of the wrong type raise ``ValueError`` naming the key and the valid choices.
    """
    for item in assignments or ():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value (e.g. training.n_iters=2000), got {item!r}")
        *parents, leaf = key.strip().split(".")
        node, path = config, []
        for part in parents:
            if part not in node or not hasattr(node[part], "keys"):
                raise ValueError(f"unknown config section {'.'.join(path + [part])!r}; valid: {', '.join(sorted(node.keys()))}")
            node, path = node[part], path + [part]
        if leaf not in node:
            where = ".".join(path) or "the top level"
            raise ValueError(f"unknown config key {key!r}; valid keys in {where}: {', '.join(sorted(node.keys()))}")
        value, old = _parse_value(raw.strip()), node[leaf]
        if isinstance(old, bool) and not isinstance(value, bool):
            raise ValueError(f"config key {key!r} expects a bool (true/false), got {raw!r}")
        if isinstance(old, (int, float)) and not isinstance(old, bool) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"config key {key!r} expects a number, got {raw!r}")
        if isinstance(old, int) and not isinstance(old, bool) and isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"config key {key!r} expects an integer, got {raw!r}")
            value = int(value)
        if isinstance(old, str) and not isinstance(value, str):
            value = raw.strip()
        if isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
            value = type(old)(value)
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise ValueError(f"cannot set {key!r} to {raw!r}: {e}") from None
    return config


def config_from_dict(d: dict[str, Any]):
    """An ml-collections ``ConfigDict`` from a plain (JSON) dict."""
    import ml_collections

    return ml_collections.ConfigDict(d)


def config_to_dict(config) -> dict[str, Any]:
    """A plain dict of ``config`` (JSON-serialisable: tuples become lists)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o)))


# --------------------------------------------------------------------------------------------------
# objects from a config
# --------------------------------------------------------------------------------------------------
def build_sde(config) -> SDE:
    """The path named ``config.training.sde`` (``ve``/``vp``/``subvp``) with the hyperparameters in ``config.model``."""
    import dataclasses

    cls = lookup(SDES, config.training.sde, "SDE")
    names = {f.name for f in dataclasses.fields(cls)}
    keys = ("sigma_min", "sigma_max", "beta_min", "beta_max", "cosine_s", "t_max")
    kwargs = {("s" if k == "cosine_s" else k): config.model[k] for k in keys
              if (("s" if k == "cosine_s" else k) in names) and k in config.model and config.model[k] is not None}
    return cls(**kwargs)


def data_shape(config) -> tuple[int, ...]:
    """Shape of one sample: ``(data.dim,)`` for vectors, else ``(num_channels, image_size, image_size)``."""
    d = config.data
    if _get(d, "dim") is not None:
        return (int(d.dim),)
    return (int(d.num_channels), int(d.image_size), int(d.image_size))


def build_network(config) -> nn.Module:
    """The network named by ``config.model.name`` (:data:`sde_lab.nets.NETWORKS`)."""
    from .nets import build_network as _build

    return _build(config)


def model_conventions(config, sde: SDE | None = None) -> dict[str, Any]:
    """The parametrization of the config's model: ``target``, ``time_input`` and the discrete chain.

    Explicit ``config.model.prediction`` / ``config.model.time_label`` win; otherwise score_sde's conventions
    (``models/utils.py::get_score_fn``): VP / sub-VP networks predict the noise from ``999 t``; VE networks get
    ``σ(t)`` and output the score (divided by σ when ``scale_by_sigma``: ``scaled_score``). Discrete-time
    models (``training.continuous = False``) use the chain's own coefficients at the level of ``t``: VP
    (``discrete_loss = "ddpm"``) the label ``t (N − 1)`` and ``σ_i = √(1 − ᾱ_i)`` at index ``⌊t (N − 1)⌋``;
    VE (``"smld"``) the label ``round((T − t)(N − 1))`` and the SMLD level ``σ_i``. score_sde's sub-VP models
    always use continuous labels.
    """
    m, tr = config.model, config.training
    sde = sde if sde is not None else build_sde(config)
    name = tr.sde
    continuous = bool(_get(tr, "continuous", True)) or name not in ("ve", "vp")
    scale_by_sigma = bool(_get(m, "scale_by_sigma", False))
    if name == "ve":
        prediction = "scaled_score" if scale_by_sigma else "score"
        time_label = "sigma" if continuous else "reversed_index"
        kind = "smld"
    elif name == "rectified_flow":
        prediction, time_label, kind = "velocity", "t", None
    elif name == "edm":
        prediction, time_label, kind = "edm", "quarter_log_sigma", None
    else:
        prediction, time_label, kind = "noise", ("999t" if continuous else "index"), "ddpm"
    prediction = _get(m, "prediction", prediction)
    time_label = _get(m, "time_label", time_label)
    if prediction == "edm":
        from .model import EDMPreconditioning

        prediction = EDMPreconditioning(float(_get(m, "sigma_data", 0.5)))
    if scale_by_sigma and prediction != "scaled_score":
        raise ValueError(
            f"config.model.scale_by_sigma=True means the network predicts sigma(t) * score, i.e. "
            f"prediction='scaled_score', but config.model.prediction={prediction!r}"
        )
    out: dict[str, Any] = {"prediction": prediction, "time_label": time_label, "n_discrete": None, "sigmas": None,
                           "alphas": None}
    N = int(_get(m, "num_scales", 1000))
    if time_label in ("index", "reversed_index"):
        out["n_discrete"] = N
    if not continuous:
        kind = _get(tr, "discrete_loss", kind)
        out["n_discrete"] = N
        if kind == "smld":
            L._check_chain(sde, N, "smld")
            out["sigmas"] = sde.smld_sigmas(N)
            out["alphas"] = torch.ones(N, dtype=torch.float64)
        elif kind == "ddpm":
            L._check_chain(sde, N, "ddpm")
            abar = sde.ddpm_schedule(N).alphas_cumprod
            out["sigmas"], out["alphas"] = (1.0 - abar).sqrt(), abar.sqrt()
        else:
            raise ValueError(f"unknown training.discrete_loss {kind!r}; valid choices: ddpm, smld")
        out["discrete_loss"] = kind
    return out


def build_model(config, sde: SDE | None = None, net: nn.Module | None = None) -> ScoreModel:
    """Network (built under the config's seed, the caller's RNG state untouched) + parametrization on the path."""
    sde = sde if sde is not None else build_sde(config)
    conv = model_conventions(config, sde)
    if net is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(_get(config, "seed", 0)))
            net = build_network(config)
    return ScoreModel(net, sde, prediction=conv["prediction"], time_label=conv["time_label"],
                      n_discrete=conv["n_discrete"], sigmas=conv["sigmas"], alphas=conv["alphas"])


build_score_model = build_model


def build_objective(config, sde: SDE | None = None):
    """The loss of ``config.training``: ``weighting`` (a name of :data:`sde_lab.registry.WEIGHTINGS`: ``sigma2``,
    ``likelihood``, ``likelihood_importance``, ``flow_matching`` with ``time_law``/``logit_mean``/``logit_std``,
    ``edm`` with ``p_mean``/``p_std`` and ``model.sigma_data``, ``v``, ``min_snr`` with ``min_snr_gamma``), or
    score_sde's flags ``continuous`` / ``likelihood_weighting`` / ``importance_sampling``; ``reduce_mean``."""
    tr = config.training
    sde = sde if sde is not None else build_sde(config)
    reduce = "mean" if _get(tr, "reduce_mean", False) else "sum"
    eps = float(_get(tr, "eps", L.TRAIN_EPS))
    name = _get(tr, "weighting", None)
    if name is not None:  # a named weighting (registry.WEIGHTINGS) with its time-law options
        from .registry import WEIGHTINGS

        ctor = lookup(WEIGHTINGS, name, "training.weighting")
        kwargs = {"eps": eps}
        if name == "flow_matching":
            kwargs.update(time_law=str(_get(tr, "time_law", "uniform")), mean=float(_get(tr, "logit_mean", 0.0)),
                          std=float(_get(tr, "logit_std", 1.0)))
        elif name == "edm":
            kwargs.update(p_mean=float(_get(tr, "p_mean", -1.2)), p_std=float(_get(tr, "p_std", 1.2)),
                          sigma_data=float(_get(config.model, "sigma_data", 0.5)))
        elif name == "min_snr":
            kwargs.update(gamma=float(_get(tr, "min_snr_gamma", 5.0)))
        return L.DSMObjective(ctor(**kwargs), reduce)
    if _get(tr, "continuous", True):
        if _get(tr, "likelihood_weighting", False):
            w = L.ImportanceLikelihoodWeighting(eps) if _get(tr, "importance_sampling", False) else L.LikelihoodWeighting(eps)
        elif _get(tr, "importance_sampling", False):
            raise ValueError("training.importance_sampling=True needs training.likelihood_weighting=True")
        else:
            w = L.SigmaSquaredWeighting(eps)
        return L.DSMObjective(w, reduce)
    conv = model_conventions(config, sde)
    N = int(config.model.num_scales)
    if conv.get("discrete_loss") is None:  # sub-VP: score_sde has no discrete chain for it
        raise ValueError(f"training.continuous=False has no discrete chain for training.sde={config.training.sde!r}; "
                         "use continuous training")
    return L.SMLDObjective(N, reduce) if conv["discrete_loss"] == "smld" else L.DDPMObjective(N, reduce)


def dataset_from_config(config, *, split: str = "train"):
    """Training data named by ``config.data.dataset``.

    An analytic target (``ring``, ``aniso``, …) is an infinite sampler: fresh exact samples every step. Any
    other name goes to :func:`sde_lab.data.get_dataset` (scaled per ``data.centered``); in-memory sets are
    returned as one tensor, which the loop indexes directly — or as ``(x, y)`` tensors for a
    class-conditional model (``model.num_classes > 0``). Random flips are applied by the trainer's data stream.
    """
    from .analytic import TARGETS, make_target
    from .data import get_dataset

    d = config.data
    name = d.dataset
    conditional = int(_get(config.model, "num_classes", 0)) > 0
    if name in TARGETS:
        return make_target(name)  # labels: the mixture component (sample_with_labels)
    shape = data_shape(config)
    ds = get_dataset(
        name,
        split=split,
        centered=bool(_get(d, "centered", False)),
        image_size=shape[-1] if len(shape) == 3 else None,
        seed=int(_get(config, "seed", 0)),
        labels=conditional,
    )
    in_memory = torch.is_tensor(getattr(ds, "x", None)) and getattr(ds, "transform", None) is None
    if conditional:
        if in_memory and getattr(ds, "y", None) is None:
            raise ValueError(f"data set {name!r} has no class labels; a class-conditional model (model.num_classes > 0) needs them")
        n_classes = int(config.model.num_classes)
        if in_memory and int(ds.y.max()) >= n_classes:
            raise ValueError(f"data set {name!r} has labels up to {int(ds.y.max())} but model.num_classes={n_classes}")
        return (ds.x, ds.y.long()) if in_memory else ds
    return ds.x if in_memory else ds


def build_trainer(config, workdir, *, dataset=None, resume: bool | str = False, progress: bool = True,
                  overwrite: bool = False) -> Trainer:
    """A :class:`~sde_lab.training.Trainer` for ``config``: model, objective, data, Adam, EMA and all options.

    ``resume`` / ``overwrite`` as for the Trainer: a fresh run into a workdir holding checkpoints is refused
    unless ``overwrite``; ``resume=True`` is refused when the config differs outside the schedule keys.
    """
    tr, opt = config.training, config.optim
    for key in ("n_iters", "batch_size"):
        v = _get(tr, key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"training.{key} must be a positive integer, got {v!r} (--set training.{key}=...)")
    for key in ("snapshot_freq", "log_freq", "sample_freq", "keep_checkpoints"):
        v = _get(tr, key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "log_freq" else 0):
            raise ValueError(f"training.{key} must be a {'positive' if key == 'log_freq' else 'non-negative'} integer, "
                             f"got {v!r} (--set training.{key}=...)")
    device = resolve_device(_get(config, "device", "auto"), int(os.environ.get("LOCAL_RANK", "0")))
    sde = build_sde(config)
    model = build_model(config, sde).to(device)
    objective = build_objective(config, sde)
    ema = EMA(model, float(_get(config.model, "ema_rate", 0.9999)), warmup=bool(_get(config.model, "ema_warmup", True)))
    optimizer = make_optimizer(model.parameters(), opt)
    shape = data_shape(config)
    data = dataset if dataset is not None else dataset_from_config(config)

    def sample_fn(m, n, generator):
        return sample_from_config(config, sde, m, (n, *shape), generator=generator, device=device).samples

    trainer = Trainer(
        model, objective, data, optimizer=optimizer, ema=ema, workdir=workdir, batch_size=int(tr.batch_size),
        seed=int(_get(config, "seed", 0)), warmup=int(_get(opt, "warmup", 5000)), grad_clip=float(_get(opt, "grad_clip", 1.0)),
        label_dropout=float(_get(tr, "label_dropout", 0.1)), num_workers=int(_get(tr, "num_workers", 0)),
        random_flip=bool(_get(config.data, "random_flip", False)), bf16=bool(_get(tr, "bf16", False)),
        compile=bool(_get(tr, "compile", False)), snapshot_freq=int(_get(tr, "snapshot_freq", 10000)),
        keep_checkpoints=int(_get(tr, "keep_checkpoints", 0)), log_freq=int(_get(tr, "log_freq", 50)),
        tensorboard=bool(_get(tr, "tensorboard", True)), sample_fn=sample_fn, sample_freq=int(_get(tr, "sample_freq", 0)),
        n_grid_samples=int(_get(tr, "n_grid_samples", 64)), config=config_to_dict(config), resume=resume, device=device,
        progress=progress, shape=shape, n_iters=int(tr.n_iters), overwrite=overwrite,
    )
    return trainer


def train(config, workdir, *, dataset=None, resume: bool | str = False, progress: bool = True, n_iters: int | None = None,
          overwrite: bool = False) -> TrainResult:
    """Train as configured (:func:`build_trainer`, then ``fit``). Returns the EMA model and the loss log."""
    return build_trainer(config, workdir, dataset=dataset, resume=resume, progress=progress, overwrite=overwrite).fit(n_iters)


# --------------------------------------------------------------------------------------------------
# sampling as configured
# --------------------------------------------------------------------------------------------------
def sampling_options(config, solver: str | None = None) -> dict[str, Any]:
    """The :func:`sde_lab.sample` options of ``config.sampling`` for ``solver`` (default ``sampling.method``).

    Every field the solver takes is passed on: ``predictor`` / ``corrector`` for ``pc``, ``snr`` and
    ``n_steps_each`` for ``pc`` and ``ald``, ``noise_removal`` as ``denoise`` for all.
    """
    from .registry import solver_options

    sc = _get(config, "sampling", {}) or {}
    solver = solver or _get(sc, "method", "pc")
    takes = set(solver_options(solver))
    opts: dict[str, Any] = {"solver": solver, "steps": int(_get(sc, "num_steps", 1000)), "eps": float(_get(sc, "eps", 1e-3))}
    fields = {"predictor": "predictor", "corrector": "corrector", "snr": "snr", "n_steps_each": "n_corrector_steps",
              "noise_removal": "denoise"}
    for field_name, option in fields.items():
        if option in takes and field_name in sc:
            value = sc[field_name]
            if option == "snr":
                value = float(value)
            elif option == "n_corrector_steps":
                value = int(value)
            elif option == "denoise":
                value = bool(value)
            opts[option] = value
    if solver == "pc" and opts.get("corrector") == "none":
        opts.pop("snr", None)
        opts.pop("n_corrector_steps", None)
    return opts


def sample_from_config(config, sde: SDE, score_fn, shape, *, generator=None, device=None, **overrides):
    """:func:`sde_lab.sample` with the options of ``config.sampling`` (keyword ``overrides`` win)."""
    opts = sampling_options(config, overrides.get("solver"))
    if "solver" in overrides and overrides["solver"] != opts["solver"]:
        opts = sampling_options(config, overrides["solver"])
    opts.update(overrides)
    return sample(sde, score_fn, tuple(shape), generator=generator, device=device, **opts)


# --------------------------------------------------------------------------------------------------
# models from sde_lab training checkpoints
# --------------------------------------------------------------------------------------------------
def config_from_checkpoint(path_or_workdir, map_location="cpu"):
    """The config stored in a training checkpoint."""
    state = load_checkpoint(path_or_workdir, map_location)
    d = json.loads(state["config"])
    if not d:
        raise CheckpointError(f"{path_or_workdir} was trained from objects and stores no config; rebuild the model and "
                              "load ckpt['model'] / ckpt['ema'] into it")
    return config_from_dict(d)


def load_checkpoint_score(path_or_workdir, config=None, *, ema: bool = True, map_location="cpu") -> ScoreModel:
    """A model with the checkpoint's EMA weights (``ema=False``: raw weights), in eval mode.

    The config stored in the checkpoint is used unless ``config`` is given (an ``sde-lab export`` folder
    loads with :func:`sde_lab.export.load_exported`).
    """
    state = load_checkpoint(path_or_workdir, map_location)
    if config is None:
        d = json.loads(state["config"])
        if not d:
            raise CheckpointError(f"{path_or_workdir} was trained from objects and stores no config; pass config=... or "
                                  "rebuild the model and load ckpt['model'] / ckpt['ema'] into it")
        config = config_from_dict(d)
    model = build_model(config)
    try:
        model.load_state_dict(state["model"])
        if ema:
            e = EMA(model, float(state["ema"]["decay"]))
            e.load_state_dict(state["ema"])
            e.copy_to(model)
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint does not match the model built from its config: {err}") from None
    model.data_range = state.get("data_range")  # [min, max] of the training data (log_likelihood warns outside it)
    return model.eval().requires_grad_(False).to(map_location)
