"""Identity nodes: reference photos -> FACE_ID (insightface ArcFace or the authors' IR-SE50), or a saved embedding."""
from __future__ import annotations

import os

import comfy.model_management
import comfy.utils

from ..dense_face_core.crop import compute_face_crop, warp_to_crop
from ..dense_face_core.errors import DenseFaceInputError, MissingModelError
from ..dense_face_core.face_batch import identity_groups
from ..dense_face_core.id_embedding import (INSIGHTFACE_PACKS, IR_SE50, ArcFaceEncoder, IRSE50Encoder, as_identities,
                                            average_embeddings, find_insightface_recognition, identities_value,
                                            load_feature_file)
from ..dense_face_core.images import to_rgb_uint8
from ..dense_face_core.landmarker import select_face
from ..dense_face_core.official_checkpoint import ID_NETWORK_SUFFIX
from .comfy_side import CATEGORY
from .comfy_side.face_analysis import get_analyzer, landmarker_input
from .comfy_side.folders import embedding_choices, embedding_path, filenames, full_path, model_dirs
from .comfy_side.model_cache import FileModelCache
from .comfy_side.tensors import image_to_numpy

PROVIDERS = {"CPU": "CPUExecutionProvider", "CUDA": "CUDAExecutionProvider", "ROCm": "ROCMExecutionProvider",
             "CoreML": "CoreMLExecutionProvider", "DirectML": "DmlExecutionProvider"}
_encoders = FileModelCache()


def insightface_packs() -> list[str]:
    """The known packs, plus every other pack folder found under models/insightface/models/."""
    packs = list(INSIGHTFACE_PACKS)
    for root in model_dirs("insightface"):
        folder = os.path.join(root, "models")
        if os.path.isdir(folder):
            packs += sorted(p for p in os.listdir(folder) if p not in packs and os.path.isdir(os.path.join(folder, p)))
    return packs


def id_model_choices() -> list[str]:
    choices = [f"insightface/{pack}" for pack in insightface_packs()]
    return choices + [f"{IR_SE50}:{f}" for f in filenames("dense_face") if f.endswith(ID_NETWORK_SUFFIX)]


def _encoder(choice: str, provider: str):
    if choice.startswith("insightface/"):
        onnx = find_insightface_recognition(choice.split("/", 1)[1], model_dirs("insightface"))
        providers = list(dict.fromkeys([PROVIDERS.get(provider, provider), "CPUExecutionProvider"]))
        return _encoders.get(onnx, lambda: ArcFaceEncoder(onnx, choice, providers=providers), choice, provider)
    if choice.startswith(IR_SE50 + ":"):
        name = choice.split(":", 1)[1]
        path = full_path("dense_face", name)
        if path is None:
            raise MissingModelError(f"IR-SE50 weights '{name}' not found in ComfyUI/models/dense_face/ "
                                    f"(dense-face convert-official writes them beside the converted weights)")
        device = str(comfy.model_management.get_torch_device())
        return _encoders.get(path, lambda: IRSE50Encoder(path, device=device), device)
    raise DenseFaceInputError(f"id_model: unknown choice {choice!r}; expected one of {id_model_choices()}")


