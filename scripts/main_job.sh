#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then run the shipped personalisation workflow
# headless (dense-face run, in-process ComfyUI). With no trained models present it runs on the
# labelled RANDOM-WEIGHT demo set, as a face swap on photos that ship in installed packages,
# and says so. Outputs go to ./outputs (override with OUT=...; pass extra `dense-face run`
# options as arguments, e.g. --steps 50 --reference me.jpg).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-outputs}
URL=https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/latest/face_landmarker.task
if [ -z "${DENSE_FACE_LANDMARKER:-}" ]; then
  for candidate in ../shared/models/face_landmarker*.task ../../models/mediapipe/face_landmarker*.task \
                   "$HOME/.cache/dense-face/face_landmarker.task"; do
    if [ -f "$candidate" ]; then DENSE_FACE_LANDMARKER=$candidate; break; fi
  done
fi
if [ -z "${DENSE_FACE_LANDMARKER:-}" ]; then
  DENSE_FACE_LANDMARKER="$HOME/.cache/dense-face/face_landmarker.task"
  mkdir -p "$(dirname "$DENSE_FACE_LANDMARKER")"
  echo "main job: downloading the MediaPipe face landmarker from $URL"
  if ! curl -fsSL "$URL" -o "$DENSE_FACE_LANDMARKER.part"; then
    rm -f "$DENSE_FACE_LANDMARKER.part"  # a cut-off download is not left behind
    echo "main job: could not download $URL" >&2
    echo "main job: download it on a machine that can, then put it at $DENSE_FACE_LANDMARKER" >&2
    echo "          (or set DENSE_FACE_LANDMARKER=/path/to/face_landmarker.task)" >&2
    exit 1
  fi
  mv "$DENSE_FACE_LANDMARKER.part" "$DENSE_FACE_LANDMARKER"
fi
export DENSE_FACE_LANDMARKER
# glibc: keep freed memory in the heap instead of re-mapping ComfyUI's large CPU attention buffers
# every step (README, Measured: "CPU tip"); a one-shot job does not need memory handed back.
export MALLOC_MMAP_MAX_=${MALLOC_MMAP_MAX_:-0} MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-1099511627776}
# 12 steps keep the CPU demo to a few minutes; real runs use the workflow's 50 (the authors').
.venv/bin/dense-face run --workflow dense_face_personalize --steps 12 --out "$OUT" "$@"
