#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, then the Comfy Registry check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The frontend tests load the shipped workflows in headless Chromium (Debian's package);
# without it they skip with a reason.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "test: could not install chromium; the browser tests will skip"
fi
export MPLCONFIGDIR=${MPLCONFIGDIR:-$(mktemp -d)}
.venv/bin/python -m pytest -q "$@"
# Compatibility pass on the 2024 ComfyUI build: the pack loads, the face-mode invariants hold, one
# shipped workflow runs end to end on a real server and in process.
echo "compatibility pass on the 2024 ComfyUI (.comfyui-2024):"
COMFYUI_PATH="$PWD/.comfyui-2024" .venv/bin/python -m pytest -q tests/test_comfy_load.py tests/test_face_mode.py \
  "tests/test_workflows_run.py::test_api_workflow_runs_on_server[dense_face_face_swap_api]" \
  "tests/test_workflows_run.py::test_face_swap_demo_changes_only_the_face"
echo "comfy node validate:"
(home=$(mktemp -d); HOME=$home .venv/bin/comfy --skip-prompt --no-json node validate)
