"""Tests of the ``.ftopy`` model file (napari_factortopy.core.modelfile)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import numpy as st_numpy

from napari_factortopy.core import modelfile
from napari_factortopy.core.modelfile import (
    FORMAT_VERSION,
    SUFFIX,
    ModelFileError,
    is_ftopy,
    load_ftopy,
    read_ftopy_metadata,
    save_ftopy,
)


def _tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "beta": rng.standard_normal((37, 16)).astype(np.float32),
        "half": rng.standard_normal((5, 3, 2)).astype(np.float16),
        "ids": rng.integers(-(2**40), 2**40, size=11, dtype=np.int64),
        "mask": rng.random(13) > 0.5,
        "labels": rng.integers(0, 256, size=(4, 4), dtype=np.uint8),
        "scalar": np.array(2.5, dtype=np.float64),
        "empty": np.zeros((0, 7), dtype=np.float32),
        "nonfinite": np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32),
    }


def _write_raw_safetensors(path: Path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_round_trip_several_dtypes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = _tensors(rng)
    meta = {"name": "subj01", "layers": ["a", "b"], "D": 128, "score": 0.125, "ok": True}
    out = save_ftopy(tmp_path / "m.ftopy", tensors, meta)
    assert out == tmp_path / "m.ftopy"
    loaded, meta2 = load_ftopy(out)
    assert meta2 == meta
    assert read_ftopy_metadata(out) == meta
    assert set(loaded) == set(tensors)
    for name, arr in tensors.items():
        assert loaded[name].dtype == arr.dtype, name
        assert loaded[name].shape == arr.shape, name
        np.testing.assert_array_equal(loaded[name], arr, err_msg=name)
    assert is_ftopy(out)
    # Only the destination is left in the folder (no temp files).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ftopy"]


def test_header_layout_is_plain_safetensors(tmp_path: Path) -> None:
    """Any safetensors reader sees our tensors and the documented __metadata__ keys."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = save_ftopy(tmp_path / "m.ftopy", {"x": x}, {"k": [1, 2]})
    loaded = st_numpy.load_file(p)
    np.testing.assert_array_equal(loaded["x"], x)
    (n,) = struct.unpack("<Q", p.read_bytes()[:8])
    header = json.loads(p.read_bytes()[8 : 8 + n])
    assert header["__metadata__"]["format"] == "factortopy"
    assert header["__metadata__"]["format_version"] == str(FORMAT_VERSION) == "1"
    assert json.loads(header["__metadata__"]["factortopy"]) == {"k": [1, 2]}


def test_suffix_added_only_when_missing(tmp_path: Path) -> None:
    p = save_ftopy(tmp_path / "model", {"x": np.ones(2)}, {})
    assert p == tmp_path / f"model{SUFFIX}" and p.is_file()
    q = save_ftopy(tmp_path / "model.bin", {"x": np.ones(2)}, {})
    assert q == tmp_path / "model.bin" and q.is_file()


def test_non_contiguous_and_big_endian_arrays(tmp_path: Path) -> None:
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    view = base[:, ::2].T  # (3, 4), not C-contiguous
    big = np.arange(5, dtype=">i4")
    p = save_ftopy(tmp_path / "m.ftopy", {"v": view, "big": big}, {})
    loaded, _ = load_ftopy(p)
    np.testing.assert_array_equal(loaded["v"], [[0, 6, 12, 18], [2, 8, 14, 20], [4, 10, 16, 22]])
    np.testing.assert_array_equal(loaded["big"], [0, 1, 2, 3, 4])


def test_torch_tensors_and_bfloat16(tmp_path: Path) -> None:
    w = torch.linspace(-2, 2, 9, requires_grad=True).reshape(3, 3)
    b = torch.tensor([0.5, -1.25, 3.0], dtype=torch.bfloat16)  # exactly representable
    i = torch.arange(4, dtype=torch.int32)
    p = save_ftopy(tmp_path / "m.ftopy", {"w": w, "b": b, "i": i}, {"t": torch.tensor([1, 2])})
    loaded, meta = load_ftopy(p)
    assert loaded["w"].dtype == np.float32
    np.testing.assert_array_equal(
        loaded["w"], np.linspace(-2, 2, 9, dtype=np.float32).reshape(3, 3)
    )
    assert loaded["b"].dtype == np.float32
    np.testing.assert_array_equal(loaded["b"], [0.5, -1.25, 3.0])
    assert loaded["i"].dtype == np.int32
    np.testing.assert_array_equal(loaded["i"], [0, 1, 2, 3])
    assert meta == {"t": [1, 2]}


