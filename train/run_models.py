"""The models of a run: the frozen base in the compute dtype on the device, the trainable
Dense-Face net attached to it, and the optimizer and LR schedule over the trainable part."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import config as C

WEIGHT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class RunModels:
    base: object
    net: torch.nn.Module
    params: list
    weight_dtype: torch.dtype
    dense_on: bool


def setup_models(cfg: dict, device, world: int) -> RunModels:
    """Base and net built from ``cfg`` (the net's random init seeded by ``train.seed``)."""
    from .base_models import load_base
    from .model import build_net

    t = cfg["train"]
    base = load_base(cfg["base"])
    torch.manual_seed(int(t["seed"]))
    net = build_net(cfg, base)
    dense_on = C.dense_losses_enabled(cfg)
    net.attach(base)
    params = net.configure_trainable(input_block_adapters=bool(cfg["model"]["train_input_block_adapters"]),
                                     dense_head=dense_on)
    weight_dtype = WEIGHT_DTYPES.get(t["mixed_precision"], torch.float32)
    for m in base.modules().values():  # frozen base in the compute dtype (halves its memory under fp16/bf16)
        m.to(device) if weight_dtype == torch.float32 else m.to(device, dtype=weight_dtype)
    net.to(device)
    if t["gradient_checkpointing"]:
        _gradient_checkpointing(base, net)
    if t["sync_batchnorm"] and world > 1:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return RunModels(base, net, params, weight_dtype, dense_on)


def _gradient_checkpointing(base, net) -> None:
    base.unet.enable_gradient_checkpointing()
    enc = base.text_encoder
    (getattr(enc, "activation_checkpointing_enable", None) or enc.gradient_checkpointing_enable)()
    base.text_encoder.train()  # transformers checkpoints only in training mode (CLIP has no dropout)
    net.checkpoint_pose_branch = True


def make_optimizer(cfg: dict, params, world: int):
    """(AdamW, LR schedule, lr); ``train.scale_lr`` multiplies lr by the images per step of all ranks."""
    from diffusers.optimization import get_scheduler

    t = cfg["train"]
    lr = float(t["lr"]) * (samples_per_step(t) * world if t["scale_lr"] else 1)
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(float(t["adam_beta1"]), float(t["adam_beta2"])),
                                  weight_decay=float(t["adam_weight_decay"]), eps=float(t["adam_epsilon"]))
    lr_scheduler = get_scheduler(t["lr_scheduler"], optimizer=optimizer, num_warmup_steps=int(t["lr_warmup_steps"]),
                                 num_training_steps=int(t["max_steps"]))
    return optimizer, lr_scheduler, lr


def samples_per_step(t: dict) -> int:
    """Samples one rank consumes per optimizer step: batch size x gradient accumulation."""
    return int(t["batch_size"]) * int(t["gradient_accumulation_steps"])
