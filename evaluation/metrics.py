"""Metric functions of the evaluation protocol (``dense-face eval``), each usable on its own.

Every metric runs a standard model from a local file; nothing is downloaded:

- identity: cosine similarity of insightface ArcFace embeddings (an ``.onnx`` recognition
  model or an insightface pack folder), faces aligned on our MediaPipe landmarks exactly as
  the ID encoder node aligns them (:class:`~dense_face.dense_face_core.id_embedding.ArcFaceEncoder`);
- head pose error: our estimator (MediaPipe landmarks + solvePnP, the pose the workflows
  condition on) on the generated face against the requested pose, in degrees;
- CLIP-T / CLIP-I: cosine similarity of a transformers ``CLIPModel``'s projected image and
  text (CLIP-T) or image and reference-image (CLIP-I) embeddings;
- FID: torch-fidelity's own TF-compatible InceptionV3 and Frechet distance
  (``torch_fidelity.calculate_metrics``), with the weight file given by the user;
- a second opinion on identity: dlib's 128-d ResNet face descriptor (``dlib`` /
  ``dlib-bin`` + the ``face_recognition_models`` package), when installed.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..headless.import_stubs import hollow_modules, torchvision_works
from ..dense_face_core.errors import DenseFaceInputError, MissingModelError, NoFaceError
from ..dense_face_core.id_embedding import (
    ArcFaceEncoder,
    average_embeddings,
    find_insightface_recognition,
)
from ..dense_face_core.images import is_image_file, read_image, to_rgb_uint8
from ..dense_face_core.landmarker import Face, box_iou, select_face

ANGLES = ("yaw", "pitch", "roll")


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    folder = Path(folder)
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.is_file() and is_image_file(p))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (each L2-normalised first)."""
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---------------------------------------------------------------- faces and pose

def largest_face(analyzer, image, name: str = "image", which: str | int = "largest") -> Face | None:
    """The face the workflows would pick (largest, at least 64 px), or None when there is none."""
    try:
        return select_face(analyzer.detect(image, name=name), which, name=name)
    except NoFaceError:
        return None


def face_pose(face: Face) -> dict[str, float]:
    return {"yaw": float(face.yaw), "pitch": float(face.pitch), "roll": float(face.roll)}


def angle_error(a: float, b: float) -> float:
    """|a - b| in degrees, wrapped to [0, 180]."""
    return abs((float(a) - float(b) + 180.0) % 360.0 - 180.0)


def pose_errors(target: dict[str, float], measured: dict[str, float]) -> dict[str, float]:
    """Absolute yaw/pitch/roll errors (degrees) and their mean, ``pose_mae``.

    ``pose_mae`` = (|Δyaw| + |Δpitch| + |Δroll|) / 3 with every difference wrapped to
    [-180, 180]; averaged over images it is the mean absolute error over all three angles.
    """
    errs = {f"{a}_err": angle_error(measured[a], target[a]) for a in ANGLES}
    errs["pose_mae"] = sum(errs.values()) / 3.0
    return errs


# ---------------------------------------------------------------- identity: ArcFace

