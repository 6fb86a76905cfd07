"""VP SDE: a small DDPM++ on 16×16 RGB patches of scikit-learn's two sample photos, for colorization.

The data (``photo_patches``) ship with scikit-learn, so this RGB model trains offline: 5,700 training
patches from the left 75% of each photo; the right 25% are held out for ``experiments/colorize_photos.py``.
Sized for a 2-core CPU (≈0.2 s per step of 64 patches on one thread; 6000 steps in about 20 minutes): nf=16,
resolutions 16/8/4 with one residual block each, no attention, 0.27M parameters.
"""

from configs.default import mnist


def get_config():
    config = mnist("vp")
    config.data.update(dict(dataset="photo_patches", image_size=16, num_channels=3, centered=True, random_flip=True))
    config.model.update(dict(nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), resblock_type="ddpm", dropout=0.0))
    config.training.batch_size = 64
    config.training.n_iters = 6_000
    config.training.snapshot_freq = 500
    config.training.keep_checkpoints = 2
    config.training.tensorboard = False
    config.optim.lr = 1e-3
    config.optim.warmup = 200
    config.sampling.num_steps = 500
    return config
