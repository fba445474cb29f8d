"""Test-only ComfyUI custom node pack: lets a real ComfyUI *server* load tiny test models.

ComfyUI's checkpoint loader detects a model by its exact geometry, so a tiny SD1.5-layout
checkpoint is registered here as a supported model (first in the list), with the tiny CLIP
config from $DENSE_FACE_TEST_TINY_CLIP; the Dense-Face family "tiny" is registered in the
Dense-Face pack (dense_face) loaded by the same server. Never shipped: tests link it into custom_nodes.
"""
import os

import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base

NODE_CLASS_MAPPINGS = {}


class TinySD15(comfy.supported_models.SD15):
    unet_config = {"context_dim": 32, "model_channels": 32, "use_linear_in_transformer": False,
                   "adm_in_channels": None, "use_temporal_attention": False}
    unet_extra_config = {"num_heads": 4, "num_head_channels": -1}

    def clip_target(self, state_dict={}):
        target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
        target.params = {"textmodel_json_config": os.environ["DENSE_FACE_TEST_TINY_CLIP"],
                         "clip_model": comfy.sd1_clip.SDClipModel}
        return target


comfy.supported_models.models.insert(0, TinySD15)

# The Dense-Face pack (loaded before this one) is one module object, dense_face, in the server too.
from dense_face.dense_face_core.random_weights import tiny_family  # noqa: E402

tiny_family()
