"""Close-name suggestions for a backbone name that no family knows.

The pool is ``efficientnet_lite0``, every timm model name and every open_clip model
(as ``open_clip:MODEL``); both :func:`load_backbone` and :func:`timm_backbone` list the
closest of them in their error messages. timm and open_clip are imported inside
functions.
"""

from __future__ import annotations

import difflib


def _timm_names() -> list[str]:
    import timm

    return list(timm.list_models()) + list(timm.list_models(pretrained=True))


def _close_names(name: str) -> list[str]:
    cands = {"efficientnet_lite0"}
    try:
        cands.update(_timm_names())
    except Exception:  # pragma: no cover
        pass
    try:
        import open_clip

        cands.update(f"open_clip:{m}" for m in open_clip.list_models())
    except Exception:  # pragma: no cover
        pass
    base = name.split(":", 1)[-1]
    pool = sorted(cands)
    close = difflib.get_close_matches(name, pool, n=6, cutoff=0.6)
    close += [c for c in difflib.get_close_matches(base, pool, n=6, cutoff=0.6) if c not in close]
    return close[:6]
