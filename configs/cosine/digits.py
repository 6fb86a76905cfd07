"""The cosine VP schedule of Nichol & Dhariwal (2021): a noise-predicting network trained with sigma^2 weighting (L_simple) — a residual MLP on sklearn's 8x8 digits. See configs/default.py for the shared fields."""

from configs.default import digits


def get_config():
    return digits("cosine")
