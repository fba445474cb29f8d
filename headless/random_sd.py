"""ComfyUI's own Stable Diffusion classes with random weights (import after ComfyUI).

The geometry, configs and fill rule come from ``dense_face_core.random_weights``; this
module only instantiates ComfyUI's classes (UNet, CLIP, VAE, stock ControlNet) with them,
at the real SD1.5 geometry or a tiny one. Nothing here produces a meaningful image.
"""
from __future__ import annotations

import torch

from ..dense_face_core.random_weights import fill_random_, ldm_unet_config


def build_unet(config: dict | None = None, seed: int = 0):
    """MODEL (ModelPatcher) of ComfyUI's SD15 class with a random UNet of ``config``'s geometry."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    with torch.no_grad():
        model = comfy.supported_models.SD15(config or ldm_unet_config("sd15")).get_model({}, "")
        fill_random_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=torch.device("cpu"))


def build_clip(seed: int = 0, textmodel_json_config: str | None = None):
    """CLIP with the real SD1 tokenizer and a random text model (CLIP-L geometry by default)."""
    import inspect

    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base

    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    target.params = {"clip_model": comfy.sd1_clip.SDClipModel}
    if textmodel_json_config:
        target.params["textmodel_json_config"] = textmodel_json_config
    kwargs = {}
    if "model_options" in inspect.signature(comfy.sd.CLIP.__init__).parameters:
        kwargs["model_options"] = {"dtype": torch.float32}
    with torch.no_grad():
        clip = comfy.sd.CLIP(target, **kwargs)
        fill_random_(clip.cond_stage_model, seed)
    return clip


VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def build_vae(seed: int = 0, ch: int = 128):
    """The SD VAE (AutoencoderKL f=8) with random weights; ``ch`` shrinks it for tests."""
    import comfy.sd

    ddconfig = dict(VAE_DDCONFIG, ch=ch)
    with torch.no_grad():
        vae = comfy.sd.VAE(sd={}, config={"params": {"ddconfig": ddconfig, "embed_dim": 4}})
        fill_random_(vae.first_stage_model, seed, scale=0.5)
    return vae


def build_stock_controlnet(config: dict | None = None, seed: int = 0, attention: bool = True):
    """ComfyUI's own cldm ControlNet at the UNet's geometry, random weights (the stock ControlNet path)."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.ops

    cfg = dict(config or ldm_unet_config("sd15"))
    for key in ("out_channels", "transformer_depth_output", "use_temporal_attention", "use_temporal_resblock",
                "legacy"):
        cfg.pop(key, None)
    cfg["hint_channels"] = 3
    if not attention:
        cfg.update(transformer_depth=[0] * len(cfg["transformer_depth"]), transformer_depth_middle=0)
    with torch.no_grad():
        net = comfy.cldm.cldm.ControlNet(**cfg, device="cpu", operations=comfy.ops.disable_weight_init)
        fill_random_(net, seed)
    return comfy.controlnet.ControlNet(net)


def encode(clip, text: str):
    """CONDITIONING for ``text``, as CLIPTextEncode makes it."""
    tokens = clip.tokenize(text)
    with torch.no_grad():
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]
