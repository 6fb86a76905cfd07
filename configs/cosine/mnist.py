"""The cosine VP schedule of Nichol & Dhariwal (2021): a noise-predicting network trained with sigma^2 weighting (L_simple) — a small NCSN++ / DDPM++ (nf = 32) on MNIST. See configs/default.py for the shared fields."""

from configs.default import mnist


def get_config():
    return mnist("cosine")
