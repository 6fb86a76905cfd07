"""SUBVP SDE: residual MLP on the 2-D ring target (about a minute of CPU training). See configs/default.py for the shared fields."""

from configs.default import toy2d


def get_config():
    return toy2d("subvp")
