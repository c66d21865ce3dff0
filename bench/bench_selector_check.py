"""What the degenerate-selector check says about model files (issues 21 and 23).

For each model file given: its state, steps, test R², and the three numbers
:func:`napari_factortopy.core.selector_check.assess_selectors` judges (space spread, mean
layer confidence, the top argmax layer's share), the verdict and the time the check
takes. With ``--truth`` (a phantom's ``truth.ftopy`` beside each model, found as
``<model folder>/phantom/truth.ftopy``) also how well the argmax layer is recovered, so
the verdict can be read against a known answer::

    .venv/bin/python bench/bench_selector_check.py WORK/*.ftopy [--truth]

Prints a Markdown table (BENCHMARKS.md "Degenerate selectors").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_factortopy.core.fitted_model import FittedModel
from napari_factortopy.core.selector_check import model_selector_check


def _recovery(model: FittedModel, path: Path) -> str:
    truth_path = path.parent / "phantom" / "truth.ftopy"
    if not truth_path.is_file():
        return "—"
    truth = FittedModel.load(truth_path)
    if not np.array_equal(truth.vertex_ids, model.vertex_ids):
        return "—"
    a, b = model.layer.argmax(1), truth.layer.argmax(1)
    return f"{(a == b).mean():.2f} / {(np.abs(a - b) <= 1).mean():.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--truth", action="store_true", help="compare with phantom/truth.ftopy")
    args = p.parse_args()
    head = (
        "| model | vertices | state | steps | test R² | space spread | layer conf | "
        "top layer share | verdict | check ms |"
    )
    if args.truth:
        head += " exact / ±1 vs truth |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for path in args.models:
        m = FittedModel.load(path)
        t0 = time.perf_counter()
        check = model_selector_check(m)
        ms = 1000 * (time.perf_counter() - t0)
        if check is None:
            continue
        s = m.summary
        state = (s.get("convergence") or {}).get("state", "?")
        kinds = ", ".join(f["kind"] for f in check["findings"]) or "fine"
        r2 = s.get("r2_test_mean")
        row = (
            f"| {path.name} | {m.n_vertices} | {state} | {s.get('steps', '?')} | "
            f"{'—' if r2 is None else f'{r2:.3f}'} | {check['space_spread']:.3f} | "
            f"{check['layer_confidence']:.3f} | {check['top_layer_share']:.2f} | {kinds} | "
            f"{ms:.0f} |"
        )
        if args.truth:
            row += f" {_recovery(m, path)} |"
        print(row)


if __name__ == "__main__":
    main()