def resolve_arcface_model(path: str | os.PathLike) -> Path:
    """An ArcFace recognition ``.onnx``: the file itself, or the one inside an insightface pack folder."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".onnx":
            raise DenseFaceInputError(f"--insightface-model: {p} is not an .onnx file or a model pack folder")
        return p
    if p.is_dir():
        return find_insightface_recognition(p.name, [p.parent])
    raise MissingModelError(f"--insightface-model: {p} not found (give an insightface recognition .onnx, e.g. "
                            f"antelopev2/glintr100.onnx, or the unzipped pack folder)")


def onnx_providers() -> list[str]:
    try:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    except Exception:
        return ["CPUExecutionProvider"]
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or available


class ArcFaceIdentity:
    """insightface ArcFace embeddings of detected faces (aligned on MediaPipe's five points)."""

    def __init__(self, model_path: str | os.PathLike, providers: Sequence[str] | None = None):
        self.path = resolve_arcface_model(model_path)
        self.encoder = ArcFaceEncoder(self.path, f"insightface/{self.path.parent.name}",
                                      providers=list(providers or onnx_providers()))
        self.name = f"{self.path.parent.name}/{self.path.name}"

    def embed(self, image, face: Face) -> np.ndarray:
        return self.encoder.embed(to_rgb_uint8(image), face.points)

    def embed_photos(self, analyzer, paths: Iterable[str | os.PathLike]) -> list[np.ndarray]:
        """Embeddings of the largest face of each photo (photos without a face are left out)."""
        out = []
        for p in paths:
            img = read_image(p)
            face = largest_face(analyzer, img, name=str(p))
            if face is not None:
                out.append(self.embed(img, face))
        return out


def identity_cosine(encoder: ArcFaceIdentity, analyzer, generated, reference) -> float | None:
    """ArcFace cosine similarity of the largest faces of two images; None when either has no face."""
    gen, ref = to_rgb_uint8(generated), to_rgb_uint8(reference)
    fg, fr = largest_face(analyzer, gen, "generated"), largest_face(analyzer, ref, "reference")
    if fg is None or fr is None:
        return None
    return cosine(encoder.embed(gen, fg), encoder.embed(ref, fr))


def mean_embedding(embeddings: Sequence[np.ndarray]) -> np.ndarray | None:
    """Mean of unit embeddings, renormalised (how the ID encoder averages several photos)."""
    if not embeddings:
        return None
    return average_embeddings(embeddings, "eval").embedding


# ---------------------------------------------------------------- CLIP-T / CLIP-I

class ClipScorer:
    """A transformers ``CLIPModel`` + processor from a local folder (``save_pretrained`` layout)."""

    def __init__(self, folder: str | os.PathLike, device: str | None = None):
        import torch
        from transformers import AutoProcessor, CLIPModel

        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise MissingModelError(f"--clip: {folder} is not a transformers CLIP model folder (no config.json); "
                                    f"give a local copy of e.g. openai/clip-vit-large-patch14")
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval().to(self.device)
        self.processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        self.name = folder.name

    def _features(self, out) -> np.ndarray:
        # transformers < 5 returns the projected tensor, >= 5 an output whose pooler_output is it
        t = out if self.torch.is_tensor(out) else out.pooler_output
        t = self.torch.nn.functional.normalize(t.float(), dim=-1)
        return t.cpu().numpy()

    def image_features(self, images: Sequence) -> np.ndarray:
        """(N, D) unit image embeddings; images are RGB arrays or file paths."""
        arrays = [to_rgb_uint8(read_image(i) if isinstance(i, (str, os.PathLike)) else i) for i in images]
        inputs = self.processor(images=arrays, return_tensors="pt")
        with self.torch.inference_mode():
            out = self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device))
        return self._features(out)

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        tok = self.processor.tokenizer
        inputs = tok(list(texts), padding=True, truncation=True, max_length=min(77, tok.model_max_length),
                     return_tensors="pt")
        with self.torch.inference_mode():
            out = self.model.get_text_features(**{k: v.to(self.device) for k, v in inputs.items()})
        return self._features(out)

    def clip_t(self, image, text: str) -> float:
        """CLIP-T: cosine(image embedding, text embedding)."""
        return cosine(self.image_features([image])[0], self.text_features([text])[0])

    def clip_i(self, image, reference) -> float:
        """CLIP-I: cosine(image embedding, reference image embedding)."""
        feats = self.image_features([image, reference])
        return cosine(feats[0], feats[1])


# ---------------------------------------------------------------- FID (torch-fidelity)

FIDELITY_INSTALL = "pip install --no-deps torch-fidelity  (its FID path needs torch, numpy, scipy, pillow, tqdm)"


