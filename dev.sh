#!/usr/bin/env bash
# Mechuri's two commands for a fresh machine (Debian/Ubuntu, Python >= 3.11, no GPU needed):
#   ./dev.sh demo   set everything up, then open the offline demo chat
#   ./dev.sh test   set everything up (if needed), then run ruff, the import contracts and the test suite
#   ./dev.sh lock   refresh requirements.lock: resolve pyproject.toml's ranges anew in a scratch venv, test nothing
# Setup makes .venv and installs the project with exactly the versions in requirements.lock (the set CI tested; torch
# is the CPU build). pyproject.toml keeps ranges for people who install the package into their own environment.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${MECHURI_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

setup() {
  if [[ ! -x "$VENV/bin/mechuri" || pyproject.toml -nt "$VENV/.installed" || requirements.lock -nt "$VENV/.installed" ]]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
      || { echo "Mechuri needs Python >= 3.11: install it, or point PYTHON=/path/to/python3.11"; exit 1; }
    [[ -d "$VENV" ]] || "$PYTHON" -m venv "$VENV" \
      || { echo "could not create $VENV: on Debian/Ubuntu run 'apt-get install python3-venv'"; exit 1; }
    "$VENV/bin/pip" install --quiet --upgrade pip
    # The lock pins every package, torch's CPU build among them; an unpinned torch pulls several GB of CUDA wheels.
    "$VENV/bin/pip" install --quiet -c requirements.lock -e '.[dev]'
    touch "$VENV/.installed"
  fi
}

lock() {
  local scratch
  scratch=$(mktemp -d)
  "$PYTHON" -m venv "$scratch/venv"
  "$scratch/venv/bin/pip" install --quiet --upgrade pip
  # constraints.txt holds only what must never float (torch's CPU build); everything else resolves from pyproject.toml.
  "$scratch/venv/bin/pip" install --quiet -c constraints.txt -e '.[dev]'
  {
    echo "# The exact versions ./dev.sh installs and CI tests. Refresh with ./dev.sh lock, then run ./dev.sh test."
    echo "# Generated $(date -u +%Y-%m-%d) with $("$scratch/venv/bin/python" --version)."
    # A local label (+cpu) would refuse the same release from another index; the version alone matches it.
    "$scratch/venv/bin/pip" freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'
  } > requirements.lock
  rm -rf "$scratch"
  echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
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
    "$VENV/bin/lint-imports"  # the layers and no import cycles (pyproject.toml [tool.importlinter])
    exec "$VENV/bin/pytest" "$@"
    ;;
  setup)
    setup
    ;;
  lock)
    lock
    ;;
  *)
    echo "usage: ./dev.sh [demo|test|setup|lock]"; exit 2
    ;;
esac
