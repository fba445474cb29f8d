"""Training configuration: one YAML file, defaults for every key, command-line overrides.

A run is reproducible from ``<output_dir>/config.yaml`` alone (the resolved config the
trainer writes), so every knob lives in this schema rather than in code. Strings may use
``{repo}`` (the folder holding this package), ``{config_dir}`` and ``{output_dir}``, which
keeps shipped configs relocatable.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from ..dense_face_core.dense_head import DEFAULT_OUTPUT_SIZE, DEFAULT_WIDTH
from ..dense_face_core.errors import DenseFaceInputError
from ..dense_face_core.model_folders import PACKAGE_DIR

REPO_DIR = PACKAGE_DIR

DEFAULTS: dict[str, Any] = {
    "output_dir": None,
    "base": {
        "kind": "diffusers",            # diffusers | single_file | tiny_random
        "path": None,                   # diffusers folder or .safetensors/.ckpt file
        "family": None,                 # sd15 | sd21 | a registered name | a geometry dict (tiny_random)
        "tokenizer": None,              # folder with vocab.json + merges.txt (default: the base's own)
        "prediction_type": None,        # epsilon | v_prediction (single_file; diffusers reads its scheduler)
        "sample_size": 64,              # UNet sample_size recorded in the diffusers config
        "seed": 0,                      # tiny_random weights
        "unet": {},                     # tiny_random: UNet2DConditionModel fields over the family's config
        "text_encoder": {},             # tiny_random: CLIPTextConfig fields
        "vae": {},                      # tiny_random / single_file: AutoencoderKL fields
    },
    "model": {
        "delta": 0.01,                  # PC-adapter scale (the authors' --delta)
        "id_delta": 0.01,               # identity-token offset scale (the authors' reference_delta)
        "id_dim": 512,
        "adapter_init": "copy",         # copy (authors: per_* = copies of to_*) | zero
        "pose_init": "unet",            # unet (ControlNet practice: copy the UNet encoder) | random
        "train_input_block_adapters": True,  # the authors' code leaves them untrained (no_grad)
        "init_from": None,              # a Dense-Face .safetensors to start from (e.g. a converted official ckpt)
        "init_from_official": None,     # or the authors' *init.ckpt / epoch*.ckpt itself (read with weights_only)
        "dense_head": {"enabled": True, "width": DEFAULT_WIDTH, "output_size": DEFAULT_OUTPUT_SIZE},
        "placeholder_token": "*",
        "init_word": "person",
    },
    "data": {
        "root": None,                   # a build-dataset output folder
        "build": None,                  # {inputs: [...], insightface_model: PATH|random, landmarker: PATH, ...}
        "synthetic": 0,                 # > 0: that many random samples instead of a dataset (benchmarks)
        "image_size": 256,
        "target_size": 64,
        "heatmap_sigma": 1.0,
        "min_images_per_identity": 1,
        "num_workers": 2,
        "stream": "auto",               # stream the tars (DenseFaceStream): true | false | auto (> 50000 samples)
        "shuffle_buffer": 1000,         # pairs mixed by the streaming reader (per DataLoader worker)
        "require_embeddings": True,
        "id_embedding_model": None,     # override the manifest's name (recorded in the weight file)
        "latents": "sample",            # sample (authors: posterior sample) | mean
    },
    "train": {
        "seed": 0,
        "max_steps": 1000,              # optimizer steps
        "batch_size": 1,                # per process and micro-step
        "gradient_accumulation_steps": 1,
        "lr": 1e-5,
        "scale_lr": False,              # lr *= batch_size * accumulation * processes (the authors' rule)
        "lr_scheduler": "constant",     # constant | linear | cosine (after warmup)
        "lr_warmup_steps": 0,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_weight_decay": 1e-2,
        "adam_epsilon": 1e-8,
        "max_grad_norm": 1.0,
        "mixed_precision": "no",        # no | fp16 | bf16
        "gradient_checkpointing": False,
        "allow_tf32": True,
        "caption_dropout": 0.1,         # prompt -> "" (no identity token); f still reaches the adapter
        "identity_dropout": 0.05,       # no identity at all: no token offset, zero adapter feature
        "timestep_range": [0, 1000],
        "checkpoint_every": 500,
        "checkpoints_total_limit": 3,
        "resume": "auto",               # auto | none | a checkpoint folder
        "log_every": 1,
        "progress": True,
        "report_to": [],                # e.g. [tensorboard] (when installed)
        "ddp_find_unused_parameters": False,
        "sync_batchnorm": False,
    },
    "loss": {
        "lambda_landmark": 1.0,         # paper Eq. 8 weights
        "lambda_parsing": 0.1,
        "lambda_depth": 1.0,
    },
    "export": {
        "at_end": True,
        "out": "{output_dir}/dense_face.safetensors",
        "dtype": "float16",             # float16 | bfloat16 | float32
        "include_dense_head": True,
    },
}

# Command-line shortcuts: --lr 1e-5 == --set train.lr=1e-5
SHORTCUTS = {
    "lr": "train.lr",
    "max_steps": "train.max_steps",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "mixed_precision": "train.mixed_precision",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "checkpoint_every": "train.checkpoint_every",
    "resume": "train.resume",
    "data_root": "data.root",
    "base_path": "base.path",
    "init_from_official": "model.init_from_official",
}


def deep_merge(base: dict, new: dict, where: str = "") -> dict:
    """``new`` onto ``base``; unknown keys are refused so typos never pass silently."""
    out = copy.deepcopy(base)
    for k, v in (new or {}).items():
        path = f"{where}{k}"
        if k not in out:
            raise DenseFaceInputError(f"unknown config key {path!r}")
        if isinstance(out[k], dict) and isinstance(v, dict) and out[k] and not _free_form(path):
            out[k] = deep_merge(out[k], v, path + ".")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _free_form(path: str) -> bool:
    """Sections whose keys belong to another library (CLIPTextConfig, AutoencoderKL, the builder)."""
    return path in ("base.unet", "base.text_encoder", "base.vae", "base.family", "data.build")


def set_key(cfg: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = cfg
    for i, k in enumerate(keys[:-1]):
        if not isinstance(node.get(k), dict):
            if _free_form(".".join(keys[: i + 1])) and node.get(k) is None:
                node[k] = {}
            else:
                raise DenseFaceInputError(f"unknown config key {dotted!r}")
        node = node[k]
    last = keys[-1]
    if last not in node and not _free_form(".".join(keys[:-1])):
        raise DenseFaceInputError(f"unknown config key {dotted!r}")
    node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value``; the value is read as YAML (numbers, booleans, lists, null)."""
    if "=" not in text:
        raise DenseFaceInputError(f"--set expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str):  # YAML 1.1 reads "3e-4" as text; a number is meant
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key.strip(), value


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None,
                output_dir: str | None = None) -> dict:
    """Defaults <- YAML file <- ``--set`` overrides <- ``--output-dir``; then placeholders."""
    cfg = copy.deepcopy(DEFAULTS)
    config_dir = REPO_DIR
    if path is not None:
        p = Path(path)
        shipped = REPO_DIR / "train" / "configs" / f"{p.stem}.yaml"
        if not p.is_file() and p.parent == Path(".") and shipped.is_file():
            p = shipped  # a shipped config by name: --config tiny_cpu
        if not p.is_file():
            raise DenseFaceInputError(f"config file {str(p)!r} does not exist (shipped configs: "
                                      f"{', '.join(sorted(c.stem for c in (REPO_DIR / 'train' / 'configs').glob('*.yaml')))})")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise DenseFaceInputError(f"{p}: a config file must be a YAML mapping")
        loaded.pop("_resolved", None)
        cfg = deep_merge(cfg, loaded)
        config_dir = p.resolve().parent
    for item in overrides or []:
        key, value = parse_override(item)
        set_key(cfg, key, value)
    if output_dir is not None:
        cfg["output_dir"] = output_dir
    if not cfg.get("output_dir"):
        raise DenseFaceInputError("no output directory: pass --output-dir DIR or set output_dir in the config")
    subst = {"repo": str(REPO_DIR), "config_dir": str(config_dir)}
    subst["output_dir"] = str(Path(_substitute(cfg["output_dir"], subst)).expanduser().resolve())
    cfg = _substitute(cfg, subst)
    cfg["output_dir"] = subst["output_dir"]  # absolute: launchers may change the working directory
    validate(cfg)
    return cfg


