"""The cosine VP schedule of Nichol & Dhariwal (2021): a noise-predicting network trained with sigma^2 weighting (L_simple) — a residual MLP on the 2-D ring target. See configs/default.py for the shared fields."""

from configs.default import toy2d


def get_config():
    return toy2d("cosine")
