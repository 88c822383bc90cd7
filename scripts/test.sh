#!/usr/bin/env bash
# One command from a fresh clone: set up (scripts/setup.sh, skipped when done), then the whole test suite.
# CI (.ci/run) ends with exactly this script. Extra arguments go to pytest, e.g. scripts/test.sh -m 'not slow'
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. "${EDGECLS_VENV:-.venv}/bin/activate"   # tests that start a subprocess find this venv's tools first
exec python -m pytest -q "$@"
