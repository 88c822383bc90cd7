#!/usr/bin/env bash
# One command from a fresh clone: set up (scripts/setup.sh, skipped when done), then `edgecls demo`
# (train → export with the parity table → run, on a small generated dataset; output in runs/demo/).
# Extra arguments go to `edgecls demo`, e.g. scripts/demo.sh --epochs 5
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${EDGECLS_VENV:-.venv}/bin/edgecls" demo "$@"
