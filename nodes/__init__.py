"""ComfyUI node classes (thin adapters over dense_face_core), collected from one file per concern."""
from . import annotation_nodes, blend_sampler, face_nodes, id_nodes, model_nodes, pose_nodes
from .comfy_side.folders import register_model_folders

register_model_folders()

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _module in (pose_nodes, face_nodes, id_nodes, model_nodes, annotation_nodes, blend_sampler):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
