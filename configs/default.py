"""Shared base for the small (CPU-sized) configs: 2-D targets, sklearn digits, MNIST.

Field names follow score_sde's configs so the same training, sampling and checkpoint code reads both.
The parametrization per SDE follows the paper's models: VE — the network predicts ``σ(t) s`` from the
label ``σ(t)`` (NCSN++); VP / sub-VP — the network predicts the noise from the label ``999 t`` (DDPM++).
"""

import ml_collections

SDE_DEFAULTS = {
    # sde: (prediction, time_label, predictor)
    "ve": ("scaled_score", "sigma", "reverse_diffusion"),
    "vp": ("noise", "999t", "euler_maruyama"),
    "subvp": ("noise", "999t", "euler_maruyama"),
    "cosine": ("noise", "999t", "euler_maruyama"),
    "rectified_flow": ("velocity", "999t", "euler_maruyama"),
    "edm": ("edm", "sigma_tilde", "euler_maruyama"),  # label σ; the networks embed log σ (EDM's c_noise = ¼ log σ)
}
# the families' own objectives (training.weighting; None: score_sde's flags, i.e. sigma^2 weighting)
WEIGHTING = {"rectified_flow": "flow_matching", "edm": "edm"}


def get_default_config(sde: str) -> ml_collections.ConfigDict:
    if sde not in SDE_DEFAULTS:
        raise ValueError(f"unknown sde {sde!r}; valid choices: {', '.join(SDE_DEFAULTS)}")
    prediction, time_label, predictor = SDE_DEFAULTS[sde]
    config = ml_collections.ConfigDict()
    config.seed = 42
    config.device = "auto"  # auto | cpu | cuda

    config.training = training = ml_collections.ConfigDict()
    training.sde = sde
    training.continuous = True
    training.discrete_loss = "ddpm"  # used when continuous=False: smld (ve) | ddpm (vp)
    training.reduce_mean = sde != "ve"
    training.likelihood_weighting = False
    training.importance_sampling = False
    training.eps = 1e-5
    training.batch_size = 128
    training.n_iters = 10_000
    training.snapshot_freq = 2_000
    training.keep_checkpoints = 0  # 0 keeps all
    training.log_freq = 50
    training.sample_freq = 0  # 0: no sample grids during training
    training.n_grid_samples = 64
    training.num_workers = 0
    training.tensorboard = True
    training.bf16 = False  # bf16 autocast of the loss's forward pass (CUDA or CPU)
    training.compile = False  # torch.compile the loss (CUDA, or CPU with a C++ compiler; compiling takes ~40 s)
    training.label_dropout = 0.1  # class-conditional models: P(label -> null label), for classifier-free guidance
    training.weighting = WEIGHTING.get(sde)  # None | sigma2 | likelihood | likelihood_importance | flow_matching | edm | v | min_snr
    training.time_law = "uniform"  # flow_matching: uniform | logit_normal (logit_mean, logit_std)
    training.logit_mean = 0.0
    training.logit_std = 1.0
    training.p_mean = -1.2  # edm: ln sigma ~ N(p_mean, p_std^2)
    training.p_std = 1.2
    training.min_snr_gamma = 5.0

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "heun" if sde == "edm" else "pc"
    sampling.predictor = predictor
    sampling.corrector = "langevin" if sde == "ve" else "none"
    sampling.n_steps_each = 1
    sampling.snr = 0.16
    sampling.num_steps = 18 if sde == "edm" else 500
    sampling.noise_removal = True
    sampling.eps = 1e-3

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "ring"
    data.dim = None
    data.image_size = 0
    data.num_channels = 0
    data.centered = True
    data.random_flip = False

    config.model = model = ml_collections.ConfigDict()
    model.name = "mlp"
    model.prediction = prediction
    model.time_label = time_label
    model.ema_rate = 0.999
    model.ema_warmup = True
    model.num_scales = 1000
    model.num_classes = 0  # > 0: class-conditional network s(x, t, y) (null label = num_classes)
    model.sigma_min = 0.01
    model.sigma_max = 50.0
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.sigma_data = 0.5  # edm preconditioning and weighting
    if sde == "edm":  # EDM's noise range
        model.sigma_min, model.sigma_max = 0.002, 80.0

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "Adam"
    optim.fused = True  # the fused Adam kernel where supported (CPU: PyTorch >= 2.4), else multi-tensor Adam
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.beta2 = 0.999
    optim.eps = 1e-8
    optim.weight_decay = 0.0
    optim.warmup = 5000
    optim.grad_clip = 1.0
    return config


def toy2d(sde: str) -> ml_collections.ConfigDict:
    """A residual MLP on a 2-D target (default: the 8-mode ring); trains in about a minute on a CPU."""
    config = get_default_config(sde)
    config.data.dataset = "ring"
    config.data.dim = 2
    config.training.batch_size = 256
    config.training.n_iters = 8_000
    config.training.snapshot_freq = 2_000
    config.model.update(
        dict(hidden=128, layers=3, embed_dim=64, embedding="fourier" if sde in ("ve", "edm") else "sinusoidal",
             fourier_scale=16.0, log_labels=sde in ("ve", "edm"), sigma_max=80.0 if sde == "edm" else 10.0, ema_rate=0.999,
             linear_skip=True)
    )
    config.optim.lr = 1e-3
    config.optim.warmup = 200
    return config


def digits(sde: str) -> ml_collections.ConfigDict:
    """A residual MLP on sklearn's 8x8 digits (1x8x8 images in [-1, 1])."""
    config = get_default_config(sde)
    config.data.update(dict(dataset="digits", image_size=8, num_channels=1, centered=True))
    config.training.batch_size = 128
    config.training.n_iters = 20_000
    config.training.snapshot_freq = 5_000
    config.model.update(
        dict(hidden=512, layers=4, embed_dim=128, embedding="fourier" if sde in ("ve", "edm") else "sinusoidal",
             fourier_scale=16.0, log_labels=sde in ("ve", "edm"), sigma_max=80.0 if sde == "edm" else 20.0, ema_rate=0.999)
    )
    config.optim.lr = 5e-4
    config.optim.warmup = 500
    return config


def mnist(sde: str) -> ml_collections.ConfigDict:
    """A small DDPM++ / NCSN++ (nf=32, three resolutions 28/14/7) on MNIST in [-1, 1]."""
    config = get_default_config(sde)
    config.data.update(dict(dataset="mnist", image_size=28, num_channels=1, centered=True))
    config.training.batch_size = 64
    config.training.n_iters = 50_000
    config.training.snapshot_freq = 5_000
    config.sampling.num_steps = 1000
    m = config.model
    m.name = "ncsnpp"
    m.update(
        dict(
            sigma_max=80.0 if sde == "edm" else 50.0, ema_rate=0.999, dropout=0.1, nonlinearity="swish", nf=32,
            ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(7,), resamp_with_conv=True,
            conditional=True, fir=sde == "ve", fir_kernel=(1, 3, 3, 1), skip_rescale=True,
            resblock_type="biggan", progressive="none", progressive_input="residual" if sde == "ve" else "none",
            progressive_combine="sum", init_scale=0.0,
            embedding_type="fourier" if sde in ("ve", "edm") else "positional", fourier_scale=16.0,
        )
    )
    config.optim.lr = 2e-4
    config.optim.warmup = 1000
    return config
