#!/usr/bin/env bash
# Run the test suite, doing all set-up first (system packages, .venv, pip installs).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/core -k encoding`.
set -euo pipefail
# shellcheck source=scripts/_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"

# --durations=25: the 25 slowest tests, to keep the suite under 10 minutes from a fresh clone
exec python -m pytest -q --durations=25 "$@"
