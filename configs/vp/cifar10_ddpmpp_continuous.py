"""DDPM++ (cont.) on CIFAR-10 with the VP SDE — Song et al. (2021), Table 3; score_sde
``configs/vp/cifar10_ddpmpp_continuous.py``.

Builds the network of the published checkpoint (61.8M parameters): the network predicts the noise
(``s = -net / σ(t)``) from the time label ``999 t``; data centred to [-1, 1].
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 42

    config.training = training = ml_collections.ConfigDict()
    training.sde = "vp"
    training.continuous = True
    training.reduce_mean = True
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
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"
    sampling.n_steps_each = 1
    sampling.snr = 0.16
    sampling.num_steps = 1000
    sampling.noise_removal = True
    sampling.probability_flow = False
    sampling.eps = 1e-3

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.batch_size = 1024
    evaluate.num_samples = 50_000
    evaluate.bpd_dataset = "test"

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "cifar10"  # sde_lab.data name
    data.image_size = 32
    data.num_channels = 3
    data.centered = True
    data.random_flip = True
    data.uniform_dequantization = False

    config.model = model = ml_collections.ConfigDict()
    model.name = "ncsnpp"
    model.prediction = "noise"  # s = -net / sigma(t)
    model.time_label = "999t"
    model.scale_by_sigma = False
    model.sigma_min = 0.01
    model.sigma_max = 50.0
    model.num_scales = 1000
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.ema_rate = 0.9999
    model.dropout = 0.1
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 4
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = False
    model.fir_kernel = (1, 3, 3, 1)
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "none"
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.init_scale = 0.0
    model.embedding_type = "positional"
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
