"""How well each vertex's receptive-field location is determined (its standard error).

FactorTopy gives each vertex one point ``s_v`` on the image grid. How sure is it? With
everything else fixed and Gaussian noise, the information the data hold about
``s_v`` is ``I_v = J_vᵀ J_v / σ_v²``, with ``J_v`` (N, 2) the derivative of the
vertex's predictions over the images with respect to its point and ``σ_v²`` the
residual variance; its inverse is the (Laplace / Cramér–Rao) covariance of the point,
and

``se_v = sqrt(trace(σ_v² (J_vᵀ J_v)⁻¹))``   (grid units of [−1, 1]; the image is 2 wide)

is the RF's standard error. A vertex whose prediction does not move with its point
(it reads the global token, α = 1, or layers whose local tokens are flat) has
``J = 0``: its RF is **unlocated** (``se = inf``) and maps draw it so, never as a
confident point. The derivative is a central difference over half a grid cell
(bilinear sampling is piecewise linear, so this is its slope across the cell).

It is conditional on the other parameters (readout, layer and scale) and therefore a
lower bound: read it as "at least this uncertain"; the spread across seeds
(``space spread`` of an ensemble) is the complementary, unconditional check.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["UNLOCATED_SE", "RFUncertainty", "space_jacobian"]

#: Standard error (grid units) from which a receptive field counts as unlocated: a
#: quarter of the image's width.
UNLOCATED_SE = 0.5


def space_jacobian(module: Any, local, global_, selectors: Any, step: float | None = None):
    """Derivative of each vertex's prediction with respect to its space point.

    Parameters
    ----------
    module : FactorTopy
    local, global_ : sequences of L tensors (a batch of B images)
    selectors : Selectors
        The point ``space`` (V, 2) the derivative is taken at (one point per vertex;
        the multiple-samples ablation is not supported).
    step : float, optional
        Half the central difference's span, in grid units; default half a grid cell
        (``1 / max(h, w)``).

    Returns
    -------
    tensor of shape (2, B, V)
        ``∂ŷ/∂x`` and ``∂ŷ/∂y`` per image and vertex.
    """
    import torch

    from .model import Selectors

    if selectors.samples is not None:
        raise ValueError("the RF uncertainty needs one space point per vertex")
    h, w = module.config.grid
    step = float(step if step is not None else 1.0 / max(h, w))
    out = []
    for axis in (0, 1):
        shift = torch.zeros_like(selectors.space)
        shift[:, axis] = step
        preds = []
        for sign in (1.0, -1.0):
            sel = Selectors(selectors.space + sign * shift, selectors.layer, selectors.scale)
            preds.append(module(local, global_, sel))
        out.append((preds[0] - preds[1]) / (2 * step))
    return torch.stack(out)


class RFUncertainty:
    """Accumulates ``J_vᵀ J_v`` and the residuals over batches; :meth:`result` gives
    the standard error of each vertex's RF location.

    Parameters
    ----------
    n_vertices : int
    """

    def __init__(self, n_vertices: int) -> None:
        self.jtj = np.zeros((n_vertices, 2, 2))
        self.sse = np.zeros(n_vertices)
        self.s_y = np.zeros(n_vertices)
        self.s_yy = np.zeros(n_vertices)
        self.n = 0

    def add(self, y: np.ndarray, pred: np.ndarray, jac: np.ndarray) -> None:
        """Add a batch: responses and predictions (n, V), derivatives (2, n, V)."""
        y = np.asarray(y, np.float64)
        pred = np.asarray(pred, np.float64)
        j = np.asarray(jac, np.float64)
        if pred.shape != y.shape or j.shape != (2, *y.shape):
            raise ValueError(
                f"expected y, pred {y.shape} and jac (2, *{y.shape}); found {pred.shape}, "
                f"{j.shape}"
            )
        self.jtj += np.einsum("anv,bnv->vab", j, j)
        self.sse += ((y - pred) ** 2).sum(0)
        self.n += len(y)

    def result(self) -> np.ndarray:
        """(V,) standard error of the RF location in grid units; inf where the
        prediction does not depend on the point (unlocated)."""
        if self.n < 4:
            raise ValueError("the RF uncertainty needs at least 4 images")
        sigma2 = self.sse / (self.n - 2)
        a, b, d = self.jtj[:, 0, 0], self.jtj[:, 0, 1], self.jtj[:, 1, 1]
        det = a * d - b * b
        scale = np.maximum(a + d, 1e-300)
        with np.errstate(invalid="ignore", divide="ignore"):
            # trace of the 2×2 inverse: (a + d) / det
            se = np.sqrt(sigma2 * (a + d) / det)
        singular = ~(det > 1e-9 * scale**2) | ~np.isfinite(se)
        se[singular] = np.inf
        return se
