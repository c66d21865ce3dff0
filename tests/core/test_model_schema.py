"""Bad model files: every mutation of a valid file ends in ModelFileError (or is harmless).

200 seeded mutations of three kinds: a flipped bit anywhere in the file, a truncation,
and a meaning-changing edit (a field retyped, removed or put out of range) saved as a
well-formed file. The loader must raise its own error naming the file, never a
TypeError/KeyError/IndexError, and must never accept a mutation that changes meaning
(the one exception, by design: non-finite selectors load and are flagged in
``FittedModel.missing``).
"""

from __future__ import annotations

import copy
import os
import stat

import numpy as np
import pytest

from napari_factortopy.core.fitted_model import FSAVERAGE_SIZES, FittedModel
from napari_factortopy.core.modelfile import ModelFileError, load_ftopy, save_ftopy

N_MUTATIONS = 200
V, N_LH, L = 12, 5, 2


def _model() -> FittedModel:
    torch = pytest.importorskip("torch")
    from napari_factortopy.core.config import FactorTopyConfig
    from napari_factortopy.core.model import FactorTopy

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    cfg = FactorTopyConfig((3, 5), (2, 3), bottleneck=4, hidden=6, n_freqs=2)
    m = FactorTopy(rng.normal(size=(V, 3)), cfg)
    torch.nn.init.normal_(m.layer_mlp[-1].weight)
    return FittedModel.from_module(
        m,
        vertex_ids=np.r_[np.arange(N_LH) * 3, np.arange(V - N_LH) * 2],
        n_lh=N_LH,
        mesh="fsaverage5",
        roi=np.r_[np.ones(6, int), np.full(6, 2)],
        roi_names=["A", "B"],
        backbone={"name": "toy", "layer_names": ["a", "b"], "widths": [3, 5]},
        split={
            "seed": 1,
            "fractions": [0.8, 0.1, 0.1],
            "train": np.arange(8),
            "val": np.array([8]),
            "test": np.array([9]),
        },
        history=[{"epoch": 1, "val_score": 0.5}],
        scores={"r2_test": rng.random(V).astype(np.float32)},
        summary={
            "r2_test_mean": 0.4,
            "steps": 10,
            "convergence": {"state": "converged", "line": "converged after 10 steps"},
            "ensemble": {
                "seeds": [0, 1],
                "weights_from_seed": 0,
                "layer_agreement_mean": 0.9,
                "roi": [{"roi": "A", "layer_agreement": 0.8, "space_spread": 0.1}],
            },
        },
        extra={"note": "x", "recipe": {"name": "paper"}},
    )


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    path = _model().save(tmp_path_factory.mktemp("valid") / "m.ftopy")
    tensors, meta = load_ftopy(path)
    return path, path.read_bytes(), tensors, meta


def _same_model(a: FittedModel, b: FittedModel) -> bool:
    arrays = ("space", "layer", "scale", "vertex_ids", "roi")
    same = all(np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True) for k in arrays)
    same &= a.state.keys() == b.state.keys() and a.scores.keys() == b.scores.keys()
    same &= all(np.array_equal(a.state[k], b.state[k], equal_nan=True) for k in a.state)
    same &= all(np.array_equal(a.scores[k], b.scores[k], equal_nan=True) for k in a.scores)
    for k in ("config", "n_lh", "mesh", "roi_names", "backbone", "history", "summary", "kind"):
        same &= getattr(a, k) == getattr(b, k)
    return bool(same)


# --------------------------------------------------------------- mutations

_WRONG = {
    int: ["x", 3.5, True, None, [], {}, "7"],
    float: ["x", True, None, [], {}, "1.0"],
    str: [3, 3.5, True, None, [], {}],
    list: ["x", 3, None, {}, True],
    dict: ["x", 3, None, [], True],
}
# (path in the metadata, whether it may be removed)
_FIELDS = [
    (("kind",), True),
    (("config",), True),
    (("config", "widths"), True),
    (("config", "widths", 0), False),
    (("config", "grid"), True),
    (("config", "grid", 1), False),
    (("config", "bottleneck"), True),
    (("config", "hidden"), True),
    (("config", "n_freqs"), True),
    (("config", "max_period"), True),
    (("subject",), True),
    (("subject", "mesh"), True),
    (("subject", "n_lh"), True),
    (("subject", "roi_names"), True),
    (("subject", "roi_names", 1), False),
    (("backbone",), True),
    (("backbone", "name"), True),
    (("backbone", "layer_names"), False),
    (("backbone", "layer_names", 0), False),
    (("backbone", "widths"), False),
    (("split",), True),
    (("split", "seed"), False),
    (("split", "fractions"), False),
    (("history",), True),
    (("history", 0), False),
    (("summary",), True),
    (("summary", "steps"), False),
    (("summary", "convergence"), False),
    (("summary", "convergence", "line"), False),
    (("summary", "ensemble", "seeds"), True),
    (("summary", "ensemble", "roi", 0, "roi"), True),
    (("extra",), True),
    (("extra", "recipe"), False),
    (("extra", "recipe", "name"), False),
    (("created",), False),
]


