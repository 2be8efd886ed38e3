#!/usr/bin/env bash
# Mechuri's two commands for a fresh machine (Debian/Ubuntu, Python >= 3.11, no GPU needed):
#   ./dev.sh demo   set everything up, then open the offline demo chat
#   ./dev.sh test   set everything up (if needed), then run ruff and the test suite
# Setup makes .venv and installs the project with the CPU build of torch (see constraints.txt).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${MECHURI_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

setup() {
  if [[ ! -x "$VENV/bin/mechuri" || pyproject.toml -nt "$VENV/.installed" || constraints.txt -nt "$VENV/.installed" ]]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
      || { echo "Mechuri needs Python >= 3.11: install it, or point PYTHON=/path/to/python3.11"; exit 1; }
    [[ -d "$VENV" ]] || "$PYTHON" -m venv "$VENV" \
      || { echo "could not create $VENV: on Debian/Ubuntu run 'apt-get install python3-venv'"; exit 1; }
    "$VENV/bin/pip" install --quiet --upgrade pip
    # constraints.txt pins the CPU build of torch; an unpinned torch pulls several GB of CUDA wheels.
    "$VENV/bin/pip" install --quiet -c constraints.txt -e '.[dev]'
    touch "$VENV/.installed"
  fi
}

case "${1:-demo}" in
  demo)
    setup
    shift || true
    exec "$VENV/bin/mechuri" chat --demo "$@"
    ;;
  test)
    setup
    shift || true
    "$VENV/bin/ruff" check .
    exec "$VENV/bin/pytest" "$@"
    ;;
  setup)
    setup
    ;;
  *)
    echo "usage: ./dev.sh [demo|test|setup]"; exit 2
    ;;
esac
