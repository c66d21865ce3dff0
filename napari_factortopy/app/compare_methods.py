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
"""

from __future__ import annotations

import csv
import json
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.ablations import ABLATIONS, ablation_config
from ..core.config import TrainConfig
from ..core.metrics import noise_normalised, r2_score, roi_table
from .recovery import markdown_table

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


def _mean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


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
    return {"r2": _mean(r2), "r": _mean(r), "nn": None if nn is None else _mean(nn),
            "per_roi": per_roi}  # fmt: skip


# ------------------------------------------------------------------ methods


def _fit_factortopy(name, inputs, opts, tcfg, dev, started) -> tuple[Any, Any]:
    from ..core.estimator import fit

    config = ablation_config(
        inputs.model_config(bottleneck=opts.bottleneck, hidden=opts.hidden), name
    )
    fitted = None
    for rec in fit(
        inputs.features,
        inputs.responses,
        inputs.subject,
        inputs.split,
        config=config,
        train_config=tcfg,
        backbone=inputs.backbone,
        device=dev,
        seed=opts.seed,
        started_at=started,
        extra={"dataset": inputs.dataset, "comparison": {"method": name}},
    ):
        if rec["kind"] == "fitted":
            fitted = rec["model"]
        else:
            yield rec
    return fitted, fitted.to_module(dev)


def _train_baseline(name, inputs, opts, tcfg, dev, started):
    import torch

    from ..core.baselines import make_baseline
    from ..core.fitted_model import KIND_BASELINE, FittedModel
    from ..core.training import train

    subj = inputs.subject
    config = inputs.model_config(bottleneck=opts.bottleneck, hidden=opts.hidden)
    torch.manual_seed(opts.seed)
    module = make_baseline(name, subj.joint_coords(), config).to(dev)
    result = None
    for rec in train(
        module, inputs.features, inputs.responses, inputs.split, tcfg, started_at=started
    ):
        if rec["kind"] == "done":
            result = rec["result"]
        yield rec
    maps = module.maps()
    fitted = FittedModel(
        config=config.to_dict(),
        state={
            "coords": module.coords.cpu().numpy(),
            "beta": module.beta.detach().float().cpu().numpy(),
            "bias": module.bias.detach().float().cpu().numpy(),
        },
        **maps,
        **_subject_fields(inputs),
        history=result.history,
        scores={
            "r2_test": result.test_r2.astype(np.float32),
            "r_test": result.test_r.astype(np.float32),
        },
        summary={
            "r2_test_mean": _mean(result.test_r2),
            "r_test_mean": _mean(result.test_r),
            "val_score": float(result.val_score),
            "steps": int(result.steps),
            "epochs": int(result.epochs),
            "train_seconds": float(result.seconds),
            "stop_reason": result.stop_reason,
            "device": str(dev),
        },
        kind=KIND_BASELINE,
        extra={
            "baseline": {"method": name, "maps": list(module.shown_maps)},
            "dataset": inputs.dataset,
            "train_config": (result.config or tcfg).to_dict(),
        },
    )
    return fitted, module


def _subject_fields(inputs) -> dict:
    subj, split = inputs.subject, inputs.split
    roi = subj.roi if subj.roi is not None else np.zeros(subj.n_vertices, np.int64)
    return {
        "vertex_ids": subj.vertex_ids,
        "n_lh": subj.n_lh,
        "mesh": subj.mesh,
        "roi": roi,
        "roi_names": list(subj.roi_names),
        "backbone": dict(inputs.backbone),
        "split": {
            "seed": split.seed,
            "fractions": list(split.fractions),
            "train": split.train,
            "val": split.val,
            "test": split.test,
        },
    }


def _folds(inputs, n_folds: int = 5):
    """Ridge's cross-validation folds over the training rows, repeats of an image kept
    in one fold."""
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(inputs.image_index)[inputs.split.train]
    n = min(n_folds, len(np.unique(groups)))
    return list(GroupKFold(n_splits=n).split(np.zeros(len(groups)), groups=groups))


def _fit_ridge(inputs, opts) -> tuple[Any, Any]:
    from ..core.baselines import ridge_features, ridge_per_layer
    from ..core.fitted_model import KIND_BASELINE, FittedModel

    split, y = inputs.split, inputs.responses
    xs = [ridge_features(inputs.features, idx, opts.ridge_pool) for idx in
          (split.train, split.val, split.test)]  # fmt: skip
    res = ridge_per_layer(
        xs[0], y[split.train], xs[1], y[split.val], xs[2], y[split.test],
        alphas=opts.ridge_alphas, cv=_folds(inputs), n_components=opts.ridge_components,
        backend=opts.ridge_backend, blas_threads=opts.ridge_blas_threads,
    )  # fmt: skip
    n_v = len(res.best_layer)
    # layer map: each vertex's positive validation R² over layers, normalised (argmax =
    # best layer, confidence = how peaked); one-hot where no layer has R² > 0
    prof = np.clip(np.nan_to_num(res.val_r2.T, nan=0.0), 0, None)
    tot = prof.sum(1, keepdims=True)
    layer = np.where(tot > 0, prof / np.where(tot > 0, tot, 1), res.layer_profile())
    config = inputs.model_config(bottleneck=1, hidden=1)
    fitted = FittedModel(
        config=config.to_dict(),
        state={
            "coords": inputs.subject.joint_coords().astype(np.float32),
            "beta": np.zeros((n_v, 1), np.float32),
        },
        space=np.zeros((n_v, 2), np.float32),
        layer=layer.astype(np.float32),
        scale=np.zeros(n_v, np.float32),
        **_subject_fields(inputs),
        scores={
            "r2_test": res.test_r2.astype(np.float32),
            "r_test": res.test_r.astype(np.float32),
            "best_layer": res.best_layer.astype(np.float32),
            "alpha": res.alphas[res.best_layer, np.arange(n_v)].astype(np.float32),
        },
        summary={"r2_test_mean": _mean(res.test_r2), "r_test_mean": _mean(res.test_r)},
        kind=KIND_BASELINE,
        extra={
            "baseline": {
                "method": "ridge",
                "maps": ["layer"],
                "features": f"global token + local tokens average-pooled to "
                f"{opts.ridge_pool[0]}x{opts.ridge_pool[1]}, standardised, PCA to <= "
                f"{opts.ridge_components} (train)",
                "n_features": res.n_features,
                "alphas": list(opts.ridge_alphas),
                "best_layer_on": "validation R²",
            },
            "dataset": inputs.dataset,
        },
    )
    return fitted, res


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
                    fitted, ridge = _fit_ridge(inputs, opts)
                    module = None
                else:
                    gen = (_fit_factortopy if row["family"] != "baseline" else _train_baseline)(
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
    _write_tables(out, rows, per_roi, agreement, list(inputs.subject.roi_names), opts, tcfg)
    yield {"kind": "done", "rows": rows, "per_roi": per_roi, "agreement": agreement,
           "files": files}  # fmt: skip


def _family(name: str) -> str:
    if name == "factortopy":
        return "factortopy"
    return "ablation" if name in ABLATIONS else "baseline"


def _num(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _write_tables(out, rows, per_roi, agreement, roi_names, opts, tcfg) -> None:
    from ..core.atomic import atomic_path

    by = {(p["method"], p["roi"]): p for p in per_roi}
    fields = ["method", "family", "roi", "n", "r2", "r", "nn", "seconds", "steps",
              "ms_per_step", "peak_rss_mb", "rss_increase_mb", "status", "file"]  # fmt: skip
    with atomic_path(out / "comparison.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            for roi in ["all", *roi_names]:
                p = by.get((row["method"], roi))
                if p is None and roi != "all":
                    continue
                w.writerow({**row, **(p or {"roi": roi})})
    summary_cols = [("method", "method"), ("R² test", "r2"), ("r test", "r"),
                    ("noise-norm. %", "nn"), ("train s", "seconds"), ("steps", "steps"),
                    ("ms/step", "ms_per_step"), ("peak RSS MB", "peak_rss_mb"),
                    ("RSS increase MB", "rss_increase_mb"),
                    ("file", "file")]  # fmt: skip
    md = ["## Methods (test split)", "", markdown_table(rows, summary_cols), ""]
    for key, title in (("r2", "R²"), ("nn", "noise-normalised score (%)")):
        if key == "nn" and all(p["nn"] is None for p in per_roi):
            continue
        table = []
        for row in rows:
            t = {"method": row["method"]}
            for roi in ["all", *roi_names]:
                p = by.get((row["method"], roi))
                t[roi] = None if p is None else p[key]
            table.append(t)
        cols = [("method", "method")] + [(r, r) for r in ["all", *roi_names]]
        md += [f"## Test {title} per ROI", "", markdown_table(table, cols), ""]
    if agreement:
        maps = [k[: -len("_exact")] for k in agreement[0] if k.endswith("_exact")]
        cols = [("ROI", "roi"), ("n", "n"), ("truth mean layer", "truth_mean_layer")]
        for m in maps:
            cols += [(f"{m} exact", f"{m}_exact"), (f"{m} ±1", f"{m}_within1"),
                     (f"{m} mean layer", f"{m}_mean_layer")]  # fmt: skip
        md += ["## Layer maps against the truth (argmax / best layer)", "",
               markdown_table(agreement, cols), ""]  # fmt: skip
    failed = [r for r in rows if r.get("status") == "failed"]
    for r in failed:
        md.append(f"- {r['method']} failed: {r['error']}")
    md.append(
        f"Recipe per torch method: {json.dumps(_recipe_line(tcfg))}; bottleneck "
        f"{opts.bottleneck}, hidden {opts.hidden}, seed {opts.seed}."
    )
    with atomic_path(out / "comparison.md") as tmp:
        Path(tmp).write_text("\n".join(md) + "\n", encoding="utf-8")
    payload = {
        "rows": [{k: _num(v) for k, v in r.items()} for r in rows],
        "per_roi": [{k: _num(v) for k, v in p.items()} for p in per_roi],
        "agreement": agreement,
        "options": {
            "methods": list(opts.methods),
            "max_seconds": opts.max_seconds,
            "bottleneck": opts.bottleneck,
            "hidden": opts.hidden,
            "seed": opts.seed,
            "train": tcfg.to_dict(),
        },
    }
    with atomic_path(out / "comparison.json") as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=1, default=float), encoding="utf-8")


def _recipe_line(tcfg: TrainConfig) -> dict:
    keep = ("recipe", "max_seconds", "batch_size", "lr", "steps_per_epoch", "max_epochs")
    return {k: v for k, v in replace(tcfg).to_dict().items() if k in keep}