@contextlib.contextmanager
def _torchvision_import_stub():
    """Hollow torchvision modules while torch_fidelity imports.

    torch-fidelity's package ``__init__`` imports its dataset, CLIP, VGG and DINOv2 helpers,
    which import torchvision; the FID path (its InceptionV3 and Frechet distance) uses none
    of it.
    """
    with hollow_modules(("torchvision", "torchvision.datasets", "torchvision.transforms",
                         "torchvision.transforms.functional", "torchvision.models")) as mods:
        for cls in ("CIFAR10", "CIFAR100", "STL10"):
            setattr(mods["torchvision.datasets"], cls, type(cls, (), {}))
        yield


def load_torch_fidelity():
    """``import torch_fidelity``, with the torchvision import stand-in where torchvision is unusable."""
    if "torch_fidelity" in sys.modules:
        return sys.modules["torch_fidelity"]
    if importlib.util.find_spec("torch_fidelity") is None:
        raise MissingModelError(f"FID needs the torch-fidelity package: {FIDELITY_INSTALL}")
    if torchvision_works():
        return importlib.import_module("torch_fidelity")
    print("dense-face eval: torchvision is not usable here; torch-fidelity is imported with a hollow torchvision "
          "stand-in (its FID path does not use torchvision)", file=sys.stderr)
    with _torchvision_import_stub():
        return importlib.import_module("torch_fidelity")


def fid_unavailable_reason() -> str | None:
    if importlib.util.find_spec("torch_fidelity") is None:
        return f"torch-fidelity is not installed ({FIDELITY_INSTALL})"
    return None


@contextlib.contextmanager
def checked_inception_weights(path: str | os.PathLike):
    """Yield a ``.pth`` path torch-fidelity can load, after proving it holds tensors only.

    torch-fidelity reads the file with ``torch.load(weights_only=False)``; this project only
    unpickles with ``weights_only=True``, so the file is read that way first and refused if
    it holds anything but tensors (then the library's own load executes nothing else).
    A ``.safetensors`` copy of the same state dict is accepted and converted to a temporary
    ``.pth``.
    """
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingModelError(f"--inception: {p} not found (torch-fidelity's InceptionV3 FID weights, "
                                f"weights-inception-2015-12-05-6726825d.pth)")
    if p.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
        with tempfile.TemporaryDirectory(prefix="dense-face-inception-") as tmp:
            out = Path(tmp) / "inception.pth"
            torch.save(state, out)
            yield out
        return
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DenseFaceInputError(f"--inception: {p} is not a plain tensor state dict (refused to unpickle it "
                                  f"fully: {exc.__class__.__name__}); save it as a state dict or .safetensors") from exc
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise DenseFaceInputError(f"--inception: {p} is not a state dict of tensors")
    yield p


def _resize_center_crop(img, size: int):
    """Shorter side to ``size`` (bicubic), then the central ``size`` x ``size`` square."""
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def _image_dataset(paths: Sequence[Path], size: int | None):
    """A torch Dataset of uint8 CHW tensors, what torch-fidelity's image folders give its extractor."""
    import torch
    from PIL import Image
    from torch.utils.data import Dataset

    class Images(Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            with Image.open(paths[i]) as im:
                im = im.convert("RGB")
                if size:
                    im = _resize_center_crop(im, size)
                arr = np.asarray(im, np.uint8)
            return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    return Images()


def frechet_inception_distance(generated: Sequence[str | os.PathLike], reference: Sequence[str | os.PathLike],
                               inception_weights: str | os.PathLike, size: int | None = 299,
                               batch_size: int = 32, cuda: bool | None = None, features: str = "2048") -> float:
    """FID between two image sets with ``torch_fidelity.calculate_metrics`` (InceptionV3 pool3, 2048-d).

    ``features`` is the library's ``feature_layer_fid``: "2048" (pool3, the standard FID)
    or one of its smaller pools "64", "192", "768" (cheaper; comparable only with itself).

    Images are read as RGB uint8; with ``size`` each is resized (shorter side, bicubic) and
    centre-cropped to ``size`` square first (the sets may mix sizes), then the library's
    extractor resizes to 299 as TensorFlow did and computes the Frechet distance of the
    two Gaussians fitted to the features.
    """
    import torch

    generated, reference = [Path(p) for p in generated], [Path(p) for p in reference]
    if len(generated) < 2 or len(reference) < 2:
        raise DenseFaceInputError(f"FID needs at least 2 images on each side (got {len(generated)} generated, "
                                  f"{len(reference)} reference)")
    tf = load_torch_fidelity()
    if cuda is None:
        cuda = torch.cuda.is_available()
    with checked_inception_weights(inception_weights) as weights:
        result = tf.calculate_metrics(
            input1=_image_dataset(generated, size), input2=_image_dataset(reference, size), fid=True,
            feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights),
            feature_layer_fid=str(features), batch_size=batch_size, cuda=cuda, cache=False, save_cpu_ram=True, verbose=False)
    return float(result["frechet_inception_distance"])


