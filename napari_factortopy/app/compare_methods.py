"""FactorTopy, its ablations and the baselines on one split, side by side (paper Table 3).

:func:`compare_methods` takes one run's inputs (:func:`~.inputs.training_inputs`: one
feature source, one split) and, method by method, trains it — FactorTopy and its
ablations through :func:`napari_factortopy.core.estimator.fit`, the torch baselines
through the same :func:`napari_factortopy.core.training.train` loop, the per-layer
ridge with himalaya — measuring wall time, peak resident memory and the time of one
training step, then scores everything on the same test images: R², Pearson r and,
where a noise ceiling exists, the noise-normalised score, over all vertices and per ROI.

It writes into ``out``:

- ``<method>.ftopy`` for every method. FactorTopy and its ablations are runnable
  FactorTopy model files (the config names the ablation); the baselines are
  display-only files of kind ``"baseline"``: test scores as score maps, their readout,
  and the maps they have, named in ``extra["baseline"]["maps"]`` (GNet: the centre of
  mass of each vertex's pooling field as the space map; ridge: each vertex's
  validation-R² profile over layers as the layer map, its argmax being the best layer;
  ``scores/best_layer`` and ``scores/alpha``); their other selector maps are fillers
  that a viewer should hide.
- ``comparison.csv`` (one row per method and ROI), ``comparison.md`` (the tables),
  ``comparison.json`` (everything, with the layer-map agreement against a truth).

Each method's fit lives in :mod:`.compare_fits`, the tables' writing in
:mod:`.compare_report`; this module measures, scores and drives them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.ablations import ABLATIONS
from ..core.config import TrainConfig
from ..core.metrics import noise_normalised, r2_score, roi_table
from .compare_fits import finite_mean, fit_factortopy, fit_ridge, train_baseline
from .compare_report import write_tables

__all__ = [
    "ALL_METHODS",
    "CompareOptions",
    "compare_methods",
    "expand_methods",
    "layer_agreement",
    "step_seconds",
]

TORCH_BASELINES = ("classToken", "patchComp", "gnet")
#: Every method, in table order.
ALL_METHODS = ("factortopy", *ABLATIONS, *TORCH_BASELINES, "ridge")
#: Shorthands accepted by :func:`expand_methods`.
GROUPS = {"ablations": tuple(ABLATIONS), "baselines": (*TORCH_BASELINES, "ridge")}


def expand_methods(spec: str | Sequence[str]) -> list[str]:
    """Method names from ``"factortopy,ablations,classToken,…"`` (groups expanded,
    duplicates dropped, table order kept).

    Raises
    ------
    ValueError
        An unknown name (the known ones are listed).
    """
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    wanted: list[str] = []
    for item in filter(None, items):
        names = GROUPS.get(item, (item,))
        for name in names:
            if name not in ALL_METHODS:
                known = ", ".join([*ALL_METHODS, *GROUPS])
                raise ValueError(f"unknown method {name!r}; known: {known}")
            if name not in wanted:
                wanted.append(name)
    if not wanted:
        raise ValueError("no method given")
    return [m for m in ALL_METHODS if m in wanted]


@dataclass(frozen=True)
class CompareOptions:
    """How :func:`compare_methods` trains.

    Attributes
    ----------
    methods : sequence of str
        See :data:`ALL_METHODS` (and :data:`GROUPS`).
    max_seconds : float
        Wall-clock budget of each torch method (the ``auto`` recipe fits its schedule
        to it, the same for every method).
    train : TrainConfig, optional
        The recipe instead (its own ``max_seconds``, if any, applies).
    bottleneck, hidden : int
        D (every torch method) and the selector MLP width (FactorTopy, ablations).
    device : str
    seed : int
        Initialisation seed of every torch method.
    ridge_pool, ridge_components, ridge_backend, ridge_alphas
        :func:`napari_factortopy.core.baselines.ridge_per_layer` settings.
    ridge_blas_threads : int, optional
        BLAS threads while ridge fits (None: the library's default).
    timing_steps : int
        Training steps timed per torch method (after 2 warm-up steps).
    """

    methods: Sequence[str] = ALL_METHODS
    max_seconds: float = 60.0
    train: TrainConfig | None = None
    bottleneck: int = 128
    hidden: int = 128
    device: str = "cpu"
    seed: int = 0
    ridge_pool: tuple[int, int] = (2, 2)
    ridge_components: int | None = 256
    ridge_backend: str = "numpy"
    ridge_alphas: tuple[float, ...] = tuple(float(a) for a in 10.0 ** np.arange(-2, 7))
    ridge_blas_threads: int | None = None
    timing_steps: int = 5

    def train_config(self) -> TrainConfig:
        if self.train is not None:
            return self.train
        # no sharpness calibration: it refits FactorTopy's readout on the validation
        # split, which the baselines (no layer softmax) cannot have; the table compares
        # the methods as trained
        return TrainConfig(max_seconds=self.max_seconds, recipe="auto", calibrate=False)


# ----------------------------------------------------------------- measuring


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover - psutil is usually there
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRSS:
    """Samples the process's resident memory every 20 ms while active."""

    def __enter__(self) -> _PeakRSS:
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def step_seconds(module: Any, features: Any, responses: np.ndarray, rows: np.ndarray,
                 batch_size: int = 8, n_steps: int = 5, warmup: int = 2) -> float:  # fmt: skip
    """Median wall time of one training step (selectors, forward, loss with the
    regulariser, backward, clipping, AdamW) on a copy of ``module``.

    Parameters
    ----------
    module : FactorTopy or Baseline
    features : FeatureSource
    responses : array (N, V)
    rows : array
        Training rows the batches are drawn from (in order, cycling).
    """
    import copy

    import torch
    from torch.nn import functional as F

    from ..core.training import regulariser

    m = copy.deepcopy(module).train()
    dev = next(m.parameters()).device
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    times = []
    rows = np.asarray(rows)
    for i in range(warmup + n_steps):
        lo = (i * batch_size) % max(len(rows) - batch_size, 1)
        batch = rows[lo : lo + batch_size]
        t0 = time.perf_counter()
        loc, glo = features.get(batch)
        target = torch.as_tensor(responses[batch], dtype=torch.float32, device=dev)
        sel = m.selectors()
        pred = m(loc, glo, sel)
        loss = F.smooth_l1_loss(pred.float(), target, beta=0.1) + 0.1 * regulariser(sel)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


# ------------------------------------------------------------------ scoring


def layer_agreement(
    layer_of: dict[str, np.ndarray],
    truth_argmax: np.ndarray,
    roi: np.ndarray,
    roi_names: Sequence[str],
) -> list[dict]:
    """Per ROI (and "all"): the share of vertices whose layer (argmax or best layer)
    equals the truth's argmax (``exact``) or is within one layer (``within1``), and
    the ROI's mean layer index, for each named map.

    Parameters
    ----------
    layer_of : dict name → int array (V,)
    truth_argmax : int array (V,)
    roi, roi_names : ROI labels and names.
    """
    groups = [("all", np.ones(len(truth_argmax), bool))]
    groups += [(name, roi == k) for k, name in enumerate(roi_names, start=1)]
    rows = []
    for name, msk in groups:
        if not msk.any():
            continue
        row: dict[str, Any] = {
            "roi": name,
            "n": int(msk.sum()),
            "truth_mean_layer": float(truth_argmax[msk].mean()),
        }
        for key, am in layer_of.items():
            diff = np.abs(am[msk] - truth_argmax[msk])
            row[f"{key}_exact"] = float((diff == 0).mean())
            row[f"{key}_within1"] = float((diff <= 1).mean())
            row[f"{key}_mean_layer"] = float(am[msk].mean())
        rows.append(row)
    return rows


def _scores(name, r2, r, inputs, ceiling) -> dict:
    subj = inputs.subject
    roi = subj.roi if subj.roi is not None else np.zeros(subj.n_vertices, np.int64)
    names = list(subj.roi_names)
    nn = None if ceiling is None else noise_normalised(r, ceiling)
    per_roi = []
    r2_rows = roi_table(r2, roi, names)
    r_rows = roi_table(r, roi, names)
    nn_rows = roi_table(nn, roi, names) if nn is not None else [None] * len(r2_rows)
    for a, b, c in zip(r2_rows, r_rows, nn_rows, strict=True):
        per_roi.append(
            {
                "method": name,
                "roi": a["roi"],
                "n": a["n"],
                "r2": a["mean"],
                "r": b["mean"],
                "nn": None if c is None else c["mean"],
            }
        )
    nn_mean = None if nn is None else finite_mean(nn)
    return {"r2": finite_mean(r2), "r": finite_mean(r), "nn": nn_mean, "per_roi": per_roi}


# -------------------------------------------------------------------- main


def compare_methods(
    inputs: Any,
    out: str | Path,
    options: CompareOptions | None = None,
    *,
    noise_ceiling: np.ndarray | None = None,
    truth: dict | None = None,
) -> Iterator[dict]:
    """Train and score every method on ``inputs``' split; write files into ``out``.

    Parameters
    ----------
    inputs : TrainingInputs
        One run's inputs (features, responses, subject, split).
    out : path
        Folder for the model files and tables (created).
    options : CompareOptions
    noise_ceiling : array (V,), optional
        Explainable variance fraction per vertex (enables the noise-normalised score).
    truth : dict, optional
        A phantom's truth (``layer`` (V, L)): the layer maps are compared with it.

    Yields
    ------
    dict
        ``{"kind": "method", "method", "status": "start"}``, the training records as
        ``{"kind": "train", "method", "record"}``, ``{"kind": "method", "method",
        "status": "done" | "failed", "row"}`` and finally ``{"kind": "done", "rows",
        "per_roi", "agreement", "files"}``.
    """
    import torch

    from ..core.runtime import resolve_device

    opts = options or CompareOptions()
    methods = expand_methods(opts.methods)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(opts.device)
    tcfg = opts.train_config()
    rows: list[dict] = []
    per_roi: list[dict] = []
    layer_of: dict[str, np.ndarray] = {}
    files: dict[str, str] = {}
    train_rows = np.asarray(inputs.split.train)
    y_test = inputs.responses[inputs.split.test]
    for name in methods:
        yield {"kind": "method", "method": name, "status": "start"}
        row: dict[str, Any] = {"method": name, "family": _family(name)}
        started = time.perf_counter()
        try:
            with _PeakRSS() as mem:
                if name == "ridge":
                    fitted, ridge = fit_ridge(inputs, opts)
                    module = None
                else:
                    gen = (fit_factortopy if row["family"] != "baseline" else train_baseline)(
                        name, inputs, opts, tcfg, dev, started
                    )
                    while True:
                        try:
                            rec = next(gen)
                        except StopIteration as stop:
                            fitted, module = stop.value
                            break
                        yield {"kind": "train", "method": name, "record": rec}
            row["seconds"] = time.perf_counter() - started
        except (ValueError, RuntimeError) as exc:  # a budget too small, a divergence
            row.update(status="failed", error=str(exc)[:300])
            rows.append(row)
            yield {"kind": "method", "method": name, "status": "failed", "row": row}
            continue
        row["peak_rss_mb"] = mem.peak / 2**20
        row["rss_increase_mb"] = (mem.peak - mem.start) / 2**20
        r2 = np.asarray(fitted.scores["r2_test"], np.float64)
        r = np.asarray(fitted.scores["r_test"], np.float64)
        if name == "ridge":
            assert np.allclose(r2, r2_score(y_test, ridge.test_pred), equal_nan=True)
            layer_of["ridge"] = ridge.best_layer
        else:
            row["steps"] = int(fitted.summary.get("steps", 0))
            row["ms_per_step"] = 1e3 * step_seconds(
                module, inputs.features, inputs.responses, train_rows,
                batch_size=8, n_steps=opts.timing_steps,
            )  # fmt: skip
            if row["family"] != "baseline" and fitted.config.get("select_layer", True):
                # (no_layer_sel has no layer map: its uniform weights have no argmax)
                layer_of[name] = np.asarray(fitted.layer).argmax(1)
        s = _scores(name, r2, r, inputs, noise_ceiling)
        row.update(status="ok", r2=s["r2"], r=s["r"], nn=s["nn"])
        per_roi.extend(s["per_roi"])
        path = fitted.save(out / f"{name}.ftopy")
        files[name] = str(path)
        row["file"] = path.name
        rows.append(row)
        del module
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        yield {"kind": "method", "method": name, "status": "done", "row": row}
    agreement = []
    if truth is not None and layer_of:
        subj = inputs.subject
        roi = subj.roi if subj.roi is not None else np.zeros(subj.n_vertices, np.int64)
        t_am = np.asarray(truth["layer"]).argmax(1)
        agreement = layer_agreement(layer_of, t_am, roi, list(subj.roi_names))
    write_tables(out, rows, per_roi, agreement, list(inputs.subject.roi_names), opts, tcfg)
    yield {"kind": "done", "rows": rows, "per_roi": per_roi, "agreement": agreement,
           "files": files}  # fmt: skip


def _family(name: str) -> str:
    if name == "factortopy":
        return "factortopy"
    return "ablation" if name in ABLATIONS else "baseline"
