"""The entry point: :func:`load_backbone` builds a backbone from a name.

A name picks the family (``"efficientnet_lite0"``, ``"timm:NAME"`` or a bare timm
name, ``"open_clip:MODEL@TAG"``, ``"module:pkg.mod:factory"``) and hands the rest to
its builder; an unknown name raises :class:`BackboneError` listing close matches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .base import Backbone, BackboneError, _finish
from .efficientnet import efficientnet_lite0
from .generic import _from_factory
from .names import _close_names
from .open_clip_family import PAPER_BACKBONE, PRESETS, open_clip_backbone
from .timm_family import timm_backbone


def load_backbone(
    spec: str,
    *,
    pretrained: str | None = None,
    weights: str | os.PathLike | None = None,
    layers: Sequence[str] | str | None = None,
    allow_download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Backbone:
    """Build a backbone from a name.

    Parameters
    ----------
    spec : str
        ``"efficientnet_lite0"`` (offline pretrained); ``"timm:NAME"`` or a bare timm
        name; ``"open_clip:MODEL"`` or ``"open_clip:MODEL@TAG"`` (also ``"clip:"``);
        ``"module:package.module:factory"`` (``factory()`` returns
        ``(module, layer_names)`` or a :class:`Backbone`). An open_clip name may end in
        ``+PRESET`` (``"open_clip:ViT-B-16@datacomp_l_s1b_b8k+paper"``, also just
        ``"paper"``): the paper's token convention and preprocessing.
    pretrained : str, optional
        open_clip pretrained tag (alternative to ``@TAG``).
    weights, layers, allow_download, cache_dir
        As in :func:`timm_backbone` / :func:`open_clip_backbone`.
    **kwargs
        Passed to the family's builder (e.g. timm ``create_kwargs``).

    Returns
    -------
    Backbone

    Raises
    ------
    BackboneError
        Unknown name: the message lists close matches.
    WeightsNotFoundError
        Missing weights (names what to fetch and where to put it).
    """
    spec = spec.strip()
    if spec == "paper":  # the paper's backbone in the release's token convention
        spec = PAPER_BACKBONE
    preset = None
    head, plus, tail = spec.rpartition("+")
    if plus and tail in PRESETS:
        spec, preset = head, tail
        kwargs["preset"] = preset
        if not spec.lower().startswith(("open_clip:", "openclip:", "clip:")):
            raise BackboneError(
                f"backbone {spec!r}: the {preset!r} preset exists for open_clip ViTs only "
                f"(e.g. {PAPER_BACKBONE!r})"
            )
    if spec == "efficientnet_lite0":
        bb = efficientnet_lite0(None if weights == "random" else (weights or "packaged"))
        if layers not in (None, "blocks"):
            bb.layer_names = list(layers)
            bb = _finish(bb)
        return bb
    family, _, rest = spec.partition(":")
    if not rest:
        family, rest = "timm", spec
    family = family.lower()
    if family in ("open_clip", "openclip", "clip"):
        model_name, _, tag = rest.partition("@")
        return open_clip_backbone(
            model_name,
            tag or pretrained,
            weights=weights,
            layers=layers,
            allow_download=allow_download,
            cache_dir=cache_dir,
            **kwargs,
        )
    if family == "timm":
        return timm_backbone(
            rest,
            weights=weights,
            layers=layers,
            allow_download=allow_download,
            cache_dir=cache_dir,
            **kwargs,
        )
    if family in ("module", "py", "python"):
        return _from_factory(rest, layers)
    close = _close_names(spec)
    raise BackboneError(
        f"unknown backbone {spec!r}: expected 'efficientnet_lite0', 'timm:NAME', "
        f"'open_clip:MODEL@TAG' or 'module:pkg.mod:factory'; close matches: "
        f"{', '.join(close) or 'none'}"
    )
