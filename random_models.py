"""Stable Diffusion models with random weights, built inside a ComfyUI (import after ComfyUI).

Real SD weights are not always at hand (CI, a laptop without downloads), yet the whole
graph must run and its speed must be measurable. These builders make ComfyUI's own model
classes at the real SD1.5 geometry (or a tiny one for tests) and fill them with
fan-in-scaled random values. Nothing here produces a meaningful image.
"""
from __future__ import annotations

import torch

SD15_CONTEXT = 768


def unet_config(model_channels: int = 320, channel_mult=(1, 2, 4, 4), context_dim: int = SD15_CONTEXT,
                num_heads: int = 8) -> dict:
    """An SD1.5-layout UNet config as ComfyUI's UNetModel takes it (attention at the top three levels)."""
    levels, nrb = len(channel_mult), 2
    attn = [1] * (levels - 1) + [0]
    return {
        "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": model_channels,
        "num_res_blocks": [nrb] * levels, "channel_mult": list(channel_mult),
        "transformer_depth": [d for d in attn for _ in range(nrb)],
        # ComfyUI pops this list from the end while building output blocks 0, 1, 2, ...
        "transformer_depth_output": [d for d in attn for _ in range(nrb + 1)],
        "transformer_depth_middle": 1, "context_dim": context_dim, "num_heads": num_heads,
        "num_head_channels": -1, "use_linear_in_transformer": False, "adm_in_channels": None,
        "use_temporal_attention": False, "use_temporal_resblock": False, "use_checkpoint": False,
        "use_spatial_transformer": True, "legacy": False, "dtype": torch.float32,
    }


def fill_random_(module: torch.nn.Module, seed: int, scale: float = 1.0) -> None:
    """comfy.ops layers are created uninitialised: fan-in-scaled normals for weights, near-1 norms."""
    torch.set_flush_denormal(True)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * (scale / p[0].numel() ** 0.5))
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def build_unet(config: dict | None = None, seed: int = 0):
    """MODEL (ModelPatcher) of ComfyUI's SD15 class with a random UNet of ``config``'s geometry."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    with torch.no_grad():
        model = comfy.supported_models.SD15(config or unet_config()).get_model({}, "")
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

    cfg = dict(config or unet_config())
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
