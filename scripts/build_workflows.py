"""Write the shipped workflows: API format (``workflows/NAME_api.json``) and the UI twin (``NAME.json``).

    .venv/bin/python scripts/build_workflows.py

The graphs are written here once, in the API format, with a title on every node the
headless runner (``dense-face run``) overrides; the UI twins are derived from them with the
node definitions of a real ComfyUI (``dense_face.headless.workflow_format.api_to_ui``).
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "workflows"

from dense_face.dense_face_core.official_checkpoint import ID_NETWORK_SUFFIX  # noqa: E402
from dense_face.dense_face_core.official_install import FACE_BASE, FACE_WEIGHTS, TEXT_EDITING  # noqa: E402

# Default model names: the authors' release as `dense-face install-official` installs it (the only real
# Dense-Face weights today); the runner and the UI can substitute others.
CHECKPOINT = FACE_BASE
TEXT_CHECKPOINT = TEXT_EDITING
DENSE_FACE = FACE_WEIGHTS
ID_MODEL = "ir_se50:" + Path(FACE_WEIGHTS).stem + ID_NETWORK_SUFFIX
NO_HEAD_NOTE = "blank pictures with a note"  # the authors' weights have no dense head: the preview says so
FACE_PROMPT = "A close-up photo of * ."
SCENE_PROMPT = "a detailed, realistic photo of a person wearing a hat on a beach, upper body"
NEGATIVE = "cartoon, anime, painting, drawing, illustration, blurry, low quality, deformed"


class Graph:
    """A tiny builder for API-format prompts: node ids are assigned in insertion order."""

    def __init__(self):
        self.nodes: dict[str, dict] = {}

    def add(self, class_type: str, title: str, **inputs) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}
        return node_id

    @staticmethod
    def out(node_id: str, index: int = 0) -> list:
        return [node_id, index]


o = Graph.out


def _face_mode(g: Graph, ckpt: str, reference_title="Reference photo", face_batch_pose=None):
    """Loader, identity and the PC-adapter patch; returns (model, positive, negative) outputs' node id."""
    ref = g.add("LoadImage", reference_title, image="reference.png")
    face_id = g.add("DenseFaceIDEncoder", "Identity (reference photo)", reference=o(ref), id_model=ID_MODEL, provider="CPU",
                    landmarker="auto")
    weights = g.add("DenseFaceLoader", "Dense-Face weights", weights=DENSE_FACE)
    face_neg = g.add("CLIPTextEncode", "Face negative prompt", text="", clip=o(ckpt, 1))
    return ref, face_id, weights, face_neg


def personalize(target: bool) -> dict:
    """Two-mode personalisation (target=False) or face swap (target=True)."""
    g = Graph()
    ckpt = g.add("CheckpointLoaderSimple", "Base model (SD1.5)", ckpt_name=CHECKPOINT)
    if target:
        base = g.add("LoadImage", "Target photo", image="target.png")
        base_image = o(base)
    else:
        text = g.add("CheckpointLoaderSimple", "Text-editing model", ckpt_name=TEXT_CHECKPOINT)
        scene = g.add("CLIPTextEncode", "Scene prompt", text=SCENE_PROMPT, clip=o(text, 1))
        negative = g.add("CLIPTextEncode", "Negative prompt", text=NEGATIVE, clip=o(text, 1))
        empty = g.add("EmptyLatentImage", "Scene size", width=512, height=512, batch_size=1)
        stage1 = g.add("KSampler", "Text-editing mode (plain model)", model=o(text), positive=o(scene),
                       negative=o(negative), latent_image=o(empty), seed=1, steps=30, cfg=7.5,
                       sampler_name="dpmpp_2m", scheduler="karras", denoise=1.0)
        decoded = g.add("VAEDecode", "Base image", samples=o(stage1), vae=o(text, 2))
        g.add("SaveImage", "Save base image", images=o(decoded), filename_prefix="dense_face_base")
        base_image = o(decoded)
    crop = g.add("DenseFaceCropMask", "Face crop + mask", image=base_image, crop_size=256, padding=0.0,
                 mask_grow=16.0, mask_feather=8.0, face="largest", face_index=0, on_no_face="error",
                 landmarker="auto")
    pose = g.add("DenseFacePoseEuler", "Pose (detected; override here)", yaw=o(crop, 3), pitch=o(crop, 4),
                 roll=o(crop, 5), size=256)
    _ref, face_id, weights, face_neg = _face_mode(g, ckpt)
    patched = g.add("DenseFaceApplyPCAdapter", "Face-generation mode", model=o(ckpt), clip=o(ckpt, 1),
                    dense_face=o(weights), face_id=o(face_id), pose_image=o(pose), negative=o(face_neg),
                    prompt=FACE_PROMPT, adapter_strength=1.0, identity_strength=1.0, pose_strength=1.0,
                    start_percent=0.0, end_percent=1.0)
    encoded = g.add("VAEEncode", "Encode face crop", pixels=o(crop, 0), vae=o(ckpt, 2))
    blend = g.add("DenseFaceLatentBlendSampler", "Latent blending (face only)", model=o(patched),
                  positive=o(patched, 1), negative=o(patched, 2), latent_image=o(encoded), mask=o(crop, 1),
                  seed=2, steps=50, cfg=4.0, sampler_name="ddpm", scheduler="ddim_uniform", denoise=1.0,
                  mask_threshold=0.75, soft_mask=False, background_noise="fresh", blend_end=1.0,
                  final_composite=False)
    face = g.add("VAEDecode", "New face", samples=o(blend), vae=o(ckpt, 2))
    pasted = g.add("DenseFacePasteBack", "Paste back", base=base_image, face=o(face), face_crop=o(crop, 2),
                   feather=-1.0, mask=o(crop, 1))
    g.add("SaveImage", "Save result", images=o(pasted),
          filename_prefix="dense_face_face_swap" if target else "dense_face_personalize")
    g.add("SaveImage", "Save new face", images=o(face), filename_prefix="dense_face_face")
    _annotations(g, patched, weights, blend, face)
    return g.nodes


