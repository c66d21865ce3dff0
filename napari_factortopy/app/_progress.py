"""The command line's progress bars (tqdm on stderr)."""

from __future__ import annotations

import sys

__all__ = ["drain_training", "progress_bar"]


def progress_bar(total: float, desc: str, unit: str = "it"):
    """A tqdm bar on stderr that stays on screen when it closes."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True, file=sys.stderr)


def drain_training(gen, tcfg):
    """Consume a fit() generator with a progress bar; return the FittedModel."""
    seconds = tcfg.max_seconds
    total = seconds if seconds else tcfg.steps_per_epoch * tcfg.max_epochs
    bar = progress_bar(round(total), "train", "s" if seconds else "step")
    fitted = None
    try:
        for rec in gen:
            kind = rec["kind"]
            if kind in ("step", "validation"):
                bar.n = min(round(rec["elapsed"]), bar.total) if seconds else rec["step"]
                if kind == "step":
                    bar.set_postfix(
                        loss=f"{rec['loss']:.4f}",
                        reg=f"{rec['reg_strength']:.0%}",
                        epoch=rec["epoch"],
                    )
                else:
                    bar.set_postfix(
                        val_r2=f"{rec['val_score']:.4f}",
                        best=f"{rec['best_score']:.4f}",
                        epoch=rec["epoch"],
                    )
                bar.refresh()
            elif kind == "recipe":
                from ..core.config import recipe_settings

                c, info = rec["config"], rec["info"]
                bar.write(
                    f"auto recipe: {recipe_settings(c)} "
                    f"({info['step_seconds'] * 1e3:.0f} ms/step, "
                    f"~{info['planned_steps']} steps planned)"
                )
            elif kind == "diverged":
                bar.write(
                    f"training diverged at step {rec['step']} (loss {rec['loss']}); "
                    "stopping; the best checkpoints kept so far (if any) make the model"
                )
            elif kind == "calibration_plan":
                bar.write(rec["text"])
            elif kind == "calibrated":
                from ..core.calibration import calibration_line

                bar.write(f"calibration: {calibration_line(rec)}")
            elif kind == "soup":
                bar.write(
                    f"greedy soup of checkpoints {rec['members']}: "
                    f"validation R² {rec['val_score']:.4f}"
                )
            elif kind == "fitted":
                fitted = rec["model"]
    finally:
        bar.close()
    return fitted
