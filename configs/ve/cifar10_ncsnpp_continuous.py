"""NCSN++ (cont.) on CIFAR-10 with the VE SDE — Song et al. (2021), Table 3; score_sde
``configs/ve/cifar10_ncsnpp_continuous.py``.

Builds the network of the published checkpoint (62.8M parameters): conditioned on ``σ(t)`` through
Gaussian Fourier features of ``log σ``, FIR resampling, residual input pyramid; the network predicts
``σ(t) s`` (``scale_by_sigma``: ``s = net / σ(t)``, applied by ``ScoreModel``); data in [0, 1] (the network
maps it to [-1, 1] itself).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 42

    config.training = training = ml_collections.ConfigDict()
    training.sde = "ve"
    training.continuous = True
    training.reduce_mean = False
    training.likelihood_weighting = False
    training.eps = 1e-5  # smallest training time
    training.batch_size = 128
    training.n_iters = 1_300_001
    training.snapshot_freq = 50_000
    training.snapshot_freq_for_preemption = 10_000
    training.snapshot_sampling = True
    training.log_freq = 50
    training.eval_freq = 100

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.n_steps_each = 1
    sampling.snr = 0.16
    sampling.num_steps = 1000
    sampling.noise_removal = True
    sampling.probability_flow = False
    sampling.eps = 1e-5

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.batch_size = 1024
    evaluate.num_samples = 50_000
    evaluate.bpd_dataset = "test"

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "cifar10"  # sde_lab.data name
    data.image_size = 32
    data.num_channels = 3
    data.centered = False
    data.random_flip = True
    data.uniform_dequantization = False

    config.model = model = ml_collections.ConfigDict()
    model.name = "ncsnpp"
    model.prediction = "scaled_score"  # s = net / sigma(t)
    model.time_label = "sigma"
    model.scale_by_sigma = True
    model.sigma_min = 0.01
    model.sigma_max = 50.0
    model.num_scales = 1000
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.ema_rate = 0.999
    model.dropout = 0.1
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 4
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = True
    model.fir_kernel = (1, 3, 3, 1)
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "residual"
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.init_scale = 0.0
    model.embedding_type = "fourier"
    model.fourier_scale = 16.0
    model.conv_size = 3

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "Adam"
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.weight_decay = 0.0
    optim.warmup = 5000
    optim.grad_clip = 1.0
    return config