def _annotations(g: Graph, patched: str, weights: str, latent: str, face: str) -> None:
    ann = g.add("DenseFaceAnnotationPredict", "Dense annotations", model=o(patched), dense_face=o(weights),
                latent=o(latent), positive=o(patched, 1), timestep=50, seed=0, image=o(face),
                without_head=NO_HEAD_NOTE)
    g.add("PreviewImage", "Preview depth", images=o(ann, 0))
    g.add("PreviewImage", "Preview parsing", images=o(ann, 1))
    g.add("PreviewImage", "Preview landmarks", images=o(ann, 3))


def pose_control() -> dict:
    """Face-generation mode alone, one face per pose of a grid (the paper's Fig. 2b)."""
    g = Graph()
    ckpt = g.add("CheckpointLoaderSimple", "Base model (SD1.5)", ckpt_name=CHECKPOINT)
    grid = g.add("DenseFacePoseGrid", "Pose grid", yaw_from=-40.0, yaw_to=40.0, yaw_steps=5, pitch_from=0.0,
                 pitch_to=0.0, pitch_steps=1, roll=0.0, size=256)
    _ref, face_id, weights, face_neg = _face_mode(g, ckpt)
    patched = g.add("DenseFaceApplyPCAdapter", "Face-generation mode", model=o(ckpt), clip=o(ckpt, 1),
                    dense_face=o(weights), face_id=o(face_id), pose_image=o(grid), negative=o(face_neg),
                    prompt=FACE_PROMPT, adapter_strength=1.0, identity_strength=1.0, pose_strength=1.0,
                    start_percent=0.0, end_percent=1.0)
    empty = g.add("EmptyLatentImage", "Face size (one latent per pose)", width=256, height=256, batch_size=o(grid, 1))
    sampled = g.add("KSampler", "Generate faces", model=o(patched), positive=o(patched, 1), negative=o(patched, 2),
                    latent_image=o(empty), seed=3, steps=50, cfg=4.0, sampler_name="ddpm", scheduler="ddim_uniform",
                    denoise=1.0)
    faces = g.add("VAEDecode", "Faces", samples=o(sampled), vae=o(ckpt, 2))
    g.add("SaveImage", "Save faces", images=o(faces), filename_prefix="dense_face_pose_control")
    g.add("PreviewImage", "Preview poses", images=o(grid))
    return g.nodes


def annotations() -> dict:
    """Generate one face in face-generation mode and predict its dense annotations."""
    g = Graph()
    ckpt = g.add("CheckpointLoaderSimple", "Base model (SD1.5)", ckpt_name=CHECKPOINT)
    pose = g.add("DenseFacePoseEuler", "Pose", yaw=20.0, pitch=0.0, roll=0.0, size=256)
    _ref, face_id, weights, face_neg = _face_mode(g, ckpt)
    patched = g.add("DenseFaceApplyPCAdapter", "Face-generation mode", model=o(ckpt), clip=o(ckpt, 1),
                    dense_face=o(weights), face_id=o(face_id), pose_image=o(pose), negative=o(face_neg),
                    prompt=FACE_PROMPT, adapter_strength=1.0, identity_strength=1.0, pose_strength=1.0,
                    start_percent=0.0, end_percent=1.0)
    empty = g.add("EmptyLatentImage", "Face size", width=256, height=256, batch_size=1)
    sampled = g.add("KSampler", "Generate face", model=o(patched), positive=o(patched, 1), negative=o(patched, 2),
                    latent_image=o(empty), seed=4, steps=50, cfg=4.0, sampler_name="ddpm", scheduler="ddim_uniform",
                    denoise=1.0)
    face = g.add("VAEDecode", "Face", samples=o(sampled), vae=o(ckpt, 2))
    g.add("SaveImage", "Save face", images=o(face), filename_prefix="dense_face_annotated_face")
    ann = g.add("DenseFaceAnnotationPredict", "Dense annotations", model=o(patched), dense_face=o(weights),
                latent=o(sampled), positive=o(patched, 1), timestep=50, seed=0, image=o(face), without_head="error")
    for index, name in ((0, "depth"), (1, "parsing"), (3, "landmarks")):
        g.add("SaveImage", f"Save {name}", images=o(ann, index), filename_prefix=f"dense_face_{name}")
    return g.nodes


