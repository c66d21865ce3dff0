"""The RF standard error against a known truth: refitting the point of simulated
vertices under fresh noise scatters it as much as the standard error says; a vertex
that reads only the global token is unlocated; the formula against a plain loop."""

from __future__ import annotations

import numpy as np
import pytest

from napari_factortopy.core.rf_uncertainty import RFUncertainty


def test_standard_error_formula_against_a_plain_loop():
    rng = np.random.default_rng(0)
    n, v = 50, 4
    y, pred = rng.normal(size=(n, v)), rng.normal(size=(n, v))
    jac = rng.normal(size=(2, n, v))
    acc = RFUncertainty(v)
    acc.add(y[:20], pred[:20], jac[:, :20])
    acc.add(y[20:], pred[20:], jac[:, 20:])
    se = acc.result()
    for k in range(v):
        j = jac[:, :, k].T  # (n, 2)
        sigma2 = ((y[:, k] - pred[:, k]) ** 2).sum() / (n - 2)
        cov = sigma2 * np.linalg.inv(j.T @ j)
        assert se[k] == pytest.approx(np.sqrt(np.trace(cov)))
    flat = RFUncertainty(1)
    flat.add(y[:, :1], pred[:, :1], np.zeros((2, n, 1)))
    assert np.isinf(flat.result()[0])


def _toy(n_vertices=24, seed=0):
    """A one-layer FactorTopy module reading local tokens only (α = 0) at chosen
    points between token centres (where bilinear sampling is linear)."""
    torch = pytest.importorskip("torch")
    from napari_factortopy.core.config import FactorTopyConfig
    from napari_factortopy.core.model import FactorTopy, Selectors

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = FactorTopyConfig((6,), (8, 8), bottleneck=4, hidden=4, n_freqs=2)
    m = FactorTopy(rng.normal(size=(n_vertices, 3)), cfg).double()
    with torch.no_grad():
        m.beta.copy_(torch.as_tensor(rng.normal(size=(n_vertices, 4)) * 4.0))
    # midpoints between token centres: (2k + 2) / 8 − 1 for k = 0..6
    mids = (2 * np.arange(7) + 2) / 8 - 1
    space = torch.as_tensor(np.stack([rng.choice(mids[1:-1], n_vertices),
                                      rng.choice(mids[1:-1], n_vertices)], 1))  # fmt: skip
    sel = Selectors(
        space=space,
        layer=torch.ones(n_vertices, 1, dtype=torch.float64),
        scale=torch.zeros(n_vertices, dtype=torch.float64),
    )
    return torch, m, sel


def test_refitted_points_scatter_as_the_standard_error_says():
    from napari_factortopy.core.model import Selectors
    from napari_factortopy.core.rf_uncertainty import space_jacobian

    torch, m, sel = _toy()
    n_img, noise = 200, 0.5
    gen = torch.Generator().manual_seed(1)
    local = [torch.randn(n_img, 6, 8, 8, generator=gen, dtype=torch.float64)]
    glo = [torch.randn(n_img, 6, generator=gen, dtype=torch.float64)]
    with torch.no_grad():
        clean = m(local, glo, sel)
    rng = np.random.default_rng(2)
    fits, ses = [], []
    for _ in range(16):
        y = clean + torch.as_tensor(rng.normal(size=clean.shape) * noise)
        s = sel.space.clone()
        with torch.no_grad():
            for _ in range(3):  # Gauss–Newton on each vertex's point, the rest fixed
                cur = Selectors(s, sel.layer, sel.scale)
                r = (y - m(local, glo, cur)).numpy()
                j = space_jacobian(m, local, glo, cur).numpy()  # (2, n, V)
                jtj = np.einsum("anv,bnv->vab", j, j)
                jtr = np.einsum("anv,nv->va", j, r)
                s = s + torch.as_tensor(np.linalg.solve(jtj, jtr[..., None])[..., 0])
            cur = Selectors(s, sel.layer, sel.scale)
            pred = m(local, glo, cur).numpy()
            acc = RFUncertainty(m.n_vertices)
            acc.add(y.numpy(), pred, space_jacobian(m, local, glo, cur).numpy())
        fits.append(s.numpy())
        ses.append(acc.result())
    fits = np.asarray(fits)  # (R, V, 2)
    empirical = np.sqrt(((fits - fits.mean(0)) ** 2).sum(2).mean(0))  # RMS over draws
    predicted = np.mean(ses, 0)
    ratio = empirical / predicted
    assert 0.75 < np.median(ratio) < 1.3  # the standard error is calibrated
    assert np.corrcoef(empirical, predicted)[0, 1] > 0.8  # and ranks the vertices


def test_a_vertex_reading_only_the_global_token_is_unlocated():
    from napari_factortopy.core.model import Selectors
    from napari_factortopy.core.rf_uncertainty import space_jacobian

    torch, m, sel = _toy(n_vertices=4)
    scale = torch.tensor([0.0, 0.5, 0.9, 1.0], dtype=torch.float64)
    sel = Selectors(sel.space, sel.layer, scale)
    local = [torch.randn(60, 6, 8, 8, dtype=torch.float64)]
    glo = [torch.randn(60, 6, dtype=torch.float64)]
    with torch.no_grad():
        pred = m(local, glo, sel).numpy()
        jac = space_jacobian(m, local, glo, sel).numpy()
    acc = RFUncertainty(4)
    acc.add(pred + np.random.default_rng(0).normal(size=pred.shape), pred, jac)
    se = acc.result()
    assert np.isinf(se[3]) and np.isfinite(se[:3]).all()
    assert se[0] < se[1] < se[2]  # less local weight, less certain location