def _get(meta, path):
    for k in path:
        meta = meta[k]
    return meta


def _retype(rng, tensors, meta):
    path, _ = _FIELDS[rng.integers(len(_FIELDS))]
    old = _get(meta, path)
    pool = _WRONG[type(old)]
    _get(meta, path[:-1])[path[-1]] = pool[rng.integers(len(pool))]
    return f"retype {path}"


def _remove(rng, tensors, meta):
    removable = [p for p, ok in _FIELDS if ok]
    path = removable[rng.integers(len(removable))]
    del _get(meta, path[:-1])[path[-1]]
    return f"remove {path}"


def _drop_tensor(rng, tensors, meta):
    names = ["selectors/space", "selectors/layer", "selectors/scale", "subject/vertex_ids",
             "subject/roi", "state/coords", "state/beta"]  # fmt: skip
    name = names[rng.integers(len(names))]
    del tensors[name]
    return f"drop {name}"


def _retype_tensor(rng, tensors, meta):
    name = sorted(tensors)[rng.integers(len(tensors))]
    arr = tensors[name]
    new = arr.astype(np.float32) if arr.dtype.kind in "iub" else arr.astype(np.int64)
    tensors[name] = new if arr.dtype.kind in "iub" else (arr * 10).astype(np.int64) + 7
    return f"dtype of {name}"


def _reshape_tensor(rng, tensors, meta):
    name = sorted(tensors)[rng.integers(len(tensors))]
    arr = tensors[name]
    if arr.ndim and arr.shape[0] > 1 and rng.random() < 0.5:
        tensors[name] = arr[:-1]
    else:
        tensors[name] = np.concatenate([arr, arr[..., :1]], axis=-1) if arr.ndim else arr[None]
    return f"shape of {name}"


def _out_of_range(rng, tensors, meta):
    k = int(rng.integers(12))
    i = int(rng.integers(V))
    t = tensors
    if k == 0:
        t["subject/vertex_ids"][i] = FSAVERAGE_SIZES["fsaverage5"] + int(rng.integers(5))
    elif k == 1:
        t["subject/vertex_ids"][i] = -1 - int(rng.integers(5))
    elif k == 2:  # a repeated vertex in one hemisphere
        t["subject/vertex_ids"][1] = t["subject/vertex_ids"][0]
    elif k == 3:
        t["subject/roi"][i] = 3 + int(rng.integers(4))
    elif k == 4:
        t["split/train"][0] = -1
    elif k == 5:
        t["split/test"] = np.array([8])  # overlaps split/val
    elif k == 6:
        t["split/train"][1] = t["split/train"][0]
    elif k == 7:
        t["selectors/space"][i, int(rng.integers(2))] = 1.5
    elif k == 8:
        t["selectors/layer"][i] *= 2
    elif k == 9:
        t["selectors/scale"][i] = [-0.5, 1.5][int(rng.integers(2))]
    elif k == 10:
        t["state/local_align.0.weight"].flat[0] = np.nan
    else:
        meta["subject"]["n_lh"] = V + 1 + int(rng.integers(3))
    return f"out of range #{k}"


def _unexpected_tensor(rng, tensors, meta):
    name = ["state/extra_weight", "junk", "scores/r2_test"][int(rng.integers(3))]
    tensors[name] = np.zeros(V + 1, np.float32)
    return f"unexpected {name}"


_SEMANTIC = [_retype, _remove, _drop_tensor, _retype_tensor, _reshape_tensor, _out_of_range,
             _unexpected_tensor]  # fmt: skip


def mutation_trials(path0, raw, tensors0, meta0, target, n=N_MUTATIONS, seed=2026):
    """Replay the seeded mutations of a valid file; yield one row per trial.

    Rows: ``trial``, ``kind`` (flip / truncate / semantic), ``what``, ``verdict``
    (``"refused"`` or ``"accepted"``), ``message`` (the loader's, or ""), ``same``
    (an accepted file loads the unchanged model). ``scripts/bad_input_matrix.py``
    writes these rows into docs/BAD_INPUT_MATRIX.md.
    """
    original = FittedModel.load(path0)
    rng = np.random.default_rng(seed)
    for trial in range(n):
        kind = ["flip", "truncate", "semantic", "semantic"][int(rng.integers(4))]
        if kind == "flip":
            data = bytearray(raw)
            pos = int(rng.integers(len(data)))
            data[pos] ^= 1 << int(rng.integers(8))
            target.write_bytes(bytes(data))
            what = f"bit flip at byte {pos}"
        elif kind == "truncate":
            cut = int(rng.integers(len(raw)))
            target.write_bytes(raw[:cut])
            what = f"truncated to {cut} bytes"
        else:
            tensors = {k: v.copy() for k, v in tensors0.items()}
            meta = copy.deepcopy(meta0)
            what = _SEMANTIC[int(rng.integers(len(_SEMANTIC)))](rng, tensors, meta)
            save_ftopy(target, tensors, meta)
        row = {"trial": trial, "kind": kind, "what": what}
        try:
            loaded = FittedModel.load(target)
        except ModelFileError as exc:
            yield {**row, "verdict": "refused", "message": str(exc), "same": False}
            continue
        yield {**row, "verdict": "accepted", "message": "", "same": _same_model(loaded, original)}