def _substitute(node: Any, subst: dict[str, str]) -> Any:
    if isinstance(node, str):
        for k, v in subst.items():
            node = node.replace("{" + k + "}", v)
        return node
    if isinstance(node, dict):
        return {k: _substitute(v, subst) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, subst) for v in node]
    return node


def validate(cfg: dict) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise DenseFaceInputError(f"config: {msg}")

    b, m, d, t = cfg["base"], cfg["model"], cfg["data"], cfg["train"]
    need(b["kind"] in ("diffusers", "single_file", "tiny_random"),
         f"base.kind must be diffusers, single_file or tiny_random, got {b['kind']!r}")
    need(b["kind"] == "tiny_random" or b["path"], f"base.path is required for base.kind={b['kind']}")
    need(m["adapter_init"] in ("copy", "zero"), "model.adapter_init must be copy or zero")
    need(not (m.get("init_from") and m.get("init_from_official")),
         "model.init_from and model.init_from_official exclude each other (give one starting point)")
    need(m["pose_init"] in ("unet", "random"), "model.pose_init must be unet or random")
    need(d["root"] or d["build"] or int(d["synthetic"] or 0) > 0,
         "set data.root (a build-dataset folder), data.build or data.synthetic")
    need(d["latents"] in ("sample", "mean"), "data.latents must be sample or mean")
    need(d.get("stream", "auto") in ("auto", True, False), "data.stream must be true, false or auto")
    need(int(d.get("shuffle_buffer", 1000)) >= 1, "data.shuffle_buffer must be >= 1")
    need(t["mixed_precision"] in ("no", "fp16", "bf16"), "train.mixed_precision must be no, fp16 or bf16")
    need(t["lr_scheduler"] in ("constant", "linear", "cosine"), "train.lr_scheduler: constant, linear or cosine")
    for k in ("max_steps", "batch_size", "gradient_accumulation_steps", "checkpoint_every", "log_every"):
        need(int(t[k]) >= 1, f"train.{k} must be >= 1")
    for k in ("caption_dropout", "identity_dropout"):
        need(0.0 <= float(t[k]) <= 1.0, f"train.{k} must be in [0, 1]")
    lo, hi = t["timestep_range"]
    need(0 <= int(lo) < int(hi), "train.timestep_range must be [low, high) with 0 <= low < high")
    head = m["dense_head"]
    if head["enabled"]:
        need(int(head["output_size"]) == int(d["target_size"]),
             f"model.dense_head.output_size ({head['output_size']}) must equal data.target_size "
             f"({d['target_size']}): the head predicts the dataset's target maps")
    need(cfg["export"]["dtype"] in ("float16", "bfloat16", "float32"), "export.dtype: float16, bfloat16 or float32")


def dense_losses_enabled(cfg: dict) -> bool:
    lo = cfg["loss"]
    return bool(cfg["model"]["dense_head"]["enabled"]) and any(
        float(lo[k]) > 0 for k in ("lambda_landmark", "lambda_parsing", "lambda_depth"))


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
