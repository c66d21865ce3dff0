"""Test-wide settings: nothing in the test suite may reach a model hub, and parallel
workers do not fight over the cores."""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `scripts/test.sh` runs one pytest-xdist worker per core. Two workers each with
    # torch's default of one thread per core oversubscribe the machine, and OpenMP's
    # spinning threads then slow training tests several-fold (the suite took 662 s with
    # two workers at two threads each, 376 s at one each, 773 s serially). Set before
    # any test module imports torch; subprocesses the tests start inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    if "torch" in sys.modules:  # a plugin imported it first
        sys.modules["torch"].set_num_threads(1)
