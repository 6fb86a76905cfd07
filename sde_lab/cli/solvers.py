"""``sde-lab solvers``: list the samplers, their options and default grids."""

from __future__ import annotations

from ..registry import DEFAULT_GRIDS, GRIDS, SOLVERS, solver_options


def add_parser(sub):
    return sub.add_parser("solvers", help="list the samplers with their options (for sample --solver-opt) and the grids")


def run(args) -> int:
    for name in sorted(SOLVERS):
        print(f"{name:18s} {SOLVERS[name][1]}")
        print(f"{'':18s}   options: {', '.join(solver_options(name))}; default grid: {DEFAULT_GRIDS[name]}")
    print("\ngrids (sample --grid; any solver on a fixed grid takes any of them):")
    for name in sorted(GRIDS):
        print(f"  {name:12s} {GRIDS[name][1]}")
    return 0
