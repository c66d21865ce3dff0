"""atomic_path: the target is replaced whole or not at all."""

import numpy as np
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


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from napari_factortopy.core.host import HOST_ID
    from napari_factortopy.core.modelfile import save_ftopy

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "m.ftopy"
    host = HOST_ID
    killed = tmp_path / f".m.ftopy.{host}-{dead.pid}.0123abcd.tmp"  # writer gone
    live = tmp_path / f".m.ftopy.{host}-1.0123abce.tmp"  # pid 1 runs: a live writer
    other_host = tmp_path / f".m.ftopy.ffffffff-{dead.pid}.0123abcf.tmp"  # recent, elsewhere
    old = tmp_path / ".m.ftopy.6f1e0c2b4a5d4e3f8a9b0c1d2e3f4a5b.tmp"  # old style, 1 h old
    unrelated = tmp_path / f".other.ftopy.{host}-{dead.pid}.0123abcd.tmp"
    for p in (killed, live, other_host, old, unrelated):
        p.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    save_ftopy(target, {"x": np.zeros(2)}, {})
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["m.ftopy", live.name, other_host.name, unrelated.name])
    # atomic_path follows the same rule
    killed.write_bytes(b"partial")
    with atomic_path(target) as tmp:
        assert f"-{os.getpid()}." in tmp.name
        tmp.write_bytes(b"new")
    assert not killed.exists() and live.exists()


def test_atomic_path_honours_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o077)
    try:
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
            os.chmod(tmp, 0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o600
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("x")
            os.chmod(tmp, 0o600)  # whatever the writer chose
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o644
