"""The demo pipeline: phantom subject → features → training → maps and recovery.

:func:`run_demo_pipeline` is one generator of progress records used by
``factortopy demo`` (and usable from a notebook or the napari sample data).
It writes ``model.ftopy``, ``truth.ftopy``, ``layer_map.png`` and ``recovery.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.atomic import atomic_path

__all__ = ["DemoOptions", "demo_recovery", "run_demo_pipeline", "write_layer_map_png"]


@dataclass(frozen=True)
class DemoOptions:
    """Sizes and budget of the demo.

    Attributes
    ----------
    n_vertices, n_images : int
        Phantom size (both hemispheres; stimuli).
    train_seconds : float
        Wall-clock training budget.
    bottleneck : int
        D of the fitted model. The CPU demo uses 32: the phantom's truth lives in 16
        aligned channels, and the gather cost grows with D.
    batch_size, steps_per_epoch, lr, reg_decay_steps
        The CPU demo's recipe: batch 16, learning rate 2e-3 and a 1000-step regulariser
        decay reach the phantom's targets within a few minutes on 2 cores (the
        paper's defaults, batch 8 and 1e-3 over 6000 steps, need about 4× longer).
    max_epochs : int
        Cap on validations (the budget usually stops training first; a test caps the
        epochs instead, so the result does not depend on the machine's speed).
    device : str
    seed : int
    """

    n_vertices: int = 2000
    n_images: int = 2000
    train_seconds: float = 180.0
    bottleneck: int = 32
    batch_size: int = 16
    steps_per_epoch: int = 250
    lr: float = 2e-3
    reg_decay_steps: int = 1000
    max_epochs: int = 1000
    device: str = "auto"
    seed: int = 0


def demo_recovery(fitted, phantom, seconds: float) -> dict:
    """How well the demo's model recovers the phantom's truth (``recovery.json``).

    :func:`napari_factortopy.app.recovery.recovery_report` with the demo's own names
    kept: ``layer_agreement`` (= ``layer_exact``, the share of vertices whose argmax
    layer is the truth's), ``rf_error_median`` (grid units of [−1, 1]),
    ``r2_test_mean``, ``r2_truth_mean``, ``r2_ratio``, ``hierarchy_slope``/
    ``_intercept``/``_top`` and their ``_truth`` values, ``scale_error_mean``,
    ``per_roi`` and ``seconds``.

    Parameters
    ----------
    fitted : FittedModel
    phantom : PhantomSubject
    seconds : float
        Wall time of the demo so far.
    """
    from .recovery import recovery_report

    rep = recovery_report(fitted, phantom)
    rep["layer_agreement"] = rep["layer_exact"]
    for suffix, hs in (("", rep["hierarchy"]), ("_truth", rep["hierarchy_truth"])):
        rep[f"hierarchy_intercept{suffix}"] = hs["intercept"]
        rep[f"hierarchy_top{suffix}"] = hs["top"]
    rep["seconds"] = float(seconds)
    return rep


def write_layer_map_png(
    path: Path, models: list[tuple[str, object]], width_px: int = 2400
) -> None:
    """Layer maps (argmax colour × confidence brightness) of both hemispheres.

    Parameters
    ----------
    path : Path
        PNG to write (atomically).
    models : list of (title, FittedModel)
        One figure row per model; columns: left and right hemisphere, posterior
        and medial views of the inflated fsaverage5 surface.
    """
    from ..core.colours import layer_legend, layer_rgba, paint_surface
    from ..data.surfaces import fsaverage5_mesh, fsaverage5_morph
    from ..scene.render import surface_figure

    meshes = {h: fsaverage5_mesh("inflated", h) for h in ("lh", "rh")}
    curv = {h: fsaverage5_morph("curv", h) for h in ("lh", "rh")}
    rows = []
    n_layers = models[0][1].n_layers
    for title, m in models:
        rgba = layer_rgba(m.layer)
        row = []
        for view in ("posterior", "medial"):
            for hemi, rows_h in m.hemi_slices().items():
                mesh = meshes[hemi]
                colours = paint_surface(
                    mesh.n_vertices, m.vertex_ids[rows_h], rgba[rows_h], curv[hemi]
                )
                row.append(
                    {
                        "vertices": mesh.vertices,
                        "faces": mesh.faces,
                        "rgba": colours,
                        "view": view,
                        "hemi": hemi,
                        "title": f"{title}: {hemi} {view}",
                    }
                )
        rows.append(row)
    surface_figure(
        rows,
        legend=layer_legend(n_layers),
        legend_title="layer map",
        legend_extent=(0.5, n_layers + 0.5, 0, 1),
        width_px=width_px,
        out_path=path,
    )


def run_demo_pipeline(out: str | Path, options: DemoOptions | None = None) -> Iterator[dict]:
    """Build the phantom, train FactorTopy on it, write the outputs.

    Yields
    ------
    dict
        ``stage`` = ``"surface"``/``"extract"``/``"responses"`` (phantom build),
        ``"train"`` (with the training ``record``), ``"message"``, and finally
        ``"done"`` with ``recovery`` (the dict written to ``recovery.json``).
    """
    from ..core.config import TrainConfig
    from ..core.estimator import fit
    from ..core.fitted_model import FittedModel
    from ..core.runtime import resolve_device
    from ..data.phantom import PhantomConfig, build_phantom
    from .inputs import training_inputs

    opts = options or DemoOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    dev = resolve_device(opts.device)
    pcfg = PhantomConfig(n_vertices=opts.n_vertices, n_images=opts.n_images, seed=opts.seed)
    subject_ph = None
    for rec in build_phantom(out / "phantom", pcfg, device=dev):
        if rec["stage"] == "done":
            subject_ph = rec["subject"]
        else:
            yield rec
    inputs = training_inputs(phantom=out / "phantom", split_seed=opts.seed, device=dev)
    split = inputs.split
    tcfg = TrainConfig(
        lr=opts.lr,
        batch_size=opts.batch_size,
        steps_per_epoch=opts.steps_per_epoch,
        max_seconds=opts.train_seconds,
        max_epochs=opts.max_epochs,
        reg_decay_steps=opts.reg_decay_steps,
        patience=10,
        seed=opts.seed,
    )
    fitted = None
    for rec in fit(
        inputs.features,
        inputs.responses,
        inputs.subject,
        split,
        config=inputs.model_config(bottleneck=opts.bottleneck),
        train_config=tcfg,
        backbone=inputs.backbone,
        device=dev,
        seed=opts.seed,
        extra={"demo": asdict(opts), "dataset": inputs.dataset},
        noise_ceiling=inputs.noise_ceiling,
        noise_ceiling_source=inputs.noise_ceiling_source,
    ):
        if rec["kind"] == "fitted":
            fitted = rec["model"]
        else:
            yield {"stage": "train", "record": rec}
    recovery = demo_recovery(fitted, subject_ph, time.perf_counter() - t0)
    fitted.summary["recovery"] = {k: v for k, v in recovery.items() if k != "per_roi"}
    fitted.save(out / "model.ftopy")
    truth = FittedModel.load(out / "phantom" / "truth.ftopy")
    truth.save(out / "truth.ftopy")
    write_layer_map_png(out / "layer_map.png", [("fitted", fitted), ("truth", truth)])
    recovery["seconds"] = time.perf_counter() - t0
    with atomic_path(out / "recovery.json") as tmp:
        tmp.write_text(json.dumps(recovery, indent=2))
    yield {"stage": "done", "recovery": recovery}
