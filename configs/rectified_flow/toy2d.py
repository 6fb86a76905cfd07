"""Rectified flow, x_t = (1 - t) x_0 + t eps: the network predicts the velocity and is trained by flow matching (velocity MSE, t ~ U; training.time_law='logit_normal' for SD3's law) — a residual MLP on the 2-D ring target. See configs/default.py for the shared fields."""

from configs.default import toy2d


def get_config():
    return toy2d("rectified_flow")
