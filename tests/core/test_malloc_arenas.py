"""The C allocator's arenas capped for streamed training (core.runtime.limit_malloc_arenas):
threads that allocate at once get arenas of their own, up to 8 per core, unless capped."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import ctypes, sys, threading
    from napari_factortopy.core.runtime import limit_malloc_arenas
    applied = limit_malloc_arenas(2) if sys.argv[1] == "limit" else None
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    start = threading.Barrier(8)
    def work():  # ctypes calls release the GIL: the threads allocate at the same time
        start.wait()
        for _ in range(20000):
            libc.free(libc.malloc(65536))
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p] * 2
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    fp = libc.fopen(sys.argv[2].encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(applied, open(sys.argv[2]).read().count("<heap nr="))
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_arenas_capped_for_threads_that_allocate_at_once(tmp_path):
    """Eight threads allocating at once: glibc's malloc_info lists 9 heaps (arenas)
    without the cap, 2 with it."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    heaps = {}
    for mode in ("limit", "none"):
        out = subprocess.run(
            [sys.executable, str(script), mode, str(tmp_path / f"{mode}.xml")],
            capture_output=True, text=True, check=True, env=env,
        ).stdout.split()  # fmt: skip
        heaps[mode] = int(out[1])
        if mode == "limit":
            assert out[0] == "True"
    assert heaps["limit"] <= 2 < heaps["none"], heaps
