"""atomic_path: the target is replaced whole or not at all."""

import pytest

from napari_factortopy.core.atomic import atomic_path


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "x.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".json")
        tmp.write_text("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]  # no temp file left


def test_suffix_for_format_sniffing_writers(tmp_path):
    with atomic_path(tmp_path / "lh.map.func.gii", suffix=".func.gii") as tmp:
        assert tmp.name.endswith(".func.gii")
        tmp.write_bytes(b"x")
    assert (tmp_path / "lh.map.func.gii").read_bytes() == b"x"
