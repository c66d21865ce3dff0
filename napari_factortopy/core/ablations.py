"""FactorTopy's ablations (METHOD.md §6, paper Table 3): each replaces one factor.

An ablation is a :class:`~napari_factortopy.core.config.FactorTopyConfig` with one
ablation field changed; :class:`~napari_factortopy.core.model.FactorTopy` builds it,
:func:`napari_factortopy.core.training.train` trains it unchanged (the regulariser of
a constant factor is a constant) and its model file is a FactorTopy model file whose
config names the ablation.
"""

from __future__ import annotations

from dataclasses import replace

from .config import ABLATION_DEFAULTS, FactorTopyConfig

__all__ = ["ABLATIONS", "ablation_config", "ablation_name"]

#: Ablation name → the config fields it changes (paper Table 3's rows).
ABLATIONS: dict[str, dict] = {
    "no_topology": {"topology": False},  # selectors: free per-vertex parameters
    "no_layer_sel": {"select_layer": False},  # uniform layer weights
    "no_space_sel": {"select_space": False},  # grid mean instead of a point
    "no_scale_sel": {"select_scale": False},  # scale fixed at ½
    "multi_sample": {"space_samples": 3},  # 3 space points per vertex, averaged
}


def ablation_config(config: FactorTopyConfig, name: str) -> FactorTopyConfig:
    """``config`` with the ablation ``name`` applied (``"factortopy"``: unchanged).

    Raises
    ------
    ValueError
        An unknown name (the known ones are listed).
    """
    if name == "factortopy":
        return config
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; known: {', '.join(ABLATIONS)}")
    return replace(config, **ABLATIONS[name])


def ablation_name(config: FactorTopyConfig | dict) -> str:
    """The name of the ablation a config describes (``"factortopy"`` for none;
    ``"+"``-joined names where several fields differ)."""
    get = config.get if isinstance(config, dict) else lambda k, d: getattr(config, k, d)
    names = [
        name
        for name, change in ABLATIONS.items()
        if all(get(k, ABLATION_DEFAULTS[k]) == v for k, v in change.items())
    ]
    return "+".join(names) or "factortopy"
