"""Face restoration of the aligned crop before annotation (the paper restores its faces with CodeFormer).

The restorer is a GFPGAN or CodeFormer network exported to ONNX, run with onnxruntime from a
local file. This is the interface of the community exports (e.g. ``GFPGANv1.4.onnx``,
``codeformer.onnx``): one RGB image input NCHW float32 in [-1, 1] at 512x512 (FFHQ-aligned,
which our crop is), the same out, and for CodeFormer a scalar fidelity input (``weight``, its
``w``: 0 = strongest restoration, 1 = closest to the input). The PyPI packages ``gfpgan``,
``codeformer-pip``, ``facexlib`` and ``basicsr`` all import torchvision and pull a CUDA torch,
so they cannot run beside a CPU torch; an ONNX export needs neither.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_SIZE = 512
DEFAULT_FIDELITY = 0.5
_FIDELITY_NAMES = ("weight", "w", "fidelity", "fidelity_weight")
_NUMPY_TYPES = {"tensor(double)": np.float64, "tensor(float)": np.float32, "tensor(float16)": np.float16}


def _fail(path: Path, why: str):
    from ..dense_face_core.errors import MissingModelError

    raise MissingModelError(f"--restore-model {path}: {why}; expected a face-restoration .onnx (GFPGAN or "
                            "CodeFormer export: RGB NCHW float32 in [-1, 1] in and out, 512x512)")


class OnnxRestorer:
    """``restorer(crops)``: uint8 RGB aligned crops (any size) -> restored crops of the same size."""

    def __init__(self, path, fidelity: float = DEFAULT_FIDELITY, device: str = "cpu", threads: int = 1):
        import onnxruntime as ort

        p = Path(path).expanduser()
        if not (p.is_file() and p.suffix.lower() == ".onnx"):
            _fail(p, "no such .onnx file")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(p), opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 (onnxruntime raises its own types for a bad file)
            _fail(p, f"onnxruntime cannot load it ({type(exc).__name__})")
        self.name, self.path, self.fidelity = p.stem, p, float(fidelity)
        self._inputs(p)

    def _inputs(self, p: Path) -> None:
        images = [i for i in self.session.get_inputs() if len(i.shape) == 4]
        if len(images) != 1 or images[0].shape[1] not in (3, "3") or len(self.session.get_outputs()[0].shape) != 4:
            _fail(p, "its inputs/outputs are not one 4-D RGB image")
        image = images[0]
        self.input_name = image.name
        h = image.shape[2]
        self.size = int(h) if isinstance(h, int) and h > 0 else DEFAULT_SIZE
        self.batched = not (isinstance(image.shape[0], int) and image.shape[0] > 0)
        self.extra = {}
        for i in self.session.get_inputs():
            if i is image or i.name == image.name:
                continue
            if i.name.lower() not in _FIDELITY_NAMES or i.type not in _NUMPY_TYPES:
                _fail(p, f"unknown input {i.name!r}")
            shape = [1] * len(i.shape)
            self.extra[i.name] = np.full(shape, self.fidelity, _NUMPY_TYPES[i.type])
        self.uses_fidelity = bool(self.extra)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x, **self.extra})[0]

    def __call__(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        import cv2

        if not crops:
            return []
        sizes = [c.shape[0] for c in crops]
        xs = []
        for c in crops:
            c = c if c.shape[0] == self.size else cv2.resize(
                c, (self.size, self.size), interpolation=cv2.INTER_AREA if c.shape[0] > self.size else cv2.INTER_CUBIC)
            xs.append(c.transpose(2, 0, 1).astype(np.float32) / np.float32(127.5) - np.float32(1.0))
        x = np.stack(xs)
        y = self._run(x) if self.batched else np.concatenate([self._run(x[i:i + 1]) for i in range(len(x))])
        out = []
        for img, size in zip(y, sizes):
            u8 = np.rint((np.clip(img.astype(np.float32), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
            u8 = np.ascontiguousarray(u8.transpose(1, 2, 0))
            if size != self.size:
                u8 = cv2.resize(u8, (size, size), interpolation=cv2.INTER_AREA if size < self.size else cv2.INTER_CUBIC)
            out.append(u8)
        return out

    def record(self) -> dict:
        """What a sample's meta says about its restoration."""
        return {"model": self.name, "fidelity": self.fidelity if self.uses_fidelity else None}
