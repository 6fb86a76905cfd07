"""VP SDE: small DDPM++/NCSN++ (nf=32) on MNIST. See configs/default.py for the shared fields."""

from configs.default import mnist


def get_config():
    return mnist("vp")