def test_every_mutation_is_refused_by_the_loader(valid, tmp_path):
    path0, raw, tensors0, meta0 = valid
    target = tmp_path / "mutant.ftopy"
    counts = {"flip": 0, "truncate": 0, "semantic": 0, "harmless": 0}
    for row in mutation_trials(path0, raw, tensors0, meta0, target):
        counts[row["kind"]] += 1
        if row["verdict"] == "refused":
            assert str(target) in row["message"], row
            continue
        # Accepted: only if nothing that means something changed (e.g. the bit flip
        # hit the name of the optional "digest" key).
        assert row["same"], f"mutation {row['trial']} ({row['what']}) was accepted"
        counts["harmless"] += 1
    assert counts["harmless"] <= 3, counts
    assert min(counts["flip"], counts["truncate"], counts["semantic"]) > 20, counts


def test_non_finite_selectors_load_and_are_flagged(valid, tmp_path):
    _, _, tensors0, meta = valid
    tensors = {k: v.copy() for k, v in tensors0.items()}
    tensors["selectors/layer"][3] = np.nan
    tensors["selectors/space"][7, 0] = np.inf
    tensors["state/beta"][9, 1] = np.nan
    p = save_ftopy(tmp_path / "nan.ftopy", tensors, meta)
    m = FittedModel.load(p)
    assert np.flatnonzero(m.missing).tolist() == [3, 7, 9]
    assert not _model().missing.any()


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda t, m: m["subject"].__setitem__("n_lh", 5.0), "subject['n_lh']: expected an int"),
        (lambda t, m: m["config"].__setitem__("widths", "35"), "config['widths']"),
        (lambda t, m: m.__setitem__("backbone", ["toy"]), "metadata['backbone']"),
        (lambda t, m: m["subject"].__setitem__("mesh", 5), "subject['mesh']"),
        (
            lambda t, m: t["subject/vertex_ids"].__setitem__(0, 10242),
            "lh ids must lie in 0..10241 (mesh fsaverage5), found [10242]",
        ),
        (
            lambda t, m: t.__setitem__("state/beta", t["state/beta"][:-1]),
            "tensor 'state/beta': expected shape (12, 4), found (11, 4)",
        ),
        (
            lambda t, m: t.__setitem__("split/val", np.array([3])),
            "tensor 'split/val': shares indices with split/train",
        ),
        (lambda t, m: t["subject/roi"].__setitem__(0, 9), "labels must lie in 0..2"),
        (  # would be a format-code error in `factortopy info`
            lambda t, m: m["summary"]["ensemble"]["roi"][0].__setitem__("roi", None),
            "summary['ensemble']['roi'][0]['roi']: expected the ROI name (str), found None",
        ),
        (
            lambda t, m: m["summary"]["ensemble"]["roi"][0].__setitem__("scale_sd", "0.1"),
            "summary['ensemble']['roi'][0]['scale_sd']: expected a number or null",
        ),
        (lambda t, m: m["extra"].__setitem__("recipe", "paper"), "extra['recipe']"),
        (  # with the row count recorded, indices beyond it are out of range
            lambda t, m: m["split"].__setitem__("n", 9),
            "tensor 'split/test': indices must lie in 0..8, found 9..9",
        ),
    ],
)
def test_messages_name_the_file_and_the_field(valid, tmp_path, edit, fragment):
    _, _, tensors0, meta0 = valid
    tensors = {k: v.copy() for k, v in tensors0.items()}
    meta = copy.deepcopy(meta0)
    edit(tensors, meta)
    p = save_ftopy(tmp_path / "bad.ftopy", tensors, meta)
    with pytest.raises(ModelFileError) as info:
        FittedModel.load(p)
    assert str(p) in str(info.value) and fragment in str(info.value), str(info.value)


def test_fsaverage_sizes_match_the_surfaces_table():
    from napari_factortopy.data.surfaces import MESH_SIZES

    assert {k: MESH_SIZES[k] for k in FSAVERAGE_SIZES} == dict(FSAVERAGE_SIZES)


def test_display_only_model_loads_but_cannot_run(valid, tmp_path):
    _, _, tensors0, meta = valid
    tensors = {k: v for k, v in tensors0.items() if k != "state/space_mlp.0.weight"}
    m = FittedModel.load(save_ftopy(tmp_path / "d.ftopy", tensors, meta))
    with pytest.raises(ValueError, match=r"space_mlp\.0\.weight"):
        m.to_module()


def test_model_files_honour_the_umask(valid, tmp_path):
    model = FittedModel.load(valid[0])
    old = os.umask(0o027)
    try:
        p = model.save(tmp_path / "u.ftopy")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    old = os.umask(0o002)
    try:
        p = model.save(tmp_path / "u.ftopy")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o664
