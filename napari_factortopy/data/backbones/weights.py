"""Local weight lookup: where pretrained weights lie on disk, without downloading.

timm weights are looked up in the Hugging Face cache, then in the torch hub
``checkpoints`` folder; open_clip weights in the Hugging Face cache or the legacy
``~/.cache/clip`` folder. A miss raises :class:`WeightsNotFoundError` naming what to
fetch and where to put it. torch, timm, open_clip and huggingface_hub are imported
inside functions.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import BackboneError, WeightsNotFoundError


def _hf_cached(repo_id: str, filenames: Sequence[str], cache_dir: Any = None) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for fn in filenames:
        found = try_to_load_from_cache(repo_id, fn, cache_dir=cache_dir)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _hf_cache_dir(cache_dir: Any = None) -> str:
    if cache_dir:
        return str(cache_dir)
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


def _timm_weights(name: str, cache_dir: Any = None) -> str:
    """Path of cached timm weights for ``name`` or raise WeightsNotFoundError."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise WeightsNotFoundError(
            f"timm model {name!r} has no pretrained weights in timm's registry; pass a "
            "weights file"
        )
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    hub = cfg.get("hf_hub_id")
    files = [cfg.get("hf_hub_filename") or "model.safetensors", "pytorch_model.bin"]
    if hub:
        found = _hf_cached(hub, files, cache_dir)
        if found:
            return found
    url = cfg.get("url")
    if url:
        import torch.hub

        cand = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if cand.is_file():
            return str(cand)
    where = _hf_cache_dir(cache_dir)
    fetch = (
        f"`huggingface-cli download {hub} model.safetensors` (Hugging Face cache {where})"
        if hub
        else f"{url} into {Path(torch_hub_dir()) / 'checkpoints'}"
    )
    raise WeightsNotFoundError(
        f"pretrained weights for timm model {name!r} are not in the local cache. Fetch "
        f"them with {fetch}, or download the file yourself and pass its path as weights "
        "(--weights), or allow downloading (--allow-download)"
    )


def torch_hub_dir() -> str:
    """torch hub directory (where legacy URL checkpoints are cached)."""
    import torch.hub

    return str(torch.hub.get_dir())


def _open_clip_weights(model_name: str, tag: str, cache_dir: Any = None) -> str:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        close = difflib.get_close_matches(tag, tags, n=5, cutoff=0.4)
        raise BackboneError(
            f"open_clip model {model_name!r} has no pretrained tag {tag!r}; its tags: "
            f"{', '.join(tags) or 'none'}" + (f" (close: {', '.join(close)})" if close else "")
        )
    if cfg.get("file"):
        return str(cfg["file"])
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub.rstrip("/") if hub.endswith("/") else hub)
        if hub.endswith("/"):
            repo, filename = hub.rstrip("/"), ""
        files = [filename] if filename else []
        files += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        found = _hf_cached(repo, files, cache_dir)
        if found:
            return found
        where = _hf_cache_dir(cache_dir)
        raise WeightsNotFoundError(
            f"pretrained weights for open_clip {model_name} ({tag}) are not in the local "
            f"cache. Fetch them with `huggingface-cli download {repo} "
            f"{files[0]}` (Hugging Face cache {where}), or download that file and pass "
            "its path as weights (--weights), or allow downloading (--allow-download)"
        )
    url = cfg.get("url", "")
    cand = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    if url and cand.is_file():
        return str(cand)
    raise WeightsNotFoundError(
        f"pretrained weights for open_clip {model_name} ({tag}) are not cached. Download "
        f"{url} into {cand.parent}, or pass the file as weights, or allow downloading"
    )
