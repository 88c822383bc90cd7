#!/usr/bin/env bash
# Set-up shared by scripts/demo.sh and scripts/test.sh (and .ci/run): a venv with the pinned torch pair and the
# project installed editable with every CPU extra. Idempotent: a stamp in the venv, keyed on pyproject.toml, this
# script and the Python version, makes a second call a no-op (a changed pyproject.toml installs again).
#
#   EDGECLS_VENV  the venv folder (default: .venv; CI uses .venv-ci)
#   PYTHON        the interpreter that creates it (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

venv=${EDGECLS_VENV:-.venv}
python=${PYTHON:-python3}
# torch/torchvision pinned to one pair: a looser pin lets pip pick a newer pair and download gigabytes
torch_pins="torch==2.14.1 torchvision==0.29.1"

command -v "$python" >/dev/null || { echo "error: $python not found; set PYTHON=/path/to/python3 (3.10+)" >&2; exit 2; }
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "error: $("$python" --version 2>&1) is too old: torch 2.14 needs Python 3.10+ (set PYTHON=...)" >&2; exit 2; }

key=$( { cat pyproject.toml scripts/setup.sh; "$python" --version 2>&1; } | sha256sum | cut -c1-16)
stamp="$venv/.edgecls-setup-$key"
if [ -f "$stamp" ] && "$venv/bin/python" -c "import edgecls.cli" 2>/dev/null; then
    echo "setup: $venv is up to date (pyproject.toml unchanged)" >&2
    exit 0
fi

echo "setup: creating/updating $venv (torch pinned, editable install with [all]; a few minutes the first time)" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install -q $torch_pins
"$venv/bin/python" -m pip install -q -e ".[all]"
rm -f "$venv"/.edgecls-setup-*
touch "$stamp"
echo "setup: $("$venv/bin/edgecls" --version) ready in $venv" >&2
