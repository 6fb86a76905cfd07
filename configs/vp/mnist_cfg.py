"""VP SDE: a class-conditional DDPM++ on MNIST for classifier-free guidance, sized for a CPU.

The network takes the class label as a learned embedding added to its time embedding
(``model.num_classes = 10``; label 10 is the null label ∅). Training drops each label with probability
``training.label_dropout`` (Ho & Salimans 2022), so the same network is the conditional score
``s(x, t, y)`` and the unconditional ``s(x, t, ∅)``; ``sde-lab sample --ckpt ... --class 3 --guidance 2``
mixes them as ``(1 + w) s(x, t, y) - w s(x, t, ∅)``.

Sized for ``experiments/mnist_cfg.py`` on a 2-core CPU (≈0.3 s per step of 64 images): nf=16, one
residual block per resolution (28/14/7), no attention, lr 1e-3. On a GPU raise ``model.nf`` to 64,
``model.num_res_blocks`` to 2, ``training.batch_size`` to 128 and ``training.n_iters`` to 50k.
"""

from configs.default import mnist


def get_config():
    config = mnist("vp")
    config.model.update(dict(nf=16, ch_mult=(1, 2, 4), num_res_blocks=1, attn_resolutions=(), resblock_type="ddpm", dropout=0.0))
    config.model.num_classes = 10  # class-conditional; label 10 is the null label
    config.model.ema_rate = 0.999
    config.training.label_dropout = 0.1  # P(label -> null) at training
    config.training.batch_size = 64
    config.training.n_iters = 8_000
    config.training.snapshot_freq = 500
    config.training.keep_checkpoints = 2
    config.training.tensorboard = False
    config.optim.lr = 1e-3
    config.optim.warmup = 200
    config.sampling.method = "dpm_solver_pp"
    config.sampling.num_steps = 30
    return config