def test_metadata_conversion(tmp_path: Path) -> None:
    meta = {
        "i": np.int64(7),
        "f": np.float32(0.5),
        "b": np.bool_(True),
        "nan": float("nan"),
        "inf": np.float64(np.inf),
        "tup": (1, (2, 3)),
        "arr": np.array([[1.5, np.nan], [0.0, 2.0]]),
        "path": tmp_path / "x",
        "nested": {"list": [np.int8(-3), None, "s"]},
    }
    p = save_ftopy(tmp_path / "m.ftopy", {}, meta)
    _, got = load_ftopy(p)
    assert got == {
        "i": 7,
        "f": 0.5,
        "b": True,
        "nan": None,
        "inf": None,
        "tup": [1, [2, 3]],
        "arr": [[1.5, None], [0.0, 2.0]],
        "path": str(tmp_path / "x"),
        "nested": {"list": [-3, None, "s"]},
    }
    assert type(got["i"]) is int and type(got["b"]) is bool


@pytest.mark.parametrize(
    ("meta", "fragment"),
    [
        ({"opt": object()}, "metadata['opt']"),
        ({"a": {"b": {1, 2}}}, "metadata['a']['b']"),
        ({"a": {3: "x"}}, "dict key 3"),
        ({"s": np.array(["a", "b"])}, "metadata['s']"),
    ],
)
def test_bad_metadata_rejected_before_writing(tmp_path: Path, meta: dict, fragment: str) -> None:
    target = tmp_path / "m.ftopy"
    save_ftopy(target, {"x": np.ones(3)}, {"good": 1})
    before = target.read_bytes()
    with pytest.raises(ModelFileError, match=r"JSON-able|str keys") as info:
        save_ftopy(target, {"x": np.zeros(3)}, meta)
    assert fragment in str(info.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ftopy"]


def test_bad_tensors_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"tensor 'names'.*dtype"):
        save_ftopy(tmp_path / "m.ftopy", {"names": np.array(["a"])}, {})
    with pytest.raises(ModelFileError, match="reserved"):
        save_ftopy(tmp_path / "m.ftopy", {"__metadata__": np.ones(1)}, {})
    with pytest.raises(ModelFileError, match="does not exist"):
        save_ftopy(tmp_path / "nowhere" / "m.ftopy", {}, {})
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "absent.ftopy"
    for fn in (load_ftopy, read_ftopy_metadata):
        with pytest.raises(ModelFileError, match="no such model file") as info:
            fn(p)
        assert str(p) in str(info.value)
    assert not is_ftopy(p)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,  # a PNG signature
        b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
        struct.pack("<Q", 10) + b"not json!!" + b"\x00" * 4,
        struct.pack("<Q", 4) + b"[1,]",
    ],
    ids=["empty", "png", "npy", "garbage-header", "json-not-object"],
)
def test_foreign_files(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "thing.ftopy"
    p.write_bytes(content)
    for fn in (load_ftopy, read_ftopy_metadata):
        with pytest.raises(ModelFileError, match="not a safetensors") as info:
            fn(p)
        assert str(p) in str(info.value)
    assert not is_ftopy(p)


def test_directory_is_not_a_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="is not a file"):
        load_ftopy(tmp_path)
    assert not is_ftopy(tmp_path)
    assert not is_ftopy(None)
    assert not is_ftopy([str(tmp_path)])


