"""The hierarchy slope's one wording (scene.tables.slope_parts / slope_line), shared by
``factortopy info``, figures and the ROI table: numbers against a plain numpy fit and a
plain loop, the truth, groups, unfinished models, and why a model has no slope."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from napari_factortopy.scene.tables import slope_line, slope_parts

LEVEL = {"V1": 1, "V2/V3": 2, "OPA": 3, "EBA": 4, "FFA": 0}
NAMES = ["V1", "V2/V3", "OPA", "EBA", "FFA"]


def _model(seed: int = 0, v: int = 300, n_layers: int = 8, **fields) -> SimpleNamespace:
    """What the formatter reads of a model: layer weights rising with the ROI's level,
    plus noise and a far tail; ROI labels 0..5 (0 and FFA have no level)."""
    rng = np.random.default_rng(seed)
    roi = rng.integers(0, len(NAMES) + 1, size=v)
    centre = np.array([0] + [LEVEL[n] for n in NAMES])[roi] * 1.6 + rng.normal(0, 1, v)
    logits = -0.5 * (np.arange(n_layers)[None, :] - centre[:, None]) ** 2
    layer = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    layer = 0.9 * layer + 0.1 * rng.dirichlet(np.ones(n_layers), size=v)
    base = dict(
        layer=layer, roi=roi, roi_names=list(NAMES), kind="factortopy", summary={}, extra={}
    )
    return SimpleNamespace(**{**base, **fields})


def _plain(m) -> dict:
    """The slope, the mode-centred slope and the far weight, with numpy and loops."""
    xs, ys, ym, far = [], [], [], []
    n_layers = m.layer.shape[1]
    for v in range(len(m.roi)):
        name = m.roi_names[m.roi[v] - 1] if m.roi[v] > 0 else None
        if not LEVEL.get(name):
            continue
        w = m.layer[v]
        xs.append((LEVEL[name] - 1) / 3)
        ys.append(sum(w[k] * k for k in range(n_layers)) / (n_layers - 1))
        a = int(np.argmax(w))
        near = [k for k in range(n_layers) if abs(k - a) <= 1]
        ym.append(sum(w[k] * k for k in near) / sum(w[k] for k in near) / (n_layers - 1))
        far.append(sum(w[k] for k in range(n_layers) if k not in near))
    return {
        "slope": np.polyfit(xs, ys, 1)[0],
        "mode": np.polyfit(xs, ym, 1)[0],
        "far": 100 * np.mean(far),
    }


PATTERN = (
    r"hierarchy slope ([-\d.]+); interval \[([-\d.]+), ([-\d.]+)\]; "
    r"mode-centred ([-\d.]+); far weight ([\d.]+) %"
)


def test_numbers_equal_a_plain_fit_and_the_truth_and_unfinished_note_follow():
    m = _model(
        summary={
            "recovery": {"hierarchy_slope_truth": 0.7312},
            "convergence": {
                "state": "not_converged",
                "line": "NOT converged: stopped by the time budget with the regulariser at 80 %",
            },
        }
    )
    want = _plain(m)
    line = slope_line(m)
    got = re.match(PATTERN, line)
    assert got, line
    slope, lo, hi, mode, far = map(float, got.groups())
    assert slope == pytest.approx(want["slope"], abs=5e-4)
    assert mode == pytest.approx(want["mode"], abs=5e-4)
    assert far == pytest.approx(want["far"], abs=0.05)
    assert lo <= min(slope, mode) and hi >= max(slope, mode) and hi - lo < 0.5
    assert 0.3 < want["slope"] < want["mode"]  # the test model has a hierarchy and a tail
    assert line.endswith(
        "; truth 0.731; UNFINISHED MODEL: NOT converged: stopped by the time budget with "
        "the regulariser at 80 %"
    ), line
    # the parts are the line's pieces; two decimals round the same numbers (figures)
    assert "; ".join(slope_parts(m)) == line
    short = slope_parts(m, 2, unfinished=False)
    assert short[0] == f"hierarchy slope {want['slope']:.2f}" and short[-1] == "truth 0.73"
    assert not any("UNFINISHED" in p for p in short)


def test_a_converged_model_without_a_truth_shows_only_its_numbers():
    m = _model(summary={"convergence": {"state": "converged", "line": "converged (…)"}})
    assert len(slope_parts(m)) == 4 and "truth" not in slope_line(m)


def test_group_and_truth_files_say_what_they_are():
    g = _model(
        kind="group",
        summary={"group": {"hierarchy": {"slope_lo": 0.61, "slope_hi": 0.7749, "n_models": 3}}},
    )
    assert slope_parts(g)[-1] == "group interval across 3 models [0.610, 0.775]"
    t = _model(kind="phantom-truth")
    assert slope_parts(t)[-1] == "this file is a phantom's truth"


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        (dict(roi_names=[], roi=np.zeros(300, np.int64)), "the model has no ROI names"),
        (dict(roi_names=["FFA", "PPA"], roi=np.arange(300) % 3), "fewer than two hierarchy"),
        (
            dict(roi=np.where(np.arange(300) % 2, 1, 5)),
            "fewer than two hierarchy levels (found [1])",
        ),
        (
            dict(kind="baseline", extra={"baseline": {"maps": ["space"]}}),
            "this baseline has no layer map",
        ),
    ],
)
def test_without_a_slope_one_short_line_says_why(fields, why):
    parts = slope_parts(_model(**fields))
    assert len(parts) == 1 and parts[0].startswith("no hierarchy slope: "), parts
    assert why in parts[0] and len(parts[0]) < 100, parts


def test_the_figure_legend_shows_the_same_parts():
    from napari_factortopy.scene.figure import _slope_note

    m = _model(summary={"recovery": {"hierarchy_slope_truth": 0.7}})
    note = _slope_note(SimpleNamespace(model=m), "layer")
    assert note.split("\n")[1:] == slope_parts(m, 2, unfinished=False)
    g = _model(summary={"group": {"hierarchy": {"slope_lo": 0.6, "slope_hi": 0.7, "n_models": 3}}})
    lines = _slope_note(SimpleNamespace(model=g), "layer").split("\n")[1:]
    assert max(map(len, lines)) <= 22 and " ".join(lines) == " ".join(
        slope_parts(g, 2, unfinished=False)
    )
    assert _slope_note(SimpleNamespace(model=m), "score") == ""
    assert _slope_note(SimpleNamespace(model=_model(roi_names=[])), "layer") == ""