# ---------------------------------------------------------------- dlib second opinion

DLIB_MATCH_THRESHOLD = 0.6  # dlib's / face_recognition's same-person distance threshold
DLIB_MODELS_ENV = "DENSE_FACE_DLIB_MODELS"


def dlib_models_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """Folder with dlib's shape_predictor_5 and ResNet .dat files: explicit, $DENSE_FACE_DLIB_MODELS,
    or the installed ``face_recognition_models`` package (found without importing it: its
    ``__init__`` needs ``pkg_resources``, gone from setuptools >= 81)."""
    for cand in (explicit, os.environ.get(DLIB_MODELS_ENV)):
        if cand:
            return Path(cand).expanduser()
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "models"
    return None


def dlib_unavailable_reason(models_dir: str | os.PathLike | None = None) -> str | None:
    if importlib.util.find_spec("dlib") is None:
        return "dlib is not installed (pip install dlib-bin face_recognition_models)"
    d = dlib_models_dir(models_dir)
    if d is None:
        return "dlib's model files are not installed (pip install face_recognition_models)"
    missing = [n for n in DlibIdentity.FILES if not (d / n).is_file()]
    if missing:
        return f"dlib model files missing in {d}: {', '.join(missing)}"
    return None


class DlibIdentity:
    """dlib's face recognition ResNet (128-d, distance < 0.6 = same person on LFW's protocol)."""

    FILES = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")

    def __init__(self, models_dir: str | os.PathLike | None = None):
        reason = dlib_unavailable_reason(models_dir)
        if reason:
            raise MissingModelError(reason)
        import dlib

        d = dlib_models_dir(models_dir)
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(d / self.FILES[0]))
        self.net = dlib.face_recognition_model_v1(str(d / self.FILES[1]))

    def descriptor(self, image, box: tuple[float, float, float, float] | None = None) -> np.ndarray | None:
        """128-d descriptor of the face dlib's HOG detector finds nearest ``box`` (largest without one);
        where it finds none, ``box`` itself is used; None when neither exists."""
        rgb = np.ascontiguousarray(to_rgb_uint8(image))
        dets = list(self.detector(rgb, 1))
        rect = None
        if dets:
            if box is None:
                rect = max(dets, key=lambda r: r.area())
            else:
                rect = max(dets, key=lambda r: box_iou((r.left(), r.top(), r.right(), r.bottom()), box))
                if box_iou((rect.left(), rect.top(), rect.right(), rect.bottom()), box) < 0.2:
                    rect = None
        if rect is None and box is not None:
            rect = self.dlib.rectangle(*(round(v) for v in box))
        if rect is None:
            return None
        shape = self.predictor(rgb, rect)
        return np.asarray(self.net.compute_face_descriptor(rgb, shape, 0), np.float64)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))




# ---------------------------------------------------------------- aggregation

@dataclass
class Stat:
    mean: float | None
    std: float | None
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n}

    def text(self, digits: int = 3) -> str:
        if self.n == 0 or self.mean is None:
            return "-"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.n})"


def summarize(values: Iterable[float | None]) -> Stat:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of the values that exist."""
    v = np.array([float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))],
                 np.float64)
    if v.size == 0:
        return Stat(None, None, 0)
    return Stat(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size))
