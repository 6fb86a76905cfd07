"""EDM (Karras et al. 2022): alpha = 1, sigma = t on [0.002, 80], EDM's preconditioning (sigma_data = 0.5), log-normal sigma and EDM's loss weight; sampled with Heun (18 levels) — a residual MLP on the 2-D ring target. See configs/default.py for the shared fields."""

from configs.default import toy2d


def get_config():
    return toy2d("edm")
