# shellcheck shell=bash
# Shared set-up for scripts/test.sh and scripts/demo.sh; source it, don't run it.
#
# On a fresh Debian machine (as root) it installs the system libraries that Qt needs to
# run headless under Xvfb, creates .venv, installs the pinned torch and then the project
# with all its extras. A stamp file keyed on pyproject.toml makes reruns skip pip.
#
# Afterwards: the working directory is the repository root, .venv/bin is first on PATH,
# and the offline / headless environment variables are exported.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

VENV="$REPO_ROOT/.venv"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
EXTRAS="napari,backbones,render,test"

# Xvfb + what PyQt6's xcb platform plugin and vispy's OpenGL need, checked with
# `ldd` on the PyQt6 plugins and by starting a QApplication under xvfb-run.
APT_PACKAGES=(
    xvfb xauth
    libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libdbus-1-3 libfontconfig1 libfreetype6
    libx11-6 libx11-xcb1 libxkbcommon0 libxkbcommon-x11-0
    libxcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
    libxcb-render0 libxcb-render-util0 libxcb-shape0 libxcb-shm0 libxcb-sync1
    libxcb-xfixes0 libxcb-xkb1
)

_log() { printf '[setup] %s\n' "$*" >&2; }

_install_system_packages() {
    if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        _log "no dpkg/apt-get: skipping system packages (${APT_PACKAGES[*]})"
        return 0
    fi
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            _log "not root and no sudo: cannot install ${missing[*]}"
            return 0
        fi
    fi
    _log "installing system packages: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

_find_python() {
    local cand
    for cand in python3.11 python3; do
        if command -v "$cand" >/dev/null 2>&1 \
            && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
            echo "$cand"
            return 0
        fi
    done
    _log "need Python >= 3.10 (python3.11 or python3)"
    return 1
}

_install_python_packages() {
    if [ ! -x "$VENV/bin/python" ]; then
        local py
        py="$(_find_python)"
        _log "creating $VENV with $py"
        "$py" -m venv "$VENV"
    fi
    local hash stamp
    hash="$({ cat pyproject.toml; echo "${TORCH_PINS[*]} $EXTRAS"; } | sha256sum | cut -c1-16)"
    stamp="$VENV/.installed-$hash"
    if [ -f "$stamp" ]; then
        return 0
    fi
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
    _log "installing ${TORCH_PINS[*]}"
    "$VENV/bin/python" -m pip install "${TORCH_PINS[@]}"
    _log "installing the project: -e .[$EXTRAS]"
    # torch is already satisfied (pyproject asks torch>=2.1), so this keeps the pin.
    "$VENV/bin/python" -m pip install -e ".[$EXTRAS]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
}

_install_system_packages
_install_python_packages

export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export MPLBACKEND=Agg
