"""Rectified flow, x_t = (1 - t) x_0 + t eps: the network predicts the velocity and is trained by flow matching (velocity MSE, t ~ U; training.time_law='logit_normal' for SD3's law) — a residual MLP on sklearn's 8x8 digits. See configs/default.py for the shared fields."""

from configs.default import digits


def get_config():
    return digits("rectified_flow")
