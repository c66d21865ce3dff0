"""The `factortopy` command end to end on a tiny phantom (outputs checked)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_factortopy.app.cli import main
from napari_factortopy.core.fitted_model import FittedModel


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rc = main(
        [
            "demo",
            "--out",
            str(out),
            "--no-gui",
            "--n-vertices",
            "160",
            "--n-images",
            "80",
            "--train-seconds",
            "20",  # 8 s was refused as too short for one validation on a loaded machine
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    return out


def test_demo_writes_model_figure_and_recovery(demo_dir):
    rec = json.loads((demo_dir / "recovery.json").read_text())
    for key in (
        "layer_agreement",
        "rf_error_median",
        "r2_test_mean",
        "r2_truth_mean",
        "hierarchy_slope",
        "hierarchy_slope_truth",
        "seconds",
    ):
        assert np.isfinite(rec[key]), key
    assert 0 <= rec["layer_agreement"] <= 1
    # the truth's slope follows from its design: levels at blocks 2, 5, 8, 11 of 16
    assert rec["hierarchy_slope_truth"] == pytest.approx(0.6, abs=0.01)
    m = FittedModel.load(demo_dir / "model.ftopy")
    assert m.n_vertices == 160 and m.n_lh == 80 and m.n_layers == 16
    assert m.roi_names == ["V1", "V2/V3", "OPA", "EBA"]
    # recovery numbers are recomputed from the saved model and truth
    t = FittedModel.load(demo_dir / "truth.ftopy")
    agree = (m.layer.argmax(1) == t.layer.argmax(1)).mean()
    assert rec["layer_agreement"] == pytest.approx(agree)
    rf = np.median(np.linalg.norm(m.space - t.space, axis=1))
    assert rec["rf_error_median"] == pytest.approx(rf, rel=1e-5)
    assert rec["r2_test_mean"] == pytest.approx(float(np.nanmean(m.scores["r2_test"])))
    img = Image.open(demo_dir / "layer_map.png")
    assert img.width == 2400 and img.height > 600


def test_info_summarises(demo_dir, capsys):
    assert main(["info", str(demo_dir / "model.ftopy")]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0: 16 layers" in out and "V2/V3" in out and "hierarchy" in out
    # the slope printed from ROI names (V2/V3 is level 2) is the demo's, over all 4 levels
    rec = json.loads((demo_dir / "recovery.json").read_text())
    assert f"slope a={rec['hierarchy_slope']:.3f}" in out
    # beside it the mode-centred slope, recomputed here with a plain loop over vertices
    import re

    m = FittedModel.load(demo_dir / "model.ftopy")
    from napari_factortopy.core.analyses import hierarchy_levels

    levels = hierarchy_levels(m.roi, m.roi_names)
    xs, ys = [], []
    for v in np.flatnonzero(levels > 0):
        w = np.asarray(m.layer[v], float)
        a = int(w.argmax())
        near = [k for k in range(len(w)) if abs(k - a) <= 1]
        ys.append(sum(w[k] * k for k in near) / sum(w[k] for k in near) / (len(w) - 1))
        xs.append((levels[v] - 1) / 3)
    want = np.polyfit(xs, ys, 1)[0]
    got = re.search(r"interval \[([-\d.]+), ([-\d.]+)\]; mode-centred ([-\d.]+)", out)
    assert got, out
    lo, hi, mode = map(float, got.groups())
    assert mode == pytest.approx(want, abs=5e-4)
    assert lo <= min(mode, rec["hierarchy_slope"]) + 5e-4
    assert hi >= max(mode, rec["hierarchy_slope"]) - 5e-4
    # the line is the ROI table's (scene.tables.slope_line), with the demo's truth
    from napari_factortopy.scene.tables import slope_line

    assert f"              {slope_line(m)}\n" in out
    assert f"; truth {rec['hierarchy_slope_truth']:.3f}" in slope_line(m)
    # each ROI row's argmax layer is the most voted layer, counted 1-based (the slider's
    # and the legends' numbering; it printed the 0-based index), by a plain loop
    # and its confidence column the mean of 1 − H(π)/log L over the ROI's vertices
    head = next(line for line in out.splitlines() if line.startswith("  ROI "))
    col = 3 + ("NC score" in head)  # ROI, n, R², [NC], argmax layer, scale, confidence
    for k, name in enumerate(m.roi_names, start=1):
        votes, conf = {}, []
        for v in range(m.n_vertices):
            if m.roi[v] == k and np.isfinite(m.layer[v]).all():
                a = int(np.argmax(m.layer[v])) + 1
                votes[a] = votes.get(a, 0) + 1
                p = [float(x) for x in m.layer[v] if x > 0]
                conf.append(1 + sum(x * np.log(x) for x in p) / np.log(m.n_layers))
        if votes:
            row = next(line for line in out.splitlines() if line.startswith(f"  {name} "))
            cells = row.split()
            assert int(cells[col]) == max(sorted(votes), key=votes.get), row
            assert float(cells[col + 2]) == pytest.approx(np.mean(conf), abs=0.006), row


def test_info_writes_the_roi_table_as_csv_with_its_sidecar(demo_dir, tmp_path, capsys):
    """`info --roi-csv`: the ROI table panel's CSV and sidecar without a display; the
    numbers against a plain loop over the vertices; a score the model lacks is refused
    naming the file and what it has, and writes nothing."""
    import csv

    from napari_factortopy.core.analyses import confidence_note

    path = demo_dir / "model.ftopy"
    out = tmp_path / "tables" / "rois.csv"
    assert main(["info", str(path), "--roi-csv", str(out), "--score", "r_test"]) == 0
    assert f"wrote {out} (4 ROIs)" in capsys.readouterr().out
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    head = rows[0]
    assert head[:3] == ["ROI", "vertices", "mean r (test)"] and "warning" not in head
    m = FittedModel.load(path)
    for row in rows[1:]:
        k = m.roi_names.index(row[0]) + 1
        members = [v for v in range(m.n_vertices) if m.roi[v] == k]
        fitted = [v for v in members if np.isfinite(m.layer[v]).all()]
        assert int(row[1]) == len(members)
        want = sum(float(m.scores["r_test"][v]) for v in fitted) / len(fitted)
        assert float(row[2]) == pytest.approx(want, rel=1e-9)
    side = json.loads((tmp_path / "tables" / "rois.json").read_text())
    assert side["Model"] == str(path)
    assert side["mean confidence"]["Caveat"] == confidence_note()

    # without --score: the score roi_rows averages by default, named in the header
    assert main(["info", str(path), "--roi-csv", str(tmp_path / "default.csv")]) == 0
    with open(tmp_path / "default.csv", newline="") as f:
        assert next(csv.reader(f))[2] == "mean R² (test)"

    bad = tmp_path / "bad.csv"
    assert main(["info", str(path), "--roi-csv", str(bad), "--score", "r2_holdout"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: no score 'r2_holdout' in the model (it has: " in err
    assert not bad.exists() and not bad.with_suffix(".json").exists()


def test_info_says_what_per_roi_confidence_can_say(demo_dir, capsys):
    """Under the ROI rows of a fitted model, the note on per-ROI confidence (issue 23:
    the data do not pin the mixture's shape); a phantom's truth, whose weights are
    given, has none."""
    from napari_factortopy.core.analyses import CONFIDENCE_RESOLUTION

    assert main(["info", str(demo_dir / "model.ftopy")]) == 0
    lines = capsys.readouterr().out.splitlines()
    last_roi = max(i for i, line in enumerate(lines) if line.startswith("  EBA "))
    end = next(i for i in range(last_roi + 1, len(lines)) if lines[i].endswith(")"))
    note = " ".join(x.strip() for x in lines[last_roi + 1 : end + 1])
    assert note.startswith(
        f"(per-ROI confidence differences below {CONFIDENCE_RESOLUTION:.1f} are not a finding"
    ), note
    assert "sharpness" in note and note.endswith("compare argmax layers and the slope)")
    assert main(["info", str(demo_dir / "truth.ftopy")]) == 0
    assert "sharpness" not in capsys.readouterr().out


def test_train_from_phantom_folder(demo_dir, tmp_path):
    out = tmp_path / "again.ftopy"
    extra = ["--steps-per-epoch", "20", "--max-epochs", "3", "--lr", "5e-3"]
    rc = main(_train_args(demo_dir, out, *extra, "--reg-decay-steps", "20", "--bottleneck", "8"))
    assert rc == 0
    m = FittedModel.load(out)
    assert m.summary["steps"] == 60 and len(m.history) == 3
    conv = m.summary["convergence"]
    assert conv["state"] != "converged" and conv["stop_reason"] == "max_epochs"
    assert conv["reg_strength"] == 0.0 and conv["epochs"] == 3
    tc = m.extra["train_config"]
    assert tc["lr"] == 5e-3 and tc["reg_decay_steps"] == 20 and tc["recipe"] == "paper"


def test_unknown_device_is_a_clear_error(demo_dir, capsys):
    rc = main(
        [
            "train",
            "--cache",
            str(demo_dir / "phantom" / "features.zarr"),
            "--phantom",
            str(demo_dir / "phantom"),
            "--out",
            "x.ftopy",
            "--device",
            "tpu",
        ]
    )
    assert rc == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_info_on_a_foreign_file_is_a_clear_error(tmp_path, capsys):
    p = tmp_path / "x.ftopy"
    p.write_bytes(b"\x89PNG not a model")
    assert main(["info", str(p)]) == 2
    assert str(p) in capsys.readouterr().err


def test_extract_and_train_on_a_folder_dataset(tmp_path, capsys):
    """The real-data path: folder dataset with repeats → `extract` → `train`."""
    from napari_factortopy.data.datasets.folder import write_folder
    from napari_factortopy.data.phantom import phantom_images

    rng = np.random.default_rng(0)
    imgs = phantom_images(range(20), size=64, seed=5)
    names = [f"im{i:02d}.png" for i in range(20)]
    stimuli = names + names[:10]  # ten images shown twice
    vids = np.r_[np.arange(0, 40, 2), np.arange(1, 41, 2)]
    y = rng.normal(size=(30, 40)).astype(np.float32)
    root = write_folder(
        tmp_path / "ds", dict(zip(names, imgs, strict=True)), y, vids, 20, stimuli=stimuli
    )
    cache = tmp_path / "feats.zarr"
    assert (
        main(
            [
                "extract",
                "--backbone",
                "efficientnet_lite0",
                "--dataset",
                str(root),
                "--cache",
                str(cache),
                "--batch-size",
                "8",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = tmp_path / "m.ftopy"
    assert (
        main(
            [
                "train",
                "--cache",
                str(cache),
                "--dataset",
                str(root),
                "--out",
                str(out),
                "--steps-per-epoch",
                "5",
                "--max-epochs",
                "2",
                "--bottleneck",
                "8",
                "--device",
                "cpu",
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    m = FittedModel.load(out)
    assert m.n_vertices == 40 and m.n_lh == 20
    np.testing.assert_array_equal(m.vertex_ids, vids)
    assert main(["cache", "verify", str(cache)]) == 0
    # the same file names with other pictures: training refuses the cache, naming it
    other = phantom_images(range(20), size=64, seed=6)
    write_folder(
        tmp_path / "ds", dict(zip(names, other, strict=True)), y, vids, 20, stimuli=stimuli
    )
    argv = ["train", "--cache", str(cache), "--dataset", str(root), "--out", str(out)]
    capsys.readouterr()
    assert main([*argv, "--device", "cpu"]) != 0
    err = capsys.readouterr().err
    assert str(cache) in err and "Traceback" not in err
    # repeats of an image never straddle splits: response rows 20..29 repeat images 0..9
    image_of_row = np.r_[np.arange(20), np.arange(10)]
    parts = [set(image_of_row[m.split[k]]) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def _fake_algonauts(root, n=20, seed=0):
    """A tiny Algonauts 2023 subject folder in the exact layout (fewer images/vertices)."""
    from napari_factortopy.data.phantom import phantom_images

    rng = np.random.default_rng(seed)
    imgs = phantom_images(range(n), size=48, seed=seed)
    tdir = root / "training_split" / "training_images"
    tdir.mkdir(parents=True)
    for row in range(n):
        Image.fromarray(imgs[row]).save(tdir / f"train-{row + 1:04d}_nsd-{3 * row:05d}.png")
    fm = root / "training_split" / "training_fmri"
    fm.mkdir(parents=True)
    masks = root / "roi_masks"
    masks.mkdir()
    cols = {"lh": [0, 5, 9, 100, 20000], "rh": [1, 2, 40000, 163841]}
    for hemi, vs in cols.items():
        mask = np.zeros(163842, np.int64)
        mask[vs] = 1
        np.save(masks / f"{hemi}.all-vertices_fsaverage_space.npy", mask)
        np.save(
            fm / f"{hemi}_training_fmri.npy", rng.standard_normal((n, len(vs))).astype(np.float32)
        )
    prf = ["Unknown", "V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"]
    np.save(masks / "lh.prf-visualrois_challenge_space.npy", np.array([1, 2, 3, 0, 7]))
    np.save(masks / "rh.prf-visualrois_challenge_space.npy", np.array([1, 0, 0, 5]))
    np.save(masks / "mapping_prf-visualrois.npy", dict(enumerate(prf)))
    return cols


def _fake_fsaverage(subjects_dir):
    """$SUBJECTS_DIR/fsaverage/surf/?h.sphere with 163,842 points (random, on a sphere)."""
    import nibabel as nib

    surf = subjects_dir / "fsaverage" / "surf"
    surf.mkdir(parents=True)
    rng = np.random.default_rng(1)
    spheres = {}
    for hemi in ("lh", "rh"):
        p = rng.normal(size=(163842, 3))
        p = 100 * p / np.linalg.norm(p, axis=1, keepdims=True)
        nib.freesurfer.write_geometry(
            str(surf / f"{hemi}.sphere"), p.astype(np.float32), np.array([[0, 1, 2]], np.int32)
        )
        spheres[hemi] = p
    return spheres


def test_algonauts_folder_to_model_file(tmp_path):
    """The README's two commands on an Algonauts-layout folder (on fsaverage)."""
    _algonauts_folder_to_model_file(tmp_path)


def _algonauts_folder_to_model_file(tmp_path):
    """The checks of the test above; returns (folder, cache, model file, train argv)."""
    cols = _fake_algonauts(tmp_path / "subj01")
    spheres = _fake_fsaverage(tmp_path / "subjects")
    cache = tmp_path / "c.zarr"
    assert (
        main(
            [
                "extract",
                "--dataset",
                str(tmp_path / "subj01"),
                "--backbone",
                "efficientnet_lite0",
                "--cache",
                str(cache),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = tmp_path / "subj01.ftopy"
    # a lab's own noise ceiling (the release has none): percent on the whole fsaverage mesh
    nc = np.full((2, 163842), np.nan)
    nc[0, cols["lh"]] = [10.0, 20.0, 30.0, 40.0, 50.0]
    nc[1, cols["rh"]] = [60.0, 0.0, 80.0, 90.0]
    np.save(tmp_path / "nc.npy", nc)
    train_args = [
        "train",
        "--noise-ceiling",
        str(tmp_path / "nc.npy"),
        "--dataset",
        str(tmp_path / "subj01"),
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--subjects-dir",
        str(tmp_path / "subjects"),
        "--steps-per-epoch",
        "4",
        "--max-epochs",
        "2",
        "--bottleneck",
        "8",
        "--batch-size",
        "4",
        "--device",
        "cpu",
    ]
    assert main(train_args) == 0
    m = FittedModel.load(out)
    assert m.mesh == "fsaverage" and m.n_lh == 5 and m.n_vertices == 9
    np.testing.assert_array_equal(m.vertex_ids, cols["lh"] + cols["rh"])
    # the model's coordinates come from that mesh's sphere (right one shifted along x)
    from napari_factortopy.core.encoding import joint_sphere_coordinates

    coords = joint_sphere_coordinates(spheres["lh"][cols["lh"]], spheres["rh"][cols["rh"]])
    np.testing.assert_allclose(m.state["coords"], coords, rtol=1e-5, atol=1e-4)
    assert "V1" in m.roi_names
    # the challenge score by hand from the stored test correlations: min(100, 100 r²/NC)
    r = np.maximum(m.scores["r_test"].astype(np.float64), 0)
    ceil = np.r_[10, 20, 30, 40, 50, 60, 0, 80, 90] / 100
    want = np.full(9, np.nan)
    want[ceil > 0] = np.minimum(100, 100 * r[ceil > 0] ** 2 / ceil[ceil > 0])
    np.testing.assert_allclose(m.scores["nc_test"], want, rtol=1e-5, equal_nan=True)
    assert m.summary["nc_test_mean"] == pytest.approx(np.nanmean(want), rel=1e-5)
    assert "nc.npy" in m.summary["noise_ceiling"]["source"]
    return tmp_path, cache, out, train_args


def test_algonauts_under_a_memory_limit_reads_responses_by_rows(tmp_path, monkeypatch):
    """With --memory-limit the Algonauts responses stay in their files, read a batch of
    rows at a time (never all at once), the states kept for the soup wait in files
    beside the model (removed at the end), and the model is the one the responses and
    states in memory give: same weights, same test scores."""
    from napari_factortopy.core.responses import ResponseRows

    root, _, out, args = _algonauts_folder_to_model_file(tmp_path)
    reads = []
    take = ResponseRows.take

    def counted(self, rows):
        got = take(self, rows)
        reads.append(len(got) if got.ndim == 2 else 1)
        return got

    def whole(*_):
        raise AssertionError("the responses were read whole")

    monkeypatch.setattr(ResponseRows, "take", counted)
    monkeypatch.setattr(ResponseRows, "__array__", whole)
    # the states kept for the soup wait on disk, in a folder beside the model
    from napari_factortopy.core import training

    folders, keep = [], training.keep_state

    def keep_on_disk(kept, *a, folder=None, **kw):
        folders.append(folder)
        dropped = keep(kept, *a, folder=folder, **kw)
        assert all(isinstance(e, str) and Path(e).is_file() for _, e in kept)
        return dropped

    monkeypatch.setattr(training, "keep_state", keep_on_disk)
    from napari_factortopy.core import runtime

    arenas = []
    monkeypatch.setattr(runtime, "limit_malloc_arenas", lambda n=2: arenas.append(n))
    limited = root / "limited.ftopy"
    given = [str(limited) if a == str(out) else a for a in args]
    assert main([*given, "--memory-limit", "0.5"]) == 0
    assert reads and max(reads) <= 20  # batches, validation and test rows; the checks
    assert folders and all(f.parent == root and f.name.startswith(".limited") for f in folders)
    assert not folders[0].exists()  # removed when the command ended
    assert arenas == [2]  # the allocator's arenas capped, once
    a, b = FittedModel.load(out), FittedModel.load(limited)
    for k in a.state:
        np.testing.assert_array_equal(np.asarray(a.state[k]), np.asarray(b.state[k]), err_msg=k)
    np.testing.assert_array_equal(a.scores["r_test"], b.scores["r_test"])


def test_divergence_is_a_message_not_a_traceback(demo_dir, tmp_path, monkeypatch, capsys):
    from napari_factortopy.core import estimator
    from napari_factortopy.core.training import TrainingDiverged

    def diverging(*args, **kwargs):
        raise TrainingDiverged("training diverged at step 0 (loss is not finite)")
        yield  # pragma: no cover

    monkeypatch.setattr(estimator, "fit", diverging)
    rc = main(
        [
            "train",
            "--cache",
            str(demo_dir / "phantom" / "features.zarr"),
            "--phantom",
            str(demo_dir / "phantom"),
            "--out",
            str(tmp_path / "x.ftopy"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 1  # a failure at run time, not bad input
    err = capsys.readouterr().err
    assert "training diverged at step 0" in err and "Traceback" not in err
    assert not (tmp_path / "x.ftopy").exists()


def _train_args(demo_dir, out, *extra):
    return [
        "train",
        "--cache",
        str(demo_dir / "phantom" / "features.zarr"),
        "--phantom",
        str(demo_dir / "phantom"),
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps-per-epoch", "0"], "--steps-per-epoch: expected a whole number >= 1, found 0"),
        (["--batch-size", "0"], "--batch-size: expected a whole number >= 1, found 0"),
        (["--lr", "1e30"], "a learning rate of 1e+30 makes AdamW diverge"),
        (["--lr", "nan"], "--lr: expected a finite number > 0"),
        (["--max-seconds", "-5"], "--max-seconds: expected a finite number > 0"),
        (["--recipe", "fast"], "invalid choice: 'fast'"),
    ],
)
def test_bad_training_options_are_usage_errors(demo_dir, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        main(_train_args(demo_dir, tmp_path / "m.ftopy", *extra))
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("m.npz", "must end in .ftopy"),
        ("adir.ftopy", "is a directory"),
        ("missing/m.ftopy", "does not exist"),
    ],
)
def test_output_path_is_checked_before_any_work(demo_dir, tmp_path, capsys, out, message):
    (tmp_path / "adir.ftopy").mkdir()
    rc = main(_train_args(demo_dir, tmp_path / out))
    err = capsys.readouterr().err
    assert rc == 2 and message in err
    assert "%|" not in err  # no progress bar: nothing was trained


def test_auto_recipe_keeps_the_settings_given(demo_dir, tmp_path, capsys, monkeypatch):
    """`--max-seconds 10 --batch-size 16 --lr 5e-4`: every step trains on 16 images at
    lr 5e-4; the model file and `factortopy info` say which settings were given and
    which the recipe chose."""
    import torch.nn.functional as F

    batches, lrs = [], []
    from napari_factortopy.core.adamw import AdamW

    real_loss, real_step = F.smooth_l1_loss, AdamW.step

    def loss(pred, target, **kw):
        batches.append(target.shape[0])
        return real_loss(pred, target, **kw)

    def step(self, *a, **kw):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **kw)

    monkeypatch.setattr(F, "smooth_l1_loss", loss)
    monkeypatch.setattr(AdamW, "step", step)
    out = tmp_path / "given.ftopy"
    extra = ["--max-seconds", "10", "--batch-size", "16", "--lr", "5e-4", "--bottleneck", "8"]
    assert main(_train_args(demo_dir, out, *extra)) == 0
    printed = capsys.readouterr()
    assert "auto recipe: batch 16 (given), lr 0.0005 (given)" in printed.out + printed.err
    m = FittedModel.load(out)
    assert set(batches) == {16} and len(batches) == len(lrs) == m.summary["steps"]
    assert set(lrs) == {5e-4}
    tc = m.extra["train_config"]
    assert (tc["recipe"], tc["batch_size"], tc["lr"]) == ("auto", 16, 5e-4)
    assert tc["given"] == ["batch_size", "lr"]
    assert m.extra["recipe"]["given"] == {"batch_size": 16, "lr": 5e-4}
    assert m.extra["recipe"]["chosen"] == ["steps_per_epoch", "reg_decay_steps"]
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "recipe      auto: batch 16 (given), lr 0.0005 (given), validation every " in info
    assert f"steps (chosen), T {tc['reg_decay_steps']} (chosen)" in info
    # without a budget the auto recipe cannot plan
    rc = main(_train_args(demo_dir, tmp_path / "m.ftopy", "--recipe", "auto"))
    assert rc == 2 and "give --max-seconds" in capsys.readouterr().err


def test_every_training_setting_is_an_option():
    from dataclasses import fields

    from napari_factortopy.app.cli import build_parser
    from napari_factortopy.core.config import TrainConfig

    train = next(
        a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train"
    )[1]
    flags = {s for a in train._actions for s in a.option_strings}
    # not recipe knobs; `given` says which options were given
    internal = {"betas", "smooth_l1_beta", "eval_batch_size", "log_every", "given"}
    renamed = {"soup": "--no-soup"}
    for f in fields(TrainConfig):
        if f.name in internal:
            continue
        flag = renamed.get(f.name, "--" + f.name.replace("_", "-"))
        assert flag in flags, f"TrainConfig.{f.name} has no option {flag}"


def test_info_survives_null_scores_and_prints_the_convergence_line(demo_dir, tmp_path, capsys):
    m = FittedModel.load(demo_dir / "model.ftopy")
    m.summary["r2_test_mean"] = None  # what JSON keeps of a NaN
    m.summary["r_test_mean"] = float("nan")
    m.scores["r2_test"] = np.full(m.n_vertices, np.nan, np.float32)
    m.summary["convergence"] = {
        "state": "not_converged",
        "line": "NOT converged: stopped by the time budget with the regulariser at 80 %",
    }
    path = m.save(tmp_path / "nan.ftopy")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "test R²     - (mean), Pearson r -" in out
    assert (
        "state       NOT converged: stopped by the time budget with the regulariser at 80 %" in out
    )


def test_the_demo_model_records_how_it_ended(demo_dir, capsys):
    m = FittedModel.load(demo_dir / "model.ftopy")
    conv = m.summary["convergence"]
    assert conv["stop_reason"] == "budget" and conv["epochs"] == len(m.history)
    assert main(["info", str(demo_dir / "model.ftopy")]) == 0
    assert f"state       {conv['line']}" in capsys.readouterr().out


def test_seed_ensemble_one_file_with_consistency_and_resume(demo_dir, tmp_path, capsys):
    """--seeds 2: one model file with the seeds' mean selectors and consistency maps;
    a rerun after a kill trains only the seeds it lacks."""
    from napari_factortopy.core.ensemble import consistency_maps

    out = tmp_path / "ens.ftopy"
    args = _train_args(
        demo_dir,
        out,
        "--steps-per-epoch",
        "10",
        "--max-epochs",
        "1",
        "--bottleneck",
        "8",
        "--seeds",
        "2",
        "--seed",
        "3",
    )
    # a finished seed 3 from a killed run: the rerun must reuse it
    assert (
        main(
            _train_args(
                demo_dir,
                tmp_path / "ens.seed3.ftopy",
                "--steps-per-epoch",
                "10",
                "--max-epochs",
                "1",
                "--bottleneck",
                "8",
                "--seed",
                "3",
            )
        )
        == 0
    )
    seed3 = FittedModel.load(tmp_path / "ens.seed3.ftopy")
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "seed 3: already trained" in err and "seed 4 (2 of 2)" in err
    assert not (tmp_path / "ens.seed3.ftopy").exists()  # folded into the ensemble
    m = FittedModel.load(out)
    ens = m.ensemble
    assert ens["layer"].shape == (2, m.n_vertices, m.n_layers)
    np.testing.assert_allclose(ens["layer"][0], seed3.layer, rtol=1e-6)
    np.testing.assert_allclose(m.layer, ens["layer"].mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.space, ens["space"].mean(0), rtol=1e-5, atol=1e-7)
    want = consistency_maps(ens["layer"], ens["space"], ens["scale"])
    for key in ("layer_agreement", "space_spread", "scale_sd"):
        np.testing.assert_allclose(ens[key], want[key], rtol=1e-6)
    assert m.summary["ensemble"]["seeds"] == [3, 4]
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "ensemble    2 seeds [3, 4]" in info and "consistency ROI" in info


def test_seeds_in_parallel_processes_equal_their_single_seed_runs(demo_dir, tmp_path, capsys):
    """--jobs 2: each seed trains in its own process (logs beside the output) with the
    options it was given; the ensemble holds what a single-seed run of that seed
    writes (same options, one thread each so the runs are bitwise alike)."""
    import os

    opts = ("--steps-per-epoch", "10", "--max-epochs", "1", "--bottleneck", "8")
    out = tmp_path / "par.ftopy"
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        assert main(_train_args(demo_dir, out, *opts, "--seeds", "2", "--seed", "5",
                                "--jobs", "2")) == 0  # fmt: skip
        err = capsys.readouterr().err
        assert err.count("started in process") == 2, err
        m = FittedModel.load(out)
        assert m.summary["ensemble"]["seeds"] == [5, 6]
        for seed in (5, 6):
            log = (tmp_path / f"par.seed{seed}.log").read_text()
            assert f"wrote {tmp_path / f'par.seed{seed}.ftopy'}" in log, log[-500:]
        single = tmp_path / "single6.ftopy"
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert main(_train_args(demo_dir, single, *opts, "--seed", "6")) == 0
        finally:
            torch.set_num_threads(threads)
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)
    one = FittedModel.load(single)
    np.testing.assert_allclose(m.ensemble["layer"][1], one.layer, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.ensemble["space"][1], one.space, rtol=1e-5, atol=1e-6)


def test_a_failing_seed_process_is_named(demo_dir, tmp_path, capsys):
    out = tmp_path / "bad.ftopy"
    blocker = tmp_path / "a-file"  # the workers' checkpoint folders cannot be made in it
    blocker.write_text("")
    args = _train_args(demo_dir, out, "--seeds", "2", "--jobs", "2", "--max-epochs", "1",
                       "--steps-per-epoch", "5", "--checkpoints", str(blocker))  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "2 of 2 seed processes failed" in err and "bad.seed0.log" in err, err
    assert not out.exists()


def test_zero_seeds_is_a_usage_error(demo_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(_train_args(demo_dir, tmp_path / "m.ftopy", "--seeds", "0"))
    assert exc.value.code == 2 and "--seeds" in capsys.readouterr().err


def test_resume_with_other_data_exits_2_naming_the_checkpoints(demo_dir, tmp_path, capsys):
    """Checkpoints made for one split (or dataset) are not resumed with another."""
    ckpt = tmp_path / "ckpt"
    out = tmp_path / "m.ftopy"
    short = ["--steps-per-epoch", "5", "--max-epochs", "1", "--bottleneck", "8"]
    assert main(_train_args(demo_dir, out, *short, "--checkpoints", str(ckpt))) == 0
    before = (ckpt / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    argv = _train_args(demo_dir, out, *short, "--checkpoints", str(ckpt), "--resume")
    assert main([*argv, "--split-seed", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{ckpt}: these checkpoints were made for other data" in err
    assert "made for split seed 0" in err and "given split seed 1" in err
    assert "Traceback" not in err and (ckpt / "checkpoint.pt").read_bytes() == before


def _parsers(parser, path=("factortopy",)):
    """(command path, parser) of the command and every sub-command, at every level."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_option_of_every_command_has_help_text():
    import argparse

    from napari_factortopy.app.cli import build_parser

    parser = build_parser()
    missing, commands = [], set()
    for path, p in _parsers(parser):
        commands.add(" ".join(path))
        for a in p._actions:
            if isinstance(a, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not (a.help and a.help.strip()) or a.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path)} {'/'.join(a.option_strings) or a.dest}")
    assert {"factortopy train", "factortopy figure", "factortopy sweep"} <= commands
    assert not missing, "options without help text: " + ", ".join(missing)
    # the top-level help names every sub-command
    text = parser.format_help()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert all(name in text for name in subs.choices)


def test_debug_works_after_the_sub_command_too(tmp_path, capsys):
    from napari_factortopy.app.cli import build_parser

    bad = tmp_path / "x.ftopy"
    bad.write_bytes(b"\x89PNG not a model")
    assert main(["info", str(bad)]) == 2  # a message, no traceback
    for argv in (["--debug", "info", str(bad)], ["info", str(bad), "--debug"]):
        with pytest.raises(Exception, match=r"x\.ftopy"):
            main(argv)
    # every sub-command (and `cache verify`) takes it; absent, it stays off
    for path, p in _parsers(build_parser()):
        assert "--debug" in p._option_string_actions, " ".join(path)
    assert build_parser().parse_args(["info", "m.ftopy"]).debug is False
    assert build_parser().parse_args(["info", "m.ftopy", "--debug"]).debug is True


def test_readme_has_an_example_of_every_command():
    import argparse
    import re
    from pathlib import Path

    from napari_factortopy.app.cli import build_parser
    from napari_factortopy.app.cli_sweep import ACTIONS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = [f"factortopy {name}" for name in subs.choices]
    commands += [f"factortopy sweep {a}" for a in ACTIONS if a != "run"]
    absent = [c for c in commands if not re.search(rf"^{re.escape(c)}\b", readme, re.M)]
    assert not absent, f"README.md has no example line starting with: {absent}"


def test_help_imports_no_heavy_library():
    """`factortopy [COMMAND] --help` imports none of matplotlib, nilearn, scikit-learn,
    pyvista, torch (issue 18): the parser spells the scene's names out."""
    import subprocess
    import sys

    from napari_factortopy.app.cli_figure import MAP_NAMES, MESH_NAMES, VIEW_NAMES
    from napari_factortopy.scene.brain import MAPS, MESH_KINDS, VIEWS

    assert (MAP_NAMES, VIEW_NAMES, MESH_NAMES) == (MAPS, VIEWS, MESH_KINDS)
    heavy = ("matplotlib", "nilearn", "sklearn", "pyvista", "torch", "vtk", "scipy")
    code = (
        "import sys\nfrom napari_factortopy.app.cli import main\n"
        "try:\n    main(sys.argv[1:] + ['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    for argv in ([], ["figure"], ["sweep"], ["train"], ["extract"], ["demo"]):
        out = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-1500:]
        assert out.stdout.strip().splitlines()[-1] == "[]", (argv, out.stdout[-300:])


def test_train_streams_a_cache_larger_than_the_memory_limit(demo_dir, tmp_path):
    """--memory-limit below the cache's size: the features are streamed, the run ends."""
    out = tmp_path / "s.ftopy"
    short = ["--steps-per-epoch", "6", "--max-epochs", "2", "--bottleneck", "8"]
    assert main(_train_args(demo_dir, out, *short, "--memory-limit", "0.0005")) == 0
    m = FittedModel.load(out)
    assert m.summary["steps"] == 12 and np.isfinite(m.summary["r2_test_mean"])


def test_info_lists_the_auto_recipes_replans():
    """The recipe record's re-plans (each change of the validation interval) in `info`."""
    from dataclasses import replace

    from napari_factortopy.app.cli import info_lines
    from tests.napari.conftest import make_model

    replans = [
        {"step": 40, "elapsed": 31.0, "why": "drift", "step_seconds": 3.3,
         "validation_seconds": 7.0, "steps_per_epoch": 64},
        {"step": 104, "elapsed": 240.0, "why": "validation", "step_seconds": 3.1,
         "validation_seconds": 6.7, "steps_per_epoch": 72},
    ]  # fmt: skip
    recipe = {"name": "auto", "steps_per_epoch": 250, "replans": replans}
    m = make_model(seed=2)
    m = replace(m, summary={"steps": 300, "epochs": 5}, extra={"recipe": recipe})
    lines = info_lines(m, "m.ftopy")
    want = "  re-planned  2 times (1 on a step-time drift): validation every 250 → 64 → 72 steps"
    assert want in lines, lines
    assert not any("re-planned" in s for s in info_lines(make_model(seed=2), "m.ftopy"))


def test_threads_option_sets_torch_threads_and_is_checked(demo_dir, capsys):
    """`--threads N` (before or after the sub-command) caps torch's CPU threads; seed
    workers get their share instead of the option the user gave."""
    import torch

    from napari_factortopy.app.cli_seeds import _worker_argv

    model = str(demo_dir / "model.ftopy")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["info", model, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        assert main(["--threads", "1", "info", model]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["info", model, "--threads", "0"])
    assert exc.value.code == 2 and "--threads takes a whole number" in capsys.readouterr().err
    assert _worker_argv(["--cache", "c", "--threads", "3", "--lr", "1e-3"]) == [
        "--cache",
        "c",
        "--lr",
        "1e-3",
    ]


def test_a_busy_machine_is_named_before_a_cpu_run(demo_dir, tmp_path, capsys, monkeypatch):
    """Load 1.9 on 2 cores: a run at every core is warned and told which --threads uses
    the free ones; a quiet machine, a run that fits the free cores, and a GPU run are not."""
    import os

    from napari_factortopy.core.runtime import busy_note, machine_busy

    note = busy_note(1.9, 2, None)
    assert "load average 1.9 over the last minute on 2 cores" in note and "2 threads" in note
    assert "--threads 1 uses the free cores" in note  # at least one thread
    note = busy_note(1.0, 4, None)
    assert "uses 4 threads" in note and "--threads 3 uses the free cores" in note
    assert busy_note(0.5, 2, None) is None  # quiet
    assert busy_note(1.0, 2, 1) is None  # one core free, one thread wanted
    assert busy_note(2.0, 16, 8) is None
    assert machine_busy("cuda", None) is None
    # the load average lags: a job that just ended is not other work any more
    assert busy_note(1.9, 2, None, in_use=0.1) is None
    note = busy_note(1.9, 2, None, in_use=1.2)
    assert "load average 1.9 over the last minute (1.2 cores in use now)" in note
    assert "--threads 1 uses" in note
    from napari_factortopy.core import runtime

    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    extra = ["--steps-per-epoch", "5", "--max-epochs", "1", "--bottleneck", "8"]
    monkeypatch.setattr(runtime, "cores_in_use", lambda cores: 0.2)  # the load has gone
    assert main(_train_args(demo_dir, tmp_path / "quiet.ftopy", *extra)) == 0
    assert "the machine is busy" not in capsys.readouterr().err
    monkeypatch.setattr(runtime, "cores_in_use", lambda cores: 3.0)
    assert main(_train_args(demo_dir, tmp_path / "busy.ftopy", *extra)) == 0
    err = capsys.readouterr().err
    assert "factortopy train: note: the machine is busy: load average 3.0" in err, err
    assert "(3.0 cores in use now)" in err and "--threads 1 uses the free cores" in err


def test_seeds_under_a_memory_limit_keep_their_states_in_their_own_folders(demo_dir, tmp_path):
    """--seeds 2 --memory-limit with --checkpoints: each seed's kept states are files in
    its own checkpoint folder, named by its checkpoint; the ensemble is written."""
    import torch

    out, ckpt = tmp_path / "e.ftopy", tmp_path / "ckpt"
    short = ["--steps-per-epoch", "3", "--max-epochs", "3", "--bottleneck", "8", "--top-k", "2"]
    extra = ["--seeds", "2", "--memory-limit", "0.5", "--checkpoints", str(ckpt)]
    assert main(_train_args(demo_dir, out, *short, *extra)) == 0
    assert FittedModel.load(out).summary["ensemble"]["seeds"] == [0, 1]
    for seed in (0, 1):
        folder = ckpt / f"seed{seed}" / "kept"
        named = torch.load(ckpt / f"seed{seed}" / "checkpoint.pt")["state"]["kept"]
        assert sorted(e for _, e in named) == sorted(str(p) for p in folder.iterdir())
        assert len(named) == 2
