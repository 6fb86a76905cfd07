"""``sde-lab targets``: list the analytic oracle targets."""

from __future__ import annotations

from ..analytic import make_target, target_names
from ..registry import TARGETS


def add_parser(sub):
    p = sub.add_parser("targets", help="list the built-in analytic (Gaussian-mixture) targets")
    return p


def run(args) -> int:
    for name in target_names():
        gm = make_target(name)
        shape = "x".join(map(str, gm.event_shape))
        print(f"{name:10s} dim={gm.dim:<4d} shape={shape:<8s} K={gm.n_components:<3d} {TARGETS[name][1]}")
    return 0
