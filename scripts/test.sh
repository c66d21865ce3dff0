#!/usr/bin/env bash
# Run the test suite, doing all set-up first (system packages, .venv, pip installs).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/core -k encoding`.
set -euo pipefail
# shellcheck source=scripts/_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"

# -n auto: one pytest-xdist worker per core, each with one torch thread (tests/conftest.py);
# --dist loadfile keeps a module (and its module-scoped fixtures) on one worker, so the
# longest fixture (tests/app/test_recovery.py, about 2.5 min) runs once beside the rest.
# On the 2-core machine CI uses this took the suite from 773 s to 376 s (BENCHMARKS.md).
# --durations=25: the 25 slowest tests, to keep the suite well under 15 minutes.
exec python -m pytest -q -n auto --dist loadfile --durations=25 "$@"
