"""Generic backbones: any ``torch.nn.Module`` plus a list of its sub-module names.

:func:`from_module` wraps a module whose named sub-modules are the layers, resolving an
``"auto"`` token layout on one blank forward pass; ``_from_factory`` builds one from a
``"package.module:factory"`` target (the ``module:`` names of :func:`load_backbone`).
torch is imported inside functions.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

from .base import (
    Backbone,
    BackboneError,
    Preprocessing,
    TokenLayout,
    _check_layer_names,
    _finish,
)


def from_module(
    module: Any,
    layer_names: Sequence[str],
    *,
    name: str = "custom",
    preprocessing: Preprocessing | None = None,
    layout: TokenLayout | None = None,
    global_token: str | None = None,
) -> Backbone:
    """Wrap any ``torch.nn.Module``: the outputs of named sub-modules are the layers.

    Parameters
    ----------
    module : torch.nn.Module
        The network (put in eval mode, gradients off).
    layer_names : sequence of str
        Names from ``module.named_modules()``, in depth order.
    name : str
        Identifier recorded in caches and model files.
    preprocessing : Preprocessing, optional
        Default: 224 px, ImageNet normalisation.
    layout : TokenLayout, optional
        Default ``TokenLayout("auto")``: 4-D outputs are NCHW maps, 3-D outputs square
        token grids (with one class token first when the count is a square plus one).
    global_token : {"mean", "class"}, optional
        Default: ``"class"`` when the layout names a class token, else ``"mean"``.

    Returns
    -------
    Backbone

    Raises
    ------
    BackboneError
        If a name is not a sub-module (close matches are listed) or a layer yields no
        spatial grid.
    """
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    _check_layer_names(name, module, layer_names)
    if not layer_names:
        raise BackboneError(f"backbone {name}: give at least one layer name")
    layout = layout or TokenLayout("auto")
    bb = Backbone(
        name=name,
        module=module,
        layer_names=list(layer_names),
        widths=[],
        preprocessing=preprocessing or Preprocessing(),
        global_token=global_token or ("class" if layout.class_index is not None else "mean"),
        layout=layout,
        source={"library": "torch", "class": type(module).__name__},
    )
    if layout.kind == "auto":
        bb = _auto_layout(bb)
    return _finish(bb)


def _auto_layout(bb: Backbone) -> Backbone:
    """Resolve an ``"auto"`` layout on one blank forward pass (class token detection)."""
    import torch

    h, w = bb.preprocessing.size_hw
    modules = dict(bb.module.named_modules())
    outs: dict[str, Any] = {}
    handles = [
        modules[n].register_forward_hook(lambda _m, _i, o, n=n: outs.setdefault(n, o))
        for n in bb.layer_names
    ]
    try:
        with torch.no_grad():
            bb.module(torch.zeros(1, 3, h, w))
    finally:
        for hd in handles:
            hd.remove()
    first = outs.get(bb.layer_names[0])
    if isinstance(first, tuple | list):
        first = next((x for x in first if hasattr(x, "ndim")), None)
    if first is not None and getattr(first, "ndim", 0) == 3:
        n = int(first.shape[1])
        for prefix in (0, 1):
            side = math.isqrt(max(n - prefix, 0))
            if side * side == n - prefix:
                bb.layout = TokenLayout("nlc", prefix, 0 if prefix else None, None)
                if prefix and bb.global_token == "mean" and bb.layout.class_index == 0:
                    bb.global_token = "class"
                return bb
    return bb


def _from_factory(target: str, layers: Any) -> Backbone:
    mod_name, _, attr = target.partition(":")
    if not attr:
        raise BackboneError(f"module backbone {target!r}: expected 'package.module:factory'")
    try:
        factory: Callable[[], Any] = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BackboneError(f"module backbone {target!r}: cannot import it: {exc}") from exc
    made = factory()
    if isinstance(made, Backbone):
        return made
    if isinstance(made, tuple) and len(made) == 2:
        module, names = made
    else:
        module, names = made, layers
    if names is None or isinstance(names, str):
        raise BackboneError(
            f"module backbone {target!r}: the factory returned a module without layer "
            "names; return (module, layer_names) or pass layers"
        )
    return from_module(module, list(names), name=f"module:{target}")
