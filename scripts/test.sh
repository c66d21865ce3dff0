#!/usr/bin/env bash
# Run the test suite, doing all set-up first (system packages, .venv, pip installs).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/core -k encoding`.
set -euo pipefail
# shellcheck source=scripts/_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"

exec python -m pytest -q "$@"
