#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, then the Comfy Registry check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLCONFIGDIR=${MPLCONFIGDIR:-$(mktemp -d)}
.venv/bin/python -m pytest -q "$@"
echo "comfy node validate:"
(home=$(mktemp -d); HOME=$home .venv/bin/comfy --skip-prompt --no-json node validate)