def test_safetensors_without_factortopy_metadata(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    st_numpy.save_file({"x": np.ones(3, dtype=np.float32)}, plain)
    other = tmp_path / "other.safetensors"
    st_numpy.save_file({"x": np.ones(3, dtype=np.float32)}, other, metadata={"format": "pt"})
    for p, found in ((plain, "None"), (other, "'pt'")):
        with pytest.raises(ModelFileError, match="not a napari-factortopy model file") as info:
            load_ftopy(p)
        assert str(p) in str(info.value) and found in str(info.value)
        assert not is_ftopy(p)


def test_truncated_file(tmp_path: Path) -> None:
    p = save_ftopy(tmp_path / "m.ftopy", {"x": np.arange(100, dtype=np.float32)}, {"a": 1})
    data = p.read_bytes()
    p.write_bytes(data[:-50])
    # The header is intact: sniffing still recognises the file ...
    assert is_ftopy(p)
    assert read_ftopy_metadata(p) == {"a": 1}
    # ... but loading names the problem and the sizes.
    with pytest.raises(ModelFileError, match="truncated") as info:
        load_ftopy(p)
    assert str(p) in str(info.value)
    assert "400" in str(info.value) and "350" in str(info.value)


def test_trailing_bytes_and_bad_offsets(tmp_path: Path) -> None:
    p = save_ftopy(tmp_path / "m.ftopy", {"x": np.arange(4, dtype=np.float32)}, {})
    p.write_bytes(p.read_bytes() + b"\x00" * 3)
    with pytest.raises(ModelFileError, match="3 unexpected bytes"):
        load_ftopy(p)
    meta = {"format": "factortopy", "format_version": "1", "factortopy": "{}"}
    q = tmp_path / "q.ftopy"
    header = {"__metadata__": meta, "x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}
    _write_raw_safetensors(q, header, b"\x00" * 8)
    with pytest.raises(ModelFileError, match=r"tensor 'x' declares offsets \[0, 8\)"):
        load_ftopy(q)


def test_header_length_bounds(tmp_path: Path) -> None:
    p = tmp_path / "m.ftopy"
    p.write_bytes(struct.pack("<Q", 200_000_000) + b"{}" + b"\x00" * 10)
    with pytest.raises(ModelFileError, match="200000000-byte header"):
        read_ftopy_metadata(p)
    p.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ModelFileError, match="1000-byte header"):
        read_ftopy_metadata(p)


def test_newer_format_version(tmp_path: Path) -> None:
    p = tmp_path / "new.ftopy"
    meta = {"format": "factortopy", "format_version": "2", "factortopy": '{"a": 1}'}
    _write_raw_safetensors(p, {"__metadata__": meta}, b"")
    expected = (
        "written by a newer napari-factortopy (format 2); this version reads up to 1; upgrade"
    )
    for fn in (load_ftopy, read_ftopy_metadata):
        with pytest.raises(ModelFileError) as info:
            fn(p)
        assert expected in str(info.value) and str(p) in str(info.value)
    # Still recognised as ours, so that opening it reports the upgrade message.
    assert is_ftopy(p)


def test_damaged_metadata(tmp_path: Path) -> None:
    p = tmp_path / "m.ftopy"
    meta = {"format": "factortopy", "format_version": "one", "factortopy": "{}"}
    _write_raw_safetensors(p, {"__metadata__": meta}, b"")
    with pytest.raises(ModelFileError, match="format_version 'one'"):
        load_ftopy(p)
    meta = {"format": "factortopy", "format_version": "1", "factortopy": "[1, 2"}
    _write_raw_safetensors(p, {"__metadata__": meta}, b"")
    with pytest.raises(ModelFileError, match="not a JSON object"):
        read_ftopy_metadata(p)


def test_atomic_write_keeps_existing_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "m.ftopy"
    good = {"x": np.arange(10, dtype=np.float32)}
    save_ftopy(target, good, {"version": "good"})
    before = target.read_bytes()

    real_save_file = st_numpy.save_file

    def failing_save_file(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata=metadata)
        # Leave a half-written file behind, then fail as a full disk would.
        Path(filename).write_bytes(Path(filename).read_bytes()[:20])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelfile.st_numpy, "save_file", failing_save_file)
    with pytest.raises(ModelFileError, match="could not write") as info:
        save_ftopy(target, {"x": np.zeros(10, dtype=np.float32)}, {"version": "bad"})
    assert str(target) in str(info.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ftopy"]

    def interrupted_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(modelfile.st_numpy, "save_file", interrupted_save_file)
    with pytest.raises(KeyboardInterrupt):
        save_ftopy(target, {"x": np.zeros(10, dtype=np.float32)}, {"version": "bad"})
    monkeypatch.undo()
    tensors, meta = load_ftopy(target)
    assert meta == {"version": "good"}
    np.testing.assert_array_equal(tensors["x"], good["x"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ftopy"]


def test_overwrite_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "m.ftopy"
    save_ftopy(target, {"x": np.ones(3)}, {"n": 1})
    save_ftopy(target, {"y": np.full(2, 4.0)}, {"n": 2})
    tensors, meta = load_ftopy(target)
    assert meta == {"n": 2} and list(tensors) == ["y"]
    np.testing.assert_array_equal(tensors["y"], [4.0, 4.0])