class DenseFaceIDEncoder:
    """IDEncoder: reference photos -> one averaged, L2-normalised identity embedding."""

    SEARCH_ALIASES = ["identity", "face id", "arcface", "insightface"]  # node search in ComfyUI 0.38+

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "reference": ("IMAGE", {"tooltip": "One or more photos of the person (one face each; the "
                                                   "largest face is used)."}),
                "id_model": (id_model_choices(), {"tooltip":
                             "Must match the network the Dense-Face weights were trained with (their metadata "
                             "names it): insightface packs live in ComfyUI/models/insightface/models/<pack>/; "
                             "'ir_se50:...' is the authors' network, extracted by dense-face convert-official."}),
                "provider": (list(PROVIDERS), {"default": "CPU", "tooltip": "onnxruntime execution provider "
                                                                           "for insightface models."}),
            },
            "optional": {
                "landmarker": landmarker_input(),
                "group_by": ("STRING", {"default": "", "tooltip":
                             "Empty: every reference photo averaged into one identity. 'each': one identity per "
                             "reference photo (a group: face i gets identity i). Groups such as '0+1, 2': "
                             "identity 0 averages photos 0 and 1, identity 1 is photo 2."}),
                "face_id": ("FACE_ID", {"tooltip": "Identities before these (chain encoders for a group, one "
                                                   "reference photo each: this encoder's identities come next)."}),
            },
        }

    RETURN_TYPES = ("FACE_ID",)
    RETURN_NAMES = ("face_id",)
    OUTPUT_TOOLTIPS = ("The identity (L2-normalised average of its photos), or one per group for a group photo "
                       "(after the chained face_id's), for Apply PC-Adapter.",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Identity embedding of the reference photos, aligned on MediaPipe landmarks: insightface "
                   "ArcFace (five points) or the authors' IR-SE50 (on their aligned 256 crop).")

    def encode(self, reference, id_model, provider="CPU", landmarker="auto", group_by="", face_id=None):
        analyzer = get_analyzer(landmarker)
        encoder = _encoder(id_model, provider)
        images = image_to_numpy(reference)
        bar = comfy.utils.ProgressBar(len(images))
        embeddings = []
        for i, arr in enumerate(images):
            comfy.model_management.throw_exception_if_processing_interrupted()
            name = f"reference image {i}"
            rgb = to_rgb_uint8(arr, name)
            face = select_face(analyzer.detect(rgb, name=name), name=name)
            if isinstance(encoder, IRSE50Encoder):
                crop = compute_face_crop(face, 256, canonical_vertices=analyzer.canonical)
                embeddings.append(encoder.embed_crop(warp_to_crop(rgb, crop)))
            else:
                embeddings.append(encoder.embed(rgb, face.points))
            bar.update(1)
        groups = identity_groups(group_by, len(embeddings))
        before = as_identities(face_id) if face_id is not None else ()
        return (identities_value(before + tuple(average_embeddings([embeddings[i] for i in g], encoder.model_name)
                                                for g in groups)),)


class DenseFaceLoadIDEmbedding:
    """A precomputed identity embedding, chosen from files ComfyUI knows: the authors' feat_file_v2 .pth,
    or .npy / .safetensors, in models/dense_face/embeddings/ or in the input folder (upload-friendly)."""

    SEARCH_ALIASES = ["identity", "face embedding", "face id"]  # node search in ComfyUI 0.38+

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "embedding": (embedding_choices(), {"tooltip": "An identity embedding file (512 values) in "
                              "ComfyUI/models/dense_face/embeddings/, or one uploaded to the input folder "
                              "(listed as 'name [input]'). The authors' feat_file_v2/*.pth files work as they are."}),
                "id_model": ([IR_SE50] + [f"insightface/{p}" for p in insightface_packs()],
                             {"default": IR_SE50, "tooltip": "The network that produced it (the authors' "
                                                             "feat_file_v2 files are ir_se50)."}),
            },
            "optional": {
                "face_id": ("FACE_ID", {"tooltip": "Identities before this one (chain loaders for a group: "
                                                   "this file becomes the next identity)."}),
            },
        }

    RETURN_TYPES = ("FACE_ID",)
    RETURN_NAMES = ("face_id",)
    OUTPUT_TOOLTIPS = ("The identity for Dense-Face Apply PC-Adapter (appended to face_id when connected).",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Loads a saved identity embedding from ComfyUI's embedding folder or its input folder "
                   "(pickles only through torch.load(weights_only=True)).")

    @classmethod
    def IS_CHANGED(cls, embedding, id_model, face_id=None):
        path = embedding_path(embedding)
        return f"{path}:{os.path.getmtime(path)}" if path else embedding

    def load(self, embedding, id_model, face_id=None):
        path = embedding_path(embedding)
        if path is None:
            raise MissingModelError(f"embedding: '{embedding}' is not a file in ComfyUI/models/dense_face/embeddings/ "
                                    f"or in the input folder; put the file there (or upload it) and pick it again")
        before = as_identities(face_id) if face_id is not None else ()
        return (identities_value(before + (load_feature_file(path, id_model),)),)


NODE_CLASS_MAPPINGS = {"DenseFaceIDEncoder": DenseFaceIDEncoder, "DenseFaceLoadIDEmbedding": DenseFaceLoadIDEmbedding}
NODE_DISPLAY_NAME_MAPPINGS = {"DenseFaceIDEncoder": "Dense-Face ID Encoder",
                              "DenseFaceLoadIDEmbedding": "Dense-Face Load ID Embedding"}
