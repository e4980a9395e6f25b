#!/usr/bin/env bash
# napari-gravity developer entry point.
#   bash dev.sh napari   set up, then open napari with the plugin and a sample mammogram
#   bash dev.sh demo     set up, then the headless equivalent (synthesise -> detect -> evaluate)
#   bash dev.sh test     set up, then run the whole default test suite (under Xvfb)
#   bash dev.sh setup    only set up (.venv with everything, system packages for the GUI)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${GRAVITY_VENV:-.venv}
PY="$VENV/bin/python"

SYS_PKGS="xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 \
libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 \
libxcb-cursor0 libdbus-1-3 libfontconfig1"

system_packages() {
    # Xvfb + Mesa for napari/Qt on a machine without a screen (Debian/Ubuntu).
    local missing=()
    for p in $SYS_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null; then
        echo "dev.sh: please install: ${missing[*]}" >&2; return 0
    fi
    local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "dev.sh: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_env() {
    if [ ! -x "$PY" ]; then python3 -m venv "$VENV"; fi
    # Skip the (slow) resolver when pyproject.toml has not changed since the last install.
    local stamp="$VENV/.gravity-installed" want
    want=$(sha1sum pyproject.toml | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        "$PY" -m pip install -q --upgrade pip >/dev/null
        "$PY" -m pip install -q -e ".[all]"
        echo "$want" > "$stamp"
    fi
}

setup() { system_packages; python_env; }

cmd=${1:-help}; shift || true
case "$cmd" in
    setup) setup ;;
    test)
        setup
        export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-xcb} MPLBACKEND=Agg
        "$VENV/bin/ruff" check --quiet . && echo "ruff: clean"
        xvfb-run -a -s "-screen 0 1600x1200x24" "$PY" -m pytest -m "not slow and not gpu" "$@" ;;
    napari)
        setup
        exec "$PY" -m napari_gravity.plugin "$@" ;;
    demo)
        setup
        exec "$VENV/bin/gravity" demo "$@" ;;
    *) sed -n '2,7p' "$0"; exit 2 ;;
esac
