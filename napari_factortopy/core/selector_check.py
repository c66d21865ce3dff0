"""Whether a model's selectors chose anything: the maps of a degenerate model are not a
finding.

A short or badly tuned run can leave the selectors in states whose maps look like a
result but say nothing about the cortex (seen on the full-size rehearsal, issue 21):

- **space collapsed**: every vertex's space selector points at one image location
  (often a corner, where the bounded output saturates), so the space map is one colour
  and shows no retinotopy;
- **layer undecided**: the layer weights are still close to uniform (the regulariser of
  METHOD.md §3 pulls them there), so each vertex's argmax layer is decided by noise;
- **one layer everywhere**: every vertex's argmax is the same layer, from V1 to the
  face areas.

:func:`assess_selectors` measures the three from the stored selector outputs (no torch,
no data), so any model file can be checked when it is opened; ``factortopy info``,
napari's banner, canvas overlay and layer name, and exported figures say what it found.
An ablation whose factor is fixed (``select_layer=False``, ``select_space=False``) is
not checked for that factor.
"""

from __future__ import annotations

import numpy as np

from .analyses import confidence

__all__ = [
    "MIN_VERTICES",
    "ONE_LAYER_SHARE",
    "SPACE_SPREAD_MIN",
    "UNDECIDED_CONFIDENCE",
    "assess_selectors",
    "model_selector_check",
]

#: Space spread (root-mean-square distance of the vertices' space points from their
#: mean, in the grid's [−1, 1] units) below which the space selectors count as
#: collapsed. Trained phantom and paper-scale models measure 0.6–0.8; collapsed runs
#: 0.00–0.03.
SPACE_SPREAD_MIN = 0.05
#: Mean layer confidence (``1 − H(π)/log L``, :func:`~.analyses.confidence`) below which
#: the layer selectors count as undecided. Trained models measure 0.5–0.8; runs stopped
#: with the regulariser on 0.000–0.04.
UNDECIDED_CONFIDENCE = 0.05
#: Share of vertices with the same argmax layer at or above which the layer map is
#: called "one layer everywhere".
ONE_LAYER_SHARE = 0.99
#: Fewer modelled vertices than this: no verdict (a spread needs vertices).
MIN_VERTICES = 10


def _where(point: np.ndarray) -> str:
    """Where a space point lies on the image: "the image's corner", "… edge" or ""."""
    out = np.abs(point) >= 0.95
    if out.all():
        return " (the image's corner)"
    if out.any():
        return " (the image's edge)"
    return ""


def assess_selectors(
    layer: np.ndarray,
    space: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    select_layer: bool = True,
    select_space: bool = True,
) -> dict:
    """Measure whether the selectors chose anything.

    Parameters
    ----------
    layer : array of shape (V, L)
        Layer weights per vertex (rows sum to 1).
    space : array of shape (V, 2)
        Space point per vertex, (x, y) in [−1, 1].
    valid : bool array of shape (V,), optional
        Vertices to judge (default: every vertex whose layer and space are finite).
    select_layer, select_space : bool, default True
        False for an ablation that fixes that factor: it is then not judged.

    Returns
    -------
    dict
        ``vertices`` (judged), ``layer_confidence`` (mean, None when not judged),
        ``space_spread`` (None when not judged), ``space_centre`` ([x, y]),
        ``top_layer`` (1-based most common argmax layer) and ``top_layer_share``,
        ``findings``: a list of ``{"kind", "line"}`` with kind ``"space_collapsed"``,
        ``"layer_undecided"`` or ``"one_layer"``, and ``line``: the findings in one
        sentence for a person, or None when there are none (or fewer than
        :data:`MIN_VERTICES` vertices were judged).
    """
    layer = np.asarray(layer, np.float64)
    space = np.asarray(space, np.float64)
    if layer.ndim != 2 or space.shape != (layer.shape[0], 2):
        raise ValueError(
            f"layer must be (V, L) and space (V, 2); found {layer.shape} and {space.shape}"
        )
    ok = np.isfinite(layer).all(1) & np.isfinite(space).all(1)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    layer, space = layer[ok], space[ok]
    n, n_layers = layer.shape
    out: dict = {
        "vertices": int(n),
        "layer_confidence": None,
        "space_spread": None,
        "space_centre": None,
        "top_layer": None,
        "top_layer_share": None,
        "findings": [],
        "line": None,
    }
    if n < MIN_VERTICES:
        return out
    findings = out["findings"]
    if select_space:
        centre = space.mean(0)
        spread = float(np.sqrt(((space - centre) ** 2).sum(1).mean()))
        out["space_centre"] = [float(centre[0]), float(centre[1])]
        out["space_spread"] = spread
        if spread < SPACE_SPREAD_MIN:
            findings.append(
                {
                    "kind": "space_collapsed",
                    "line": f"every vertex looks at one image point ({centre[0]:.2f}, "
                    f"{centre[1]:.2f}){_where(centre)}: space spread {spread:.3f}, so the "
                    "space map shows no retinotopy",
                }
            )
    if select_layer and n_layers > 1:
        conf = float(confidence(layer).mean())
        counts = np.bincount(layer.argmax(1), minlength=n_layers)
        top = int(counts.argmax())
        share = float(counts[top] / n)
        out.update(layer_confidence=conf, top_layer=top + 1, top_layer_share=share)
        if conf < UNDECIDED_CONFIDENCE:
            findings.append(
                {
                    "kind": "layer_undecided",
                    "line": f"layer selectors undecided: mean confidence {conf:.3f} "
                    "(0 = uniform), so each vertex's argmax layer is noise",
                }
            )
        if share >= ONE_LAYER_SHARE:
            every = "every vertex's" if counts[top] == n else f"{100 * share:.1f} % of vertices'"
            findings.append(
                {"kind": "one_layer", "line": f"{every} argmax layer is layer {top + 1}"}
            )
    if findings:
        out["line"] = "; ".join(f["line"] for f in findings)
    return out


def model_selector_check(model) -> dict | None:
    """:func:`assess_selectors` for a loaded model file, or None for a file whose
    selectors are not trained ones (a phantom's truth, a baseline's fillers).

    Parameters
    ----------
    model : FittedModel
        Its ``layer`` (V, L), ``space`` (V, 2), ``missing`` (V,) and ``config``.
    """
    from .model_schema import KIND_GROUP, KIND_MODEL

    if getattr(model, "kind", None) not in (KIND_MODEL, KIND_GROUP):
        return None
    if getattr(model, "layer", None) is None or getattr(model, "space", None) is None:
        return None  # not a whole model (a summary-only stand-in)
    cfg = getattr(model, "config", None) or {}
    return assess_selectors(
        model.layer,
        model.space,
        valid=~np.asarray(model.missing, bool),
        select_layer=bool(cfg.get("select_layer", True)),
        select_space=bool(cfg.get("select_space", True)),
    )