def group() -> dict:
    """Every face of a group photo re-painted with its own identity and its own detected pose, in one
    sampling call (face i gets reference i; the last reference goes to the faces beyond)."""
    g = Graph()
    ckpt = g.add("CheckpointLoaderSimple", "Base model (SD1.5)", ckpt_name=CHECKPOINT)
    photo = g.add("LoadImage", "Target photo", image="group.png")
    crop = g.add("DenseFaceCropMask", "Every face: crops + masks", image=o(photo), crop_size=256, padding=0.0,
                 mask_grow=16.0, mask_feather=8.0, face="all", face_index=0, on_no_face="error",
                 landmarker="auto", face_list="")
    g.add("PreviewImage", "Face numbers", images=o(crop, 6))
    poses = g.add("DenseFacePoseFromFaces", "Poses (detected, per face; override here)", face_crop=o(crop, 2),
                  overrides="", size=256)
    face_id = None
    for k in (1, 2):
        suffix = "" if k == 1 else f" {k}"
        ref = g.add("LoadImage", f"Reference photo{suffix}", image=f"reference{suffix.strip()}.png")
        chain = {} if face_id is None else {"face_id": o(face_id)}
        face_id = g.add("DenseFaceIDEncoder", f"Identity (reference photo{suffix})", reference=o(ref),
                        id_model=ID_MODEL, provider="CPU", landmarker="auto", group_by="each", **chain)
    weights = g.add("DenseFaceLoader", "Dense-Face weights", weights=DENSE_FACE)
    face_neg = g.add("CLIPTextEncode", "Face negative prompt", text="", clip=o(ckpt, 1))
    patched = g.add("DenseFaceApplyPCAdapter", "Face-generation mode (identity i -> face i)", model=o(ckpt),
                    clip=o(ckpt, 1), dense_face=o(weights), face_id=o(face_id), pose_image=o(poses),
                    negative=o(face_neg), prompt=FACE_PROMPT, adapter_strength=1.0, identity_strength=1.0,
                    pose_strength=1.0, start_percent=0.0, end_percent=1.0, face_to_identity="")
    encoded = g.add("VAEEncode", "Encode face crops", pixels=o(crop, 0), vae=o(ckpt, 2))
    blend = g.add("DenseFaceLatentBlendSampler", "Latent blending (every face, one batch)", model=o(patched),
                  positive=o(patched, 1), negative=o(patched, 2), latent_image=o(encoded), mask=o(crop, 1),
                  seed=5, steps=50, cfg=4.0, sampler_name="ddpm", scheduler="ddim_uniform", denoise=1.0,
                  mask_threshold=0.75, soft_mask=False, background_noise="fresh", blend_end=1.0,
                  final_composite=False, batch_seeds="per face (seed + row)", max_batch=8)
    faces = g.add("VAEDecode", "New faces", samples=o(blend), vae=o(ckpt, 2))
    pasted = g.add("DenseFacePasteBack", "Paste every face back", base=o(photo), face=o(faces),
                   face_crop=o(crop, 2), feather=-1.0, mask=o(crop, 1))
    g.add("SaveImage", "Save result", images=o(pasted), filename_prefix="dense_face_group")
    g.add("SaveImage", "Save new faces", images=o(faces), filename_prefix="dense_face_group_faces")
    return g.nodes


WORKFLOWS = {
    "dense_face_personalize": lambda: personalize(target=False),
    "dense_face_face_swap": lambda: personalize(target=True),
    "dense_face_pose_control": pose_control,
    "dense_face_annotations": annotations,
    "dense_face_group": group,
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    api = {name: build() for name, build in WORKFLOWS.items()}
    for name, graph in api.items():
        (OUT / f"{name}_api.json").write_text(json.dumps(graph, indent=1) + "\n")
    try:
        from dense_face.headless.comfy_host import InProcessComfy
        from dense_face.headless.workflow_format import api_to_ui, object_info_from_classes
    except ImportError as exc:  # the UI converter is not there yet
        print(f"API workflows written; UI twins skipped ({exc})")
        return
    host = InProcessComfy()
    info = object_info_from_classes(host.nodes.NODE_CLASS_MAPPINGS)
    for name, graph in api.items():
        (OUT / f"{name}.json").write_text(json.dumps(api_to_ui(graph, info), indent=1) + "\n")
    print(f"wrote {len(api)} workflows (API + UI) to {OUT}")


if __name__ == "__main__":
    main()
