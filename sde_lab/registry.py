"""Read-only name → constructor tables, used by the CLI and configs (strings stay at the edge).

Library functions take objects; only the CLI, configs and the string-valued options of the
:func:`sde_lab.sample` entry point resolve names here. Each table maps a name to a constructor (or
function) and a one-line description; :func:`lookup` raises ``ValueError`` listing the valid names.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping

from .analytic import TARGETS as _TARGETS
from .sde import VESDE, VPSDE, SubVPSDE

__all__ = ["SDES", "TARGETS", "lookup", "make_sde"]


def _table(entries: dict[str, tuple[Callable[..., Any], str]]) -> Mapping[str, tuple[Callable[..., Any], str]]:
    return MappingProxyType(dict(entries))


def lookup(table: Mapping[str, tuple[Callable[..., Any], str]], name: str, kind: str) -> Callable[..., Any]:
    """The constructor registered under ``name``; unknown names list the valid choices."""
    try:
        return table[name][0]
    except (KeyError, TypeError):
        raise ValueError(f"unknown {kind} {name!r}; valid choices: {', '.join(sorted(table))}") from None


# --- SDEs ---------------------------------------------------------------------------------------
SDES = _table(
    {
        "ve": (VESDE, "variance exploding (SMLD/NCSN limit), sigma_min=0.01, sigma_max=50"),
        "vp": (VPSDE, "variance preserving (DDPM limit), beta_min=0.1, beta_max=20"),
        "subvp": (SubVPSDE, "sub-VP, beta_min=0.1, beta_max=20"),
    }
)


def make_sde(name: str, **kwargs) -> Any:
    """Build an SDE by name (``ve``, ``vp``, ``subvp``) with optional hyperparameters."""
    return lookup(SDES, name, "SDE")(**kwargs)


# --- analytic oracle targets --------------------------------------------------------------------
TARGETS = _table(_TARGETS)

# --- samplers (predictors, correctors, solvers) --------------------------------------------------

# --- likelihood (divergence estimators, probes) ---------------------------------------------------

# --- networks, parametrizations and losses -------------------------------------------------------

# --- datasets and metrics -----------------------------------------------------------------------
