"""SUBVP SDE: residual MLP on sklearn's 8x8 digits. See configs/default.py for the shared fields."""

from configs.default import digits


def get_config():
    return digits("subvp")
