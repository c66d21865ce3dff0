#!/usr/bin/env bash
# Run the demo, doing all set-up first: builds the phantom subject, trains, writes the
# output folder (first argument unless it starts with '-'; default demo-out/).
# Further arguments go to `factortopy demo`.
set -euo pipefail
# shellcheck source=scripts/_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"

out="demo-out"
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    out="$1"
    shift
fi
exec factortopy demo --out "$out" "$@"
